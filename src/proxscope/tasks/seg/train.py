"""``seg train``: fit UNet / RUNet / SegNet / RSegNet on image-mask pairs with the core Trainer.

Loss: cross entropy of seed eq. (2.3) on the net's output probabilities, -mean log(max(A, 1e-8))
at the true class, so a TVSoftmax net is trained through its own (one-iteration) output.
Batches: random square crops with random flips / 90-degree turns. ``noisy_fraction`` of the
training images are replaced once (seeded) by a noisy copy, Gaussian sigma 0.05 or 1 %
salt-and-pepper with equal chance (seed Sec. 4.1, "Unet2/RUnet2"). A held-out part of the
images (``val_fraction``) selects the best checkpoint by mIoU.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ...checkpoint import DIAMETER_KEY
from ...data.transforms import percentile_normalize, random_crop_rot_flip
from ...errors import UserError
from ...metrics.segmentation import mean_iou
from ...models.segmentation import build
from ...sim.segmentation import add_noise
from ...train.trainer import TrainConfig, Trainer
from .data import object_diameter
from .predict import load_model, segment

TRAIN_NOISE = (("gaussian", 0.05), ("salt_pepper", 0.01))


def nll_loss(probs: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """-mean_pixels log A[target] with A clamped to >= 1e-8: (B, C, H, W), (B, H, W) -> ().
    Seed eq. (2.3)."""
    picked = probs.gather(1, target.unsqueeze(1)).clamp_min(1e-8)
    return -picked.log().mean()


def add_training_noise(images: list[np.ndarray], fraction: float, seed: int) -> list[np.ndarray]:
    """Replace round(fraction·N) images (0 <= fraction <= 1), chosen at random, by noisy copies
    (renormalised)."""
    rng = np.random.default_rng([seed, 7])
    chosen = rng.choice(len(images), size=round(fraction * len(images)), replace=False)
    out = list(images)
    for i in chosen:
        kind, level = TRAIN_NOISE[rng.integers(len(TRAIN_NOISE))]
        out[i] = percentile_normalize(add_noise(images[i], kind, level, rng)).astype(np.float32)
    return out


def crop_sampler(images: list[np.ndarray], masks: list[np.ndarray], patch: int, batch_size: int):
    """sample_batch(rng) -> (x (B, C, p, p) float32, y (B, p, p) int64), p = min(patch, sizes):
    per sample a random image, then the core crop / rot90 / flip carrying its mask."""
    p = min(patch, *(min(m.shape) for m in masks))

    def sample_batch(rng: np.random.Generator):
        xs, ys = [], []
        for _ in range(batch_size):
            i = rng.integers(len(images))
            x, (y,), _ = random_crop_rot_flip(rng, images[i], p, targets=(masks[i],))
            xs.append(x)
            ys.append(y)
        return torch.from_numpy(np.stack(xs)), torch.from_numpy(np.stack(ys))

    return sample_batch


def split_validation(n: int, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(train indices, validation indices); no validation below 5 images."""
    order = np.random.default_rng([seed, 3]).permutation(n)
    n_val = round(fraction * n) if n >= 5 else 0
    return np.sort(order[n_val:]), np.sort(order[:n_val])


def fit_segmentation(
    images: list[np.ndarray], masks: list[np.ndarray], arch: str, out: str | Path, *,
    steps: int = 1000, batch_size: int = 8, patch: int = 96, lr: float = 2e-3, lam: float = 1.0,
    base_channels: int = 8, depth: int = 3, noisy_fraction: float = 0.0, val_fraction: float = 0.15,
    seed: int = 0, device: str | None = None, quiet: bool = False, resume: bool = False,
    extra: dict | None = None,
):
    """Train ``arch`` ('unet', 'runet', 'segnet', 'rsegnet') on normalised images (C, H, W) and
    label maps (H, W) with Adam (``lr``) for ``steps`` steps on ``batch_size`` crops of ``patch``
    pixels; ``lam``: initial TV weight; ``base_channels``, ``depth``: net size (:class:`SegConfig`);
    ``noisy_fraction``: see :func:`add_training_noise`; ``val_fraction``: images held out to pick
    the best checkpoint, written to ``out`` with ``extra`` metadata and the training masks'
    median object diameter (:func:`~.data.object_diameter`). Returns (best model in eval
    mode, history). Raises :class:`UserError` when the masks hold a single class."""
    n_classes = int(max(m.max() for m in masks)) + 1
    if n_classes < 2:
        raise UserError("the masks hold a single class; need at least two (0 = background)")
    train_idx, val_idx = split_validation(len(images), val_fraction, seed)
    train_images = add_training_noise([images[i] for i in train_idx], noisy_fraction, seed)
    train_masks = [masks[i] for i in train_idx]
    torch.manual_seed(seed)
    model = build(arch, in_channels=images[0].shape[0], n_classes=n_classes, lam=lam,
                  base_channels=base_channels, depth=depth)
    validate = None
    if len(val_idx):
        val = [(images[i], masks[i]) for i in val_idx]

        def validate(m):
            preds = [segment(m, image).argmax(0) for image, _ in val]
            return 1.0 - mean_iou(
                np.concatenate([p.ravel() for p in preds]),
                np.concatenate([t.ravel() for _, t in val]),
                n_classes,
            )

    config = TrainConfig(steps=steps, lr=lr, val_every=max(steps // 10, 1),
                         ckpt_every=max(min(steps // 10, 100), 1), seed=seed, device=device, quiet=quiet)
    meta = {
        "task": "seg",
        "arch": arch,
        "n_classes": n_classes,
        "normalize": "percentile 1-99.8 over all pixels and channels",
        "train_images": len(train_idx),
        "val_images": len(val_idx),
        "noisy_fraction": noisy_fraction,
        DIAMETER_KEY: object_diameter(train_masks),
        **(extra or {}),
    }
    trainer = Trainer(
        model, lambda m, batch: nll_loss(m(batch[0]), batch[1]),
        crop_sampler(train_images, train_masks, patch, batch_size),
        config, out, validate=validate, extra=meta,
    )
    history = trainer.fit(resume=resume)
    return load_model(out, device), history
