"""Training a referral net from image-level labels (seed Sec. 5.1.3) with the sparsity-enhanced
hue-constrained criterion (eq. 6), validation at the image and lesion levels (Sec. 5.5) and the
checkpoint ensemble (Sec. 5.6).

Loss: MSE between the net's score f(m∘x) and the referable label (0/1) + nu·||dMSE/dm||_1 (the
double-backprop penalty of :func:`proxscope.explain.sparsity_penalty`), L2 5e-4 on conv and dense
weights (not biases), Adam, learning rate divided by 10 when the validation AUC stops rising.
Batches: random photographs with the seed's augmentation (rotation, translation, scale, flip,
contrast). Every validation computes the image-level AUC and, where lesion masks are given, the
per-lesion-type FROC of hue-constrained heatmaps; the net that is best for each criterion is
kept in ``OUT.ensemble/`` (``auc``, ``mean_froc``, one per lesion type): the seed's
N_RDR, N_AVG, N_HE, N_SE, N_SRD, N_H. ``OUT`` itself is the best-AUC net.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ...checkpoint import read_checkpoint, save_checkpoint
from ...errors import UserError
from ...explain import masked_input, sparsity_penalty
from .data import FundusSet
from .model import build, finite_or_none, lesion_scores, score_and_heatmaps

WEIGHT_DECAY = 5e-4  # seed Sec. 5.1.3


@dataclass
class RetinaTrainOptions:
    arch: str = "netb"
    size: int = 256
    nu: float = 1e-3
    steps: int = 3000
    lr: float = 1e-3
    batch_size: int = 8
    val_every: int = 100
    patience: int = 5
    seed: int = 0
    device: str | None = None
    quiet: bool = False


def loss_fn(nu: float):
    """``loss(model, (x, y))``: MSE of f(m∘x) against y, plus the eq. (6) penalty when nu > 0."""

    def loss(model, batch):
        x, y = batch
        m, mx = masked_input(x)
        mse = F.mse_loss(model(mx), y)
        return mse + sparsity_penalty(mse, m, nu) if nu > 0 else mse

    return loss


def batch_sampler(data: FundusSet, batch_size: int):
    """``sample(rng) -> (x (B, 3, S, S), y (B,))``: random photographs, augmented."""
    from ...data.transforms import random_fundus_augment

    shift = 10.0 * data.images.shape[-1] / 512  # seed: +-10 px at a 512 px FOV width

    def sample(rng: np.random.Generator):
        index = rng.integers(len(data.labels), size=batch_size)
        x, _ = random_fundus_augment(torch.from_numpy(data.images[index]), rng, max_shift=shift)
        return x, torch.from_numpy(data.labels[index])

    return sample


def validation_scores(model, val: FundusSet, method: str = "hue") -> dict[str, float]:
    """Image-level AUC of the referable probability and, with lesion masks, the FROC area
    (0-10 false positives per image, / 10) of the ``method`` heatmaps per lesion type + mean."""
    from ...metrics.detection import roc_auc

    scores, maps = score_and_heatmaps(model, val.images, method if val.masks is not None else None,
                                      fov=val.fov)
    result = {"auc": finite_or_none(roc_auc(val.labels, scores))}
    if val.masks is not None:
        result |= lesion_scores(maps, val.masks)
    return result


class EnsembleKeeper:
    """Keeps, in folder ``root``, the net that is best so far for each validation score
    (higher is better); the best values live in the files' metadata, so a resumed run keeps
    comparing against them."""

    def __init__(self, root: Path, extra: dict):
        self.root, self.extra = root, extra
        self.best: dict[str, float] = {}
        for path in sorted(root.glob("*.safetensors")) if root.is_dir() else []:
            self.best[path.stem] = float(read_checkpoint(path).extra.get("value", -np.inf))

    def update(self, model, scores: dict[str, float], step: int) -> None:
        for key, value in scores.items():
            if value is not None and value > self.best.get(key, -np.inf):
                self.best[key] = value
                save_checkpoint(self.root / f"{key}.safetensors", model,
                                extra=self.extra | {"value": value, "step": step, "criterion": key})


def train(data: FundusSet, val: FundusSet, out: Path, options: RetinaTrainOptions,
          resume: bool = False) -> dict:
    """Train, keep the best-AUC net at ``out`` and the ensemble members in ``out.ensemble/``;
    returns a summary (steps, last loss, best scores)."""
    from ...train.trainer import TrainConfig, Trainer

    torch.manual_seed(options.seed)
    model = build(options.arch, options.size)
    extra = {"nu": options.nu, "arch": options.arch, "size": options.size,
             "trained_on": f"{len(data.labels)} photographs, image-level referable labels"}
    if resume and out.is_file():  # a resumed run must keep the recipe its checkpoints record
        stored = read_checkpoint(out).extra
        changed = [f"{k} {stored[k]} -> {extra[k]}" for k in ("nu", "arch", "size")
                   if k in stored and stored[k] != extra[k]]
        if changed:
            raise UserError(f"--resume with other options than the run being resumed: {', '.join(changed)}")
    keeper = EnsembleKeeper(out.with_name(out.name + ".ensemble"), extra)

    def validate(m) -> float:
        scores = validation_scores(m, val)
        keeper.update(m, scores, trainer.step)  # the Trainer below, at call time
        if not options.quiet:
            from tqdm.auto import tqdm

            tqdm.write(f"step {trainer.step}: " + ", ".join(
                f"{k} {'-' if v is None else f'{v:.3f}'}" for k, v in scores.items()))
        return 1.0 - scores["auc"] if scores["auc"] is not None else 1.0

    weights = [p for n, p in model.named_parameters() if n.endswith("weight")]
    biases = [p for n, p in model.named_parameters() if not n.endswith("weight")]
    config = TrainConfig(steps=options.steps, lr=options.lr, val_every=options.val_every,
                         ckpt_every=options.val_every, seed=options.seed, device=options.device,
                         quiet=options.quiet, validation_grad=True,
                         plateau_patience=options.patience)
    trainer = Trainer(model, loss_fn(options.nu), batch_sampler(data, options.batch_size), config, out,
                      validate=validate, extra=extra,
                      param_groups=[{"params": weights, "weight_decay": WEIGHT_DECAY},
                                    {"params": biases, "weight_decay": 0.0}])
    history = trainer.fit(resume=resume)
    return {"out": str(out), "steps": trainer.step, "final_loss": history[-1]["loss"] if history else None,
            "best": keeper.best, "ensemble": str(keeper.root)}
