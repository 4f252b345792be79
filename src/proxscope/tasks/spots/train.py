"""Training SpotNet / ConvNet on simulated folders (Seed: spotnet-fluorospot-learned-iterations.txt
Sec. 4: Adam, batch 1, MSE loss (3), keep the best validation model, learning rate 1e-3).
SpotNet starts from the seed's random zero-mean kernels with data-driven thresholds
(:meth:`SpotNet.random`); its log-steps, log-thresholds and momenta get their own learning rate
(:data:`RECIPES`, chosen by measurement: benchmarks/spots.md).

Batches are random crops (default 128×128, with random flips / 90° rotations: the physics is
isotropic) of the training images for CPU speed; validation is the loss on whole validation
images, reported as MSE / MSE of an all-zero output (the loss a net stuck at x = 0 gets: a
value near 1 means the net has not left the near-zero regime). Images are scaled by
:func:`~.predict.normalize` and targets by the same gain, as at prediction. After training,
the detection threshold maximising the pooled F1 on the validation images is stored in the
checkpoint (``extra["detection"]``), with the matching radius.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ...errors import UserError
from .evaluate import RADIUS
from .predict import DETECT_SIGMA, NORMALIZATION, detect, infer, normalize
from .simulate import read_sample

MODELS = ("spotnet", "convnet")
#: Adam settings per model: lr (kernels / all weights), scalar_lr (SpotNet's log-steps,
#: log-thresholds, momenta), grad_clip (max gradient norm, None: off), restore_factor and
#: restore_level (the trainer's collapse guard: a SpotNet layer whose threshold passes every
#: input outputs 0 with zero gradient, and training never recovers — measured at step 5,500 and
#: 9,500 of two runs; a dead net's validation MSE / zero-output MSE is 1)
_GUARD = {"restore_factor": 1.1, "restore_level": 0.999}
RECIPES = {"spotnet": {"lr": 3e-3, "scalar_lr": 1e-2, "grad_clip": None, **_GUARD},
           "convnet": {"lr": 1e-3, "scalar_lr": None, "grad_clip": None, **_GUARD}}
DEFAULT_LR = {name: recipe["lr"] for name, recipe in RECIPES.items()}


def load_set(folders) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """[(image, target, cells_yx)] of simulated folders, image scaled by :func:`normalize` and
    target by the same gain (what the models see at prediction); all must have the same K."""
    samples = []
    for folder in folders:
        image, target, cells = read_sample(folder)
        image, gain = normalize(image)
        samples.append((image, target * np.float32(gain), cells))
    if len({t.shape[0] for _, t, _ in samples}) > 1:
        raise UserError("the folders have different numbers of time windows K")
    return samples


def init_model(name: str, samples, seed: int = 0):
    """A fresh SpotNet (:meth:`SpotNet.random`: random zero-mean kernels, thresholds from the
    training images) or ConvNet (PyTorch default initialisation, seeded by the caller) for K of
    the training ``samples`` (:func:`load_set`)."""
    import torch

    from ...models.spotnet import SpotConvNet, SpotConvNetConfig, SpotNet, SpotNetConfig

    n_channels = samples[0][1].shape[0]
    if name == "spotnet":
        images = torch.stack([torch.from_numpy(image)[None] for image, _, _ in samples])
        return SpotNet.random(images, SpotNetConfig(n_channels=n_channels), seed=seed)
    if name == "convnet":
        return SpotConvNet(SpotConvNetConfig(n_channels=n_channels))
    raise UserError(f"unknown model '{name}' (choose from {', '.join(MODELS)})")


def crop_sampler(samples, crop: int, batch_size: int = 1):
    """sample_batch(rng) -> (images (B, 1, c, c), targets (B, K, c, c)): random training images,
    cropped to c = min(``crop``, the smallest image side) (``crop`` 0: the smallest side), turned
    and flipped at random."""
    import torch

    from ...data.transforms import random_crop_rot_flip

    size = min(min(image.shape) for image, _, _ in samples)
    size = min(crop, size) if crop else size

    def sample_batch(rng: np.random.Generator):
        images, targets = [], []
        for _ in range(batch_size):
            image, target, _ = samples[rng.integers(len(samples))]
            image, (target,), _ = random_crop_rot_flip(rng, image, size, targets=(target,))
            images.append(image[None])
            targets.append(target)
        return torch.from_numpy(np.stack(images)), torch.from_numpy(np.stack(targets))

    return sample_batch


def calibrate(checkpoint: str | Path, samples, device="cpu") -> tuple[float, float]:
    """Fix the detection threshold of a trained ``checkpoint`` at the best mean per-image F1
    on validation ``samples`` (:func:`load_set`; each image weighs the same, so a threshold
    fitted on crowded and sparse wells works on both) and store it in the checkpoint (extra
    ``detection`` = {threshold, sigma}, ``val_f1``, ``radius``) -> (threshold, validation F1)."""
    from ...checkpoint import save_checkpoint
    from ...metrics import pooled_best_threshold
    from ...models import load

    model, extra = load(checkpoint, device=device)
    detections = [(*detect(infer(model, image, device)), cells) for image, _, cells in samples]
    threshold, val_f1 = pooled_best_threshold(detections, RADIUS, per_image=True)
    for legacy in ("threshold", "detect_sigma"):  # the slot before extra["detection"]
        extra.pop(legacy, None)
    extra |= {"detection": {"threshold": threshold, "sigma": DETECT_SIGMA}, "val_f1": val_f1,
              "radius": RADIUS}
    save_checkpoint(checkpoint, model, extra=extra)
    return threshold, val_f1


def train(
    name: str,
    data,
    out: str | Path,
    val=None,
    steps: int = 2000,
    crop: int = 128,
    lr: float | None = None,
    scalar_lr: float | None = None,
    grad_clip: float | None = None,
    batch_size: int = 1,
    val_every: int = 100,
    seed: int = 0,
    device: str | None = None,
    quiet: bool = False,
    resume: bool = False,
) -> dict:
    """Train ``name`` ('spotnet' | 'convnet') with Adam (``lr``, ``scalar_lr``, ``grad_clip``
    None: :data:`RECIPES`) on folders ``data``, validate on ``val`` (default: the last 30% of
    ``data`` when there are >= 2 folders, else ``data``). Writes the best model to ``out``
    (resumable through ``out``.resume) and returns a summary; its ``best_val_loss`` and
    ``val_history`` are validation MSE / all-zero-output MSE."""
    import torch

    from ...models.spotnet import secretion_loss
    from ...train.trainer import TrainConfig, Trainer
    from ...utils import resolve_device

    data = list(data)
    if not val:
        n_val = max(1, round(0.3 * len(data))) if len(data) >= 2 else 0
        val = data[len(data) - n_val :] if n_val else data
        data = data[: len(data) - n_val] if n_val else data
    samples = load_set([*data, *val])
    train_set, val_set = samples[: len(data)], samples[len(data) :]
    if name not in RECIPES:
        raise UserError(f"unknown model '{name}' (choose from {', '.join(MODELS)})")
    recipe = RECIPES[name] | {k: v for k, v in (("lr", lr), ("scalar_lr", scalar_lr),
                                                ("grad_clip", grad_clip)) if v is not None}
    torch.manual_seed(seed)
    model = init_model(name, train_set, seed)
    dev = resolve_device(device)
    val_tensors = [
        (torch.from_numpy(i)[None, None].to(dev), torch.from_numpy(t)[None].to(dev))
        for i, t, _ in val_set
    ]
    zero_mse = float(np.mean([float(t.pow(2).mean()) for _, t in val_tensors]))

    def validate(m) -> float:
        mse = np.mean([float(secretion_loss(m(i), t)) for i, t in val_tensors])
        return float(mse / zero_mse) if zero_mse > 0 else float(mse)

    groups = (model.param_groups(recipe["lr"], recipe["scalar_lr"])
              if recipe["scalar_lr"] is not None else None)
    trainer = Trainer(
        model,
        lambda m, batch: secretion_loss(m(batch[0]), batch[1]),
        crop_sampler(train_set, crop, batch_size),
        TrainConfig(steps=steps, lr=recipe["lr"], grad_clip=recipe["grad_clip"],
                    restore_factor=recipe["restore_factor"], restore_level=recipe["restore_level"],
                    val_every=val_every, ckpt_every=val_every, seed=seed, device=device,
                    quiet=quiet),
        out,
        validate=validate,
        param_groups=groups,
        extra={"model": name, "train": [str(d) for d in data], "val": [str(v) for v in val],
               "crop": crop, "batch_size": batch_size, "recipe": recipe,
               "input_normalization": NORMALIZATION,
               "val_zero_output_mse": zero_mse},
    )
    history = trainer.fit(resume=resume)
    threshold, val_f1 = calibrate(out, val_set, dev)
    return {"out": str(out), "steps": trainer.step, **history_summary(history),
            "threshold": threshold, "val_f1": val_f1}


def history_summary(history: list[dict]) -> dict:
    """A trainer history -> best_val_loss, best_step (None without validations), val_history
    [(step, val)] and restored_at (steps where the collapse guard restored the best weights)."""
    vals = [(h["step"], h["val"]) for h in history if "val" in h]
    best = min(vals, key=lambda sv: sv[1]) if vals else (None, None)
    return {"best_val_loss": best[1], "best_step": best[0], "val_history": vals,
            "restored_at": [h["step"] for h in history if h.get("restored")]}
