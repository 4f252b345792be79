"""``cells train``: annotated images -> a CNNCS / ECNNCS-1 / ECNNCS-2 checkpoint.

Data: IMAGES/NAME.{tif,tiff,png,jpg} with POINTS/NAME.csv (header y,x), any size and dtype,
grayscale or RGB, prepared as for detection (:func:`~.detect.prepare`). Object scale: the
object diameter d of the data (given, or :func:`estimate_diameter` from the annotations) and
the network's working diameter d0 (``CNNCSConfig.diameter``, 10.8 px: what
:func:`estimate_diameter` gives on the bundled model's simulated training images) set a
resampling by d0/d of every image and its points, so patch size, mean-shift bandwidth, match radius and the
line codes keep the sizes they were tuned for whatever the objects' size; d is stored in the
checkpoint (``data_diameter_px``) and is the default ``--diameter`` at prediction.

Training draws random P×P patches from the whole images with random 90° rotations and flips
(the seed's rotation augmentation, Sec. 4.3), encodes the centroids inside each patch on the L
lines, and minimises the variant's loss (eq. (3) with the multi-task count label) with the
core Trainer (``--resume``); ECNNCS-2's D is renormalised to D0's column norms after every
step. Every validation decodes the validation images at every vote threshold of
``VOTE_GRID``; the checkpoint kept is the one with the best validation F1 (one scale for every
variant, unlike a loss measured in each variant's own code space; the history's "val" is −F1),
with its vote threshold
(``extra["detection"]["vote_threshold"]``, read by :func:`proxscope.checkpoint.detection_settings`).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import torch

from ...checkpoint import save_checkpoint
from ...data.io import expand_inputs, read_image, read_points
from ...data.transforms import prepare_image, random_crop_rot_flip
from ...errors import UserError
from ...metrics import match_points, pool_matches
from ...models.cnncs import CNNCS, VARIANTS, CNNCSConfig, cluster_votes, encode_patches
from ...train.trainer import TrainConfig, Trainer
from .detect import predict_votes, prepare, scale_extra
from .task import RADIUS

VOTE_GRID = (0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8)


def load_annotated(images: str | Path, points: str | Path) -> list[dict]:
    """Pairs IMAGES/NAME.<image> + POINTS/NAME.csv -> [{'name', 'raw' (image as read),
    'points'}] (see :func:`to_model_scale`).

    ``images``: a folder or a glob. Raises UserError for a missing annotation, points outside
    their image, or mixed grayscale and RGB images."""
    data = []
    for path in expand_inputs(images):
        csv = Path(points) / f"{path.stem}.csv"
        if not csv.is_file():
            raise UserError(f"{path.name}: no annotation {csv}")
        raw = read_image(path)
        image = prepare_image(raw, per_channel=True, source=str(path))
        yx, _ = read_points(csv)
        h, w = image.shape[1:]
        if len(yx) and (yx.min() < -0.5 or (yx >= [h, w]).any()):
            raise UserError(f"{csv}: points outside the {h}x{w} image (is the header y,x?)")
        data.append({"name": path.stem, "raw": raw, "points": yx, "channels": image.shape[0]})
    if len({d["channels"] for d in data}) > 1:
        raise UserError(f"{images}: mixed grayscale and RGB images")
    return data


def estimate_diameter(data: list[dict], channels: int = 1) -> float:
    """Object diameter (px) from annotated images (``data`` as from :func:`load_annotated`):
    at every annotated centre, the scale sigma that maximises the scale-normalised
    Laplacian-of-Gaussian magnitude sigma²·|ΔG_sigma * I| (a disc of radius r peaks at
    sigma = r/√2), over 32 scales from 0.7 to 40 px; d = 2√2 · median sigma. Raises UserError
    without any annotated point."""
    from scipy.ndimage import gaussian_laplace

    sigmas = np.geomspace(0.7, 40.0, 32)
    best = []
    for d in data:
        if not len(d["points"]):
            continue
        image = prepare_image(d["raw"], (channels,), per_channel=True).mean(0)
        sigma_max = min(image.shape) / 6
        idx = tuple(np.clip(np.round(d["points"]).astype(int), 0, np.array(image.shape) - 1).T)
        response = np.stack([s**2 * np.abs(gaussian_laplace(image, s))[idx]
                             for s in sigmas if s <= sigma_max])
        best.append(sigmas[response.argmax(0)])
    if not best:
        raise UserError("no annotated points: give --diameter")
    return float(2 * np.sqrt(2) * np.median(np.concatenate(best)))


def to_model_scale(data: list[dict], config: CNNCSConfig, diameter: float) -> list[dict]:
    """Raw annotated images -> [{'name', 'image' (C, H', W') prepared and resampled by
    ``config.diameter / diameter`` (:func:`~.detect.prepare`), 'points' at that scale}]."""
    out = []
    for d in data:
        image, scale = prepare(d["raw"], config.patch, (d["channels"],), d["name"], diameter,
                               config.diameter)
        points = (np.asarray(d["points"], float).reshape(-1, 2) + 0.5) * scale - 0.5
        out.append({"name": d["name"], "image": image, "points": points})
    return out


def sample_patches(model: CNNCS, data: list[dict], rng: np.random.Generator,
                   batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A batch of random patches (B, C, P, P) and their sparse labels a (B, L, n)."""
    pieces, points = [], []
    for _ in range(batch_size):
        item = data[rng.integers(len(data))]
        piece, _, local = random_crop_rot_flip(
            rng, item["image"], model.config.patch, points=item["points"]
        )
        pieces.append(piece)
        points.append(local)
    return torch.from_numpy(np.stack(pieces)), encode_patches(model.lines, points)


def calibrate(model: CNNCS, data: list[dict], radius: float = RADIUS) -> dict[str, float]:
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
    data_diameter: float | None = None,
) -> tuple[CNNCS, dict]:
    """Train ``VARIANTS[variant]`` on ``data`` (images at the model's scale, see
    :func:`to_model_scale`) for ``steps`` batches of ``batch_size`` patches and save it to
    ``out``; ``data_diameter``: the object diameter of the original images, recorded.

    Validation (best checkpoint by F1, vote threshold, match radius ``RADIUS`` at the model's
    scale) uses ``val_data`` when given, else the training images. Returns (model, extra
    metadata).
    """
    from ...models import load

    torch.manual_seed(seed)
    model = VARIANTS[variant](dataclasses.replace(config, in_channels=data[0]["image"].shape[0]))
    val_data = val_data or data

    def validate(m: CNNCS) -> float:
        return -calibrate(m, val_data)["val_f1"]

    every = max(1, steps // 10)
    train_config = TrainConfig(steps=steps, lr=lr, val_every=every, ckpt_every=every, seed=seed,
                               device=device, quiet=quiet, grad_clip=10.0)
    extra = {"task": "cells", "steps": steps, "batch_size": batch_size,
             "images": [d["name"] for d in data], **scale_extra(model, data_diameter)}
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
    if model.D.requires_grad:
        trainer.optimizer.register_step_post_hook(lambda *_: model.renormalise())
    trainer.fit(resume=resume)
    model, _ = load(out, device=trainer.device, expected=CNNCS)
    calibration = calibrate(model, val_data)
    extra.update(detection={"vote_threshold": calibration["vote_threshold"]},
                 val_f1=calibration["val_f1"], history=trainer.history)
    save_checkpoint(out, model, extra=extra)
    return model, extra
