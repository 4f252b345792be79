"""Layer-wise training of SPoD-Net / LISTA-Net (Algorithm 1) on the core Trainer.

For m = 1..M: Opt1 trains the new layer Θ_m alone (lr η); for m >= 2, Opt2 trains all m layers
(lr 0.2·η for Θ_m, 0.02·η for the others); then Θ_m ← γ·Θ_m unless m = M. Every stage is one
:class:`~proxscope.train.Trainer` run on the first m layers. The training set is a fixed pool of
N random crops with random flips from a few observations (Sec. 5.1); the loss is the objective
itself (eq. 9, unsupervised) or the squared distance to FISTA solutions (eq. 8, supervised).

Resume: stage k writes ``OUT.stages/stage<k>.safetensors(.resume)`` through the Trainer, and
``OUT.stages/done.safetensors`` after each finished stage (after the shrink), so ``resume=True``
continues inside the interrupted stage with the same batches. The folder is removed at the end.

Seed: spodnet-lista-spod-microscopy.txt Algorithm 1, eqs. (8)-(9), Sec. 5.1.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from ...checkpoint import read_checkpoint, save_checkpoint
from ...errors import UserError
from ...models.spodnet import LISTANet, SPoDNet, SPoDNetConfig
from ...operators.spod import spod_objective
from ...train import TrainConfig, Trainer
from ...utils import resolve_device
from .data import random_crops
from .recover import solve, spod_operator

LOSSES = ("unsupervised", "supervised")
VARIANTS = {"spodnet": SPoDNet, "lista": LISTANet}


@dataclass
class LayerwiseConfig:
    """steps: optimizer steps of Opt1 and of Opt2 for each layer; lr: η of Opt1 (Adam);
    gamma: shrink factor; n_train: pool size N; batch_size; crop: crop size (px, = the model's
    tile); fista_iters: FISTA iterations per supervised target; relative_lr: see
    :func:`_param_groups`; relaxed: the loss sees x^(M) before [x]_+ (see
    :func:`training_loss`; False: the loss of the post-thresholded output, which gave a 0.5 %
    lower test objective for the bundled model but lets LST stall like NST)."""

    steps: int = 100
    lr: float = 0.05
    gamma: float = 0.3
    n_train: int = 100
    batch_size: int = 20
    crop: int = 96
    loss: str = "unsupervised"
    fista_iters: int = 1000
    relative_lr: bool = True
    relaxed: bool = True
    seed: int = 0
    device: str | None = None
    quiet: bool = False


def build_model(variant: str, psf: np.ndarray, channels: int, n_layers: int, threshold: str,
                lam: float, tile: int, alpha: float = 0.1) -> SPoDNet:
    """A SPoD-Net ('spodnet') or LISTA-Net ('lista') initialised to n_layers ISTA iterations."""
    if variant not in VARIANTS:
        raise UserError(f"unknown variant '{variant}' (use one of {', '.join(VARIANTS)})")
    config = SPoDNetConfig(channels=channels, psf_size=list(psf.shape), n_layers=n_layers,
                           threshold=threshold, alpha=alpha, lam=lam, tile=tile)
    return VARIANTS[variant](config).init_ista(torch.from_numpy(psf))


def training_loss(net: SPoDNet, op, y: torch.Tensor, lam: float, n_layers: int,
                  target: torch.Tensor | None = None, relaxed: bool = True) -> torch.Tensor:
    """Per-sample loss (B,) of the first ``n_layers`` layers on prepared crops y (B, c, H, W):
    eq. (9), the objective L(Y, x) itself, or with a FISTA ``target`` eq. (8), ||x − x*||².

    The loss sees the last iterate x^(m) *before* the post-threshold [x]_+: with LST it may be
    slightly negative and eq. (9) is then taken without the constraint (plain ||x||_1, the bound
    of Theorem 1, eq. 12), so LST's non-vanishing gradients (Sec. 4.2) reach the loss even where
    [x]_+ would cut them. With NST x^(m) >= 0 and this is eq. (9) exactly. ``relaxed=False``:
    the loss of the post-thresholded output [x^(m)]_+ instead.

    Seed: spodnet-lista-spod-microscopy.txt eqs. (8), (9), (12), Sec. 4.2.
    """
    x = net(y, n_layers=n_layers, post_threshold=not relaxed)
    if target is not None:
        return (x - target).flatten(1).pow(2).sum(1)
    return spod_objective(op, x, y, lam, relaxed=relaxed)


def _stages(n_layers: int) -> list[tuple[int, str]]:
    stages = []
    for m in range(1, n_layers + 1):
        stages.append((m, "opt1"))
        if m >= 2:
            stages.append((m, "opt2"))
    return stages


def _param_groups(model: SPoDNet, m: int, phase: str, lr: float, relative: bool) -> list[dict]:
    """Opt1: Θ_m at lr; Opt2: Θ_m at 0.2·lr, Θ_1..Θ_{m−1} at 0.02·lr (Algorithm 1, Sec. 5.1).

    relative: one group per tensor with lr × the tensor's RMS at the stage start, so lr is a
    relative change per step (g ~ 1e-3 for a PSF of sum 1, h ~ 1, η ~ 1e-2, θ ~ 1e-4: one
    absolute Adam lr cannot suit all of them)."""

    def groups(params, rate):
        if not relative:
            return [{"params": list(params), "lr": rate}]
        return [{"params": [p], "lr": rate * float(p.detach().pow(2).mean().sqrt().clamp_min(1e-8))}
                for p in params]

    new = model.layer_parameters(m - 1)
    if phase == "opt1":
        return groups(new, lr)
    old = [p for k in range(m - 1) for p in model.layer_parameters(k)]
    return groups(new, 0.2 * lr) + groups(old, 0.02 * lr)


def make_pool(stacks: list[np.ndarray], cfg: LayerwiseConfig) -> torch.Tensor:
    """The fixed training set {Y_n}: N augmented crops (N, c, crop, crop)."""
    rng = np.random.default_rng([cfg.seed, 7])
    return torch.from_numpy(random_crops(stacks, cfg.n_train, cfg.crop, rng))


def train_layerwise(
    model: SPoDNet,
    psf: np.ndarray,
    stacks: list[np.ndarray],
    cfg: LayerwiseConfig,
    out: str | Path,
    resume: bool = False,
    on_stage: Callable[[int, str, SPoDNet], dict] | None = None,
    extra: dict | None = None,
) -> list[dict]:
    """Algorithm 1 on prepared (preprocessed, normalised) stacks (c, H, W); saves ``out``.

    Returns one record per stage: layer m, phase, first/last training loss, the per-step loss
    curve, and whatever ``on_stage(m, phase, model)`` returns (e.g. a test objective; called
    when the stage's training ends, before the shrink).
    """
    if cfg.loss not in LOSSES:
        raise UserError(f"unknown loss '{cfg.loss}' (use one of {', '.join(LOSSES)})")
    out = Path(out)
    work = out.with_name(out.name + ".stages")
    done_path = work / "done.safetensors"
    dtype = torch.get_default_dtype()
    op = spod_operator(torch.from_numpy(psf).to(dtype), model.config.channels)
    lam = model.config.lam
    pool = make_pool(stacks, cfg)
    targets = None
    if cfg.loss == "supervised":
        targets = solve(op, pool, lam, "fista", n_iter=cfg.fista_iters, track=False).x

    def sample_batch(rng: np.random.Generator):
        idx = torch.from_numpy(rng.choice(len(pool), size=min(cfg.batch_size, len(pool)),
                                          replace=False))
        return (pool[idx], targets[idx]) if targets is not None else (pool[idx],)

    records: list[dict] = []
    first = 0
    if resume and done_path.is_file():
        ckpt = read_checkpoint(done_path)
        model.load_state_dict(ckpt.model_state())
        records = ckpt.extra["records"]
        first = int(ckpt.extra["stage"]) + 1
    elif resume and not (work / "stage00.safetensors.resume").is_file():
        raise UserError(f"--resume: nothing to resume in {work}; start without --resume")
    elif not resume and work.exists():
        shutil.rmtree(work)
    op = op.to(resolve_device(cfg.device))
    stages = _stages(model.config.n_layers)
    for index in range(first, len(stages)):
        m, phase = stages[index]

        def loss_fn(net, batch, m=m):
            return training_loss(net, op, batch[0], lam, m, *batch[1:],
                                 relaxed=cfg.relaxed).mean()

        stage_out = work / f"stage{index:02d}.safetensors"
        trainer = Trainer(
            model, loss_fn, sample_batch,
            TrainConfig(steps=cfg.steps, lr=cfg.lr, val_every=cfg.steps + 1,
                        ckpt_every=max(1, cfg.steps // 4), seed=cfg.seed * 1000 + index,
                        device=cfg.device, quiet=cfg.quiet),
            stage_out, param_groups=_param_groups(model, m, phase, cfg.lr, cfg.relative_lr),
        )
        stage_resume = resume and trainer.resume_path.is_file()
        history = trainer.fit(resume=stage_resume)
        losses = [h["loss"] for h in history]
        record = {"layer": m, "phase": phase, "loss_first": losses[0], "loss_last": losses[-1],
                  "loss_curve": losses}
        if on_stage is not None:
            record.update(on_stage(m, phase, model))
        if m != model.config.n_layers and (phase == "opt2" or m == 1):
            model.shrink_layer(m - 1, cfg.gamma)
        records.append(record)
        save_checkpoint(done_path, model, extra={"stage": index, "records": records})
        for path in (stage_out, trainer.resume_path):
            path.unlink(missing_ok=True)
    save_checkpoint(out, model, extra={**(extra or {}), "train": asdict(cfg),
                                       "stages": [{k: v for k, v in r.items() if k != "loss_curve"}
                                                  for r in records]})
    shutil.rmtree(work, ignore_errors=True)
    return records
