"""Fundus datasets for training and evaluation: photographs + image labels (+ lesion masks),
preprocessed once (seed Sec. 5.1.1) and kept in memory as the network's canvas.

A dataset folder is what ``retina simulate`` writes: ``images/NAME.png|jpg|tif``,
``labels.csv`` (``image,referable`` [+ ``grade``]) and, optionally, ``lesions/NAME.tif``
(lesion type per pixel, 0 none, 1 microaneurysm, 2 haemorrhage, 3 hard exudate, 4 cotton-wool
spot) for the lesion-level validation.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ...data.fundus import mask_to_canvas, preprocess_fundus
from ...data.io import IMAGE_SUFFIXES, read_image
from ...errors import UserError


@dataclass
class FundusSet:
    """``images`` (N, 3, S, S) float32 preprocessed canvases; ``labels`` (N,) float32 referable
    0/1; ``masks`` (N, S, S) uint8 lesion types on the canvas, or None; ``fov`` (N, S, S) bool
    eroded fields of view; ``names`` (N,) image names."""

    names: list[str]
    images: np.ndarray
    labels: np.ndarray
    masks: np.ndarray | None
    fov: np.ndarray

    def subset(self, index) -> FundusSet:
        index = np.asarray(index)
        masks = None if self.masks is None else self.masks[index]
        return FundusSet([self.names[i] for i in index], self.images[index], self.labels[index],
                         masks, self.fov[index])


def read_labels(path: str | Path) -> dict[str, float]:
    """``labels.csv`` -> {image name (no suffix): referable 0/1}. UserError for a missing file,
    a missing column or a value other than 0/1."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"labels file not found: {path}")
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows or not {"image", "referable"} <= set(rows[0]):
        raise UserError(f"{path}: expected columns 'image,referable' (+ 'grade')")
    labels = {}
    for row in rows:
        value = row["referable"].strip().lower()
        if value not in ("0", "1", "true", "false"):
            raise UserError(f"{path}: referable must be 0 or 1, got {row['referable']!r} for {row['image']}")
        labels[Path(row["image"]).stem] = float(value in ("1", "true"))
    return labels


def load_set(images: str | Path, labels: str | Path, lesions: str | Path | None, size: int,
             quiet: bool = True) -> FundusSet:
    """Read and preprocess every labelled photograph in folder ``images`` to a ``size`` canvas
    (FOV width = ``size``); lesion masks from folder ``lesions`` when given."""
    from tqdm.auto import tqdm

    images = Path(images)
    if not images.is_dir():
        raise UserError(f"images folder not found: {images}")
    table = read_labels(labels)
    files = sorted(p for p in images.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.stem in table)
    if len(files) < 2:
        raise UserError(f"{images}: fewer than 2 images have a label in {labels}")
    names, canvases, masks, fovs = [], [], [], []
    for path in tqdm(files, desc="preprocess", disable=quiet, unit="image"):
        pre = preprocess_fundus(read_image(path), fov_width=size)
        names.append(path.stem)
        canvases.append(pre.image)
        fovs.append(pre.fov_mask)
        if lesions is not None:
            mask_path = Path(lesions) / f"{path.stem}.tif"
            masks.append(mask_to_canvas(read_image(mask_path), pre.geometry))
    return FundusSet(names, np.stack(canvases), np.array([table[n] for n in names], np.float32),
                     np.stack(masks) if lesions is not None else None, np.stack(fovs))


def split(n: int, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(train, validation) indices: a seeded random ``val_fraction`` of ``n`` (at least 1 each)."""
    order = np.random.default_rng(seed).permutation(n)
    n_val = min(max(1, round(val_fraction * n)), n - 1)
    return np.sort(order[n_val:]), np.sort(order[:n_val])
