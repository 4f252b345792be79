"""``cells train``: annotated images -> a CNNCS / ECNNCS-1 / ECNNCS-2 checkpoint.

Data: DIR/NAME.{tif,tiff,png,jpg} with POINTS/NAME.csv (header y,x), any size and dtype,
grayscale or RGB; each channel is percentile-normalised (1 %, 99.8 %). Training draws random
P×P patches from the whole images with random 90° rotations and flips (the seed's rotation
augmentation, Sec. 4.3), encodes the centroids inside each patch on the L lines, and minimises
the variant's loss (eq. (3) with the multi-task count label) with the core Trainer (best
checkpoint by validation loss, ``--resume``). After training, the decoding vote threshold is
chosen for the best F1 on the validation images and stored in the checkpoint's config.

One epoch is as many patches as cover the training images once.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import numpy as np
import torch

from ...checkpoint import save_checkpoint
from ...data.io import RASTER_SUFFIXES, TIFF_SUFFIXES, read_image, read_points
from ...data.transforms import percentile_normalize, to_channels_first
from ...errors import UserError
from ...models.cnncs import CNNCS, CNNCSConfig
from ...train.trainer import TrainConfig, Trainer
from .codec import encode_patches

IMAGE_SUFFIXES = TIFF_SUFFIXES | RASTER_SUFFIXES
VOTE_GRID = (0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8)


def prepare_image(image: np.ndarray, min_size: int = 0, source: str = "image") -> np.ndarray:
    """Any (H, W) / (H, W, C) / (C, H, W) image -> float32 (C, H, W), each channel mapped to
    [0, 1] by its 1 % / 99.8 % percentiles, padded (row / column medians) to ``min_size``."""
    image = to_channels_first(np.asarray(image))
    if image.shape[0] == 4:  # RGBA: drop alpha
        image = image[:3]
    if image.shape[0] not in (1, 3):
        raise UserError(f"{source}: expected a grayscale or RGB image, got shape {image.shape}")
    image = percentile_normalize(image, axis=(1, 2))
    pad_h, pad_w = max(0, min_size - image.shape[1]), max(0, min_size - image.shape[2])
    if pad_h or pad_w:
        image = np.pad(image, ((0, 0), (0, pad_h), (0, pad_w)), mode="median")
    return image.astype(np.float32)


def load_annotated(images_dir: str | Path, points_dir: str | Path, patch: int) -> list[dict]:
    """Pairs DIR/NAME.<image> + POINTS/NAME.csv -> [{'name', 'image' (C, H, W), 'points'}]."""
    images_dir, points_dir = Path(images_dir), Path(points_dir)
    if not images_dir.is_dir():
        raise UserError(f"images folder not found: {images_dir}")
    files = sorted(p for p in images_dir.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise UserError(f"{images_dir}: no .tif/.png/.jpg images")
    data = []
    for path in files:
        csv = points_dir / f"{path.stem}.csv"
        if not csv.is_file():
            raise UserError(f"{path.name}: no annotation {csv}")
        image = prepare_image(read_image(path), patch, source=str(path))
        points, _ = read_points(csv)
        h, w = image.shape[1:]
        if len(points) and (points.min() < -0.5 or (points >= [h, w]).any()):
            raise UserError(f"{csv}: points outside the {h}x{w} image (is the header y,x?)")
        data.append({"name": path.stem, "image": image, "points": points})
    channels = {d["image"].shape[0] for d in data}
    if len(channels) > 1:
        raise UserError(f"{images_dir}: mixed grayscale and RGB images")
    return data


def _augment(patch: np.ndarray, points: np.ndarray, k: int, flip: bool):
    """Rotate a (C, P, P) patch by k·90° (np.rot90 convention) and optionally flip left-right;
    the (y, x) points follow: rot90 maps (y, x) -> (P−1−x, y)."""
    size = patch.shape[-1]
    for _ in range(k):
        points = np.stack([size - 1 - points[:, 1], points[:, 0]], 1)
    patch = np.rot90(patch, k, axes=(1, 2))
    if flip:
        patch = patch[:, :, ::-1]
        points = np.stack([points[:, 0], size - 1 - points[:, 1]], 1)
    return np.ascontiguousarray(patch), points


def crop(data: list[dict], rng: np.random.Generator, patch: int, augment: bool):
    """One random patch: (C, P, P) array and its centroids (N, 2) in patch coordinates."""
    item = data[rng.integers(len(data))]
    image, points = item["image"], item["points"]
    y0 = rng.integers(image.shape[1] - patch + 1)
    x0 = rng.integers(image.shape[2] - patch + 1)
    local = points - [y0, x0]
    local = local[((local >= -0.5) & (local < patch - 0.5)).all(1)]
    piece = image[:, y0 : y0 + patch, x0 : x0 + patch]
    if augment:
        return _augment(piece, local, int(rng.integers(4)), bool(rng.integers(2)))
    return piece, local


def sample_patches(model: CNNCS, data: list[dict], rng, batch: int, augment: bool = True):
    """A batch (images (B, C, P, P), sparse labels a (B, L, n))."""
    pieces = [crop(data, rng, model.config.patch, augment) for _ in range(batch)]
    images = torch.from_numpy(np.stack([p for p, _ in pieces]))
    return images, encode_patches(model.lines, [pts for _, pts in pieces])


def calibrate(model: CNNCS, data: list[dict], radius: float) -> dict[str, float]:
    """Choose the vote threshold with the best F1 on ``data`` (whole images); sets it in the
    model's config and returns {'vote_threshold', 'val_f1'}."""
    from ...metrics import match_points
    from .codec import cluster_votes
    from .predict import predict_votes

    votes = [predict_votes(model, d["image"]) for d in data]
    best = (-1.0, model.config.vote_threshold)
    for threshold in VOTE_GRID:
        tp = fp = fn = 0
        for v, d in zip(votes, data, strict=True):
            pred, _ = cluster_votes(v, threshold, model.config.bandwidth)
            r = match_points(pred, d["points"], radius)
            tp, fp, fn = tp + r.tp, fp + r.fp, fn + r.fn
        f1 = 2 * tp / max(2 * tp + fp + fn, 1)
        if f1 > best[0]:
            best = (f1, threshold)
    model.config.vote_threshold = best[1]
    return {"vote_threshold": best[1], "val_f1": best[0]}


