"""``cells train``: annotated images -> a CNNCS / ECNNCS-1 / ECNNCS-2 checkpoint.

Data: IMAGES/NAME.{tif,tiff,png,jpg} with POINTS/NAME.csv (header y,x), any size and dtype,
grayscale or RGB, prepared as for detection (:func:`~.detect.prepare`). Training draws random
P×P patches from the whole images with random 90° rotations and flips (the seed's rotation
augmentation, Sec. 4.3), encodes the centroids inside each patch on the L lines, and minimises
the variant's loss (eq. (3) with the multi-task count label) with the core Trainer (best
checkpoint by validation loss, ``--resume``). After training, the decoding vote threshold is
chosen for the best F1 on the validation images and stored in the checkpoint
(``extra["detection"]["vote_threshold"]``, read by :func:`proxscope.checkpoint.detection_settings`).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import torch

from ...checkpoint import save_checkpoint
from ...data.io import expand_inputs, read_image, read_points
from ...data.transforms import random_crop_rot_flip
from ...errors import UserError
from ...metrics import match_points, pool_matches
from ...models.cnncs import CNNCS, VARIANTS, CNNCSConfig, cluster_votes, encode_patches
from ...train.trainer import TrainConfig, Trainer
from .detect import predict_votes, prepare

VOTE_GRID = (0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8)


def load_annotated(images: str | Path, points: str | Path, patch: int) -> list[dict]:
    """Pairs IMAGES/NAME.<image> + POINTS/NAME.csv -> [{'name', 'image' (C, H, W), 'points'}].

    ``images``: a folder or a glob. Raises UserError for a missing annotation, points outside
    their image, or mixed grayscale and RGB images."""
    data = []
    for path in expand_inputs(images):
        csv = Path(points) / f"{path.stem}.csv"
        if not csv.is_file():
            raise UserError(f"{path.name}: no annotation {csv}")
        image = prepare(read_image(path), patch, source=str(path))
        yx, _ = read_points(csv)
        h, w = image.shape[1:]
        if len(yx) and (yx.min() < -0.5 or (yx >= [h, w]).any()):
            raise UserError(f"{csv}: points outside the {h}x{w} image (is the header y,x?)")
        data.append({"name": path.stem, "image": image, "points": yx})
    if len({d["image"].shape[0] for d in data}) > 1:
        raise UserError(f"{images}: mixed grayscale and RGB images")
    return data


def sample_patches(model: CNNCS, data: list[dict], rng: np.random.Generator, batch_size: int,
                   augment: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """A batch of random patches (B, C, P, P) and their sparse labels a (B, L, n)."""
    pieces, points = [], []
    for _ in range(batch_size):
        item = data[rng.integers(len(data))]
        piece, _, local = random_crop_rot_flip(
            rng, item["image"], model.config.patch, points=item["points"], augment=augment
        )
        pieces.append(piece)
        points.append(local)
    return torch.from_numpy(np.stack(pieces)), encode_patches(model.lines, points)


def calibrate(model: CNNCS, data: list[dict], radius: float) -> dict[str, float]:
    """The vote threshold of ``VOTE_GRID`` with the best pooled F1 (match radius ``radius``
    px) on the whole images ``data`` -> {'vote_threshold', 'val_f1'}."""
    votes = [predict_votes(model, d["image"]) for d in data]

    def f1(threshold: float) -> float:
        return pool_matches(
            match_points(cluster_votes(v, threshold, model.config.bandwidth)[0], d["points"], radius)
            for v, d in zip(votes, data, strict=True)
        ).f1

    scores = {threshold: f1(threshold) for threshold in VOTE_GRID}
    best = max(scores, key=scores.get)
    return {"vote_threshold": best, "val_f1": scores[best]}


def train(
    data: list[dict],
    out: str | Path,
    variant: str,
    config: CNNCSConfig,
    steps: int,
    batch_size: int = 16,
    lr: float = 2e-3,
    seed: int = 0,
    device: str | None = None,
    quiet: bool = False,
    resume: bool = False,
    val_data: list[dict] | None = None,
    radius: float = 4.0,
) -> tuple[CNNCS, dict]:
    """Train ``VARIANTS[variant]`` on ``data`` (see :func:`load_annotated`) for ``steps``
    batches of ``batch_size`` patches and save it to ``out``.

    Validation (best checkpoint, threshold calibration) uses ``val_data`` when given, else the
    training images (fixed patches without augmentation). Returns (model, extra metadata).
    """
    from ...models import load

    torch.manual_seed(seed)
    model = VARIANTS[variant](dataclasses.replace(config, in_channels=data[0]["image"].shape[0]))
    val_data = val_data or data
    val_batch = sample_patches(model, val_data, np.random.default_rng([seed, 10**6]), 64, False)

    def validate(m: CNNCS) -> float:
        return float(m.loss(*(t.to(m.D.device) for t in val_batch)))

    every = max(1, steps // 10)
    train_config = TrainConfig(steps=steps, lr=lr, val_every=every, ckpt_every=every, seed=seed,
                               device=device, quiet=quiet, grad_clip=10.0)
    extra = {"task": "cells", "steps": steps, "batch_size": batch_size,
             "images": [d["name"] for d in data]}
    trainer = Trainer(
        model,
        lambda m, b: m.loss(*b),
        lambda rng: sample_patches(model, data, rng, batch_size),
        train_config,
        out,
        validate=validate,
        param_groups=model.param_groups(lr),
        extra=extra,
    )
    trainer.fit(resume=resume)
    model, _ = load(out, device=trainer.device, expected=CNNCS)
    calibration = calibrate(model, val_data, radius)
    extra.update(detection={"vote_threshold": calibration["vote_threshold"]},
                 val_f1=calibration["val_f1"], history=trainer.history)
    save_checkpoint(out, model, extra=extra)
    return model, extra