def train(
    data: list[dict],
    out: str | Path,
    config: CNNCSConfig,
    epochs: float = 100,
    batch: int = 16,
    lr: float = 2e-3,
    seed: int = 0,
    device: str | None = None,
    quiet: bool = False,
    resume: bool = False,
    val_data: list[dict] | None = None,
    radius: float = 4.0,
) -> tuple[CNNCS, dict]:
    """Train a model on ``data`` (see :func:`load_annotated`) and save it to ``out``.

    Validation (best checkpoint, threshold calibration) uses ``val_data`` when given, else the
    training images (fixed patches without augmentation). Returns (model, extra metadata).
    """
    torch.manual_seed(seed)
    channels = data[0]["image"].shape[0]
    config = dataclasses.replace(config, in_channels=channels)
    model = CNNCS(config)
    pixels = sum(d["image"].shape[1] * d["image"].shape[2] for d in data)
    steps = max(1, math.ceil(epochs * max(pixels / config.patch**2, batch) / batch))
    val_data = val_data or data
    val_batch = sample_patches(model, val_data, np.random.default_rng([seed, 10**6]), 64, False)

    def validate(m: CNNCS) -> float:
        return float(m.loss(*(t.to(m.D.device) for t in val_batch)))

    train_config = TrainConfig(
        steps=steps,
        lr=lr,
        val_every=max(1, steps // 10),
        ckpt_every=max(1, steps // 10),
        seed=seed,
        device=device,
        quiet=quiet,
        grad_clip=10.0,
    )
    extra = {"task": "cells", "epochs": epochs, "steps": steps, "images": [d["name"] for d in data]}
    trainer = Trainer(
        model,
        lambda m, b: m.loss(*b),
        lambda rng: sample_patches(model, data, rng, batch),
        train_config,
        out,
        validate=validate,
        param_groups=model.param_groups(lr),
        extra=extra,
    )
    trainer.fit(resume=resume)
    from ...models import load

    model, _ = load(out, device=trainer.device, expected=CNNCS)
    extra.update(calibrate(model, val_data, radius), history=trainer.history)
    save_checkpoint(out, model, extra=extra)
    return model, extra
