"""Simulated FluoroSpot data sets on disk: one folder per image.

Folder layout (written by :func:`write_sample`, read by :func:`read_sample`):
  image.tif    (H, W) float32 in [0, 255]
  target.tif   (K, H, W) float32 secretion maps x_k, same normalisation as the image
  cells.csv    y,x,total_secretion (+ x_0..x_{K-1}: each cell's code in target units)
  kernels.tif  (K, kh, kw) float32 kernels g_k (before the optical blur)
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ...data.io import read_image, read_points, write_image, write_points
from ...errors import UserError
from ...sim.fluorospot import FluoroSpotConfig, FluoroSpotSample, codes_operator, make_kernels
from ...sim.fluorospot import simulate as simulate_sample


def write_sample(out: str | Path, sample: FluoroSpotSample) -> Path:
    """Write one simulated image and its ground truth to folder ``out`` (atomic files)."""
    out = Path(out)
    columns = {"total_secretion": sample.totals}
    columns |= {f"x_{k}": sample.secretion[:, k] for k in range(sample.secretion.shape[1])}
    write_image(out / "kernels.tif", sample.kernels)
    write_image(out / "target.tif", sample.target)
    write_points(out / "cells.csv", sample.cells_yx, columns)
    write_image(out / "image.tif", sample.image)
    return out


def simulate_dirs(config: FluoroSpotConfig, seeds: list[int], root: str | Path) -> list[Path]:
    """Simulate one image per seed into ``root/<seed>/`` (kernels computed once)."""
    kernels, operator = make_kernels(config), codes_operator(config)
    return [
        write_sample(
            Path(root) / f"{seed:04d}",
            simulate_sample(config, np.random.default_rng(seed), kernels, operator),
        )
        for seed in seeds
    ]


def read_sample(folder: str | Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(image (H, W) float32, target (K, H, W) float32, cells_yx (N, 2)) of a simulated folder."""
    folder = Path(folder)
    if not folder.is_dir():
        raise UserError(f"data folder not found: {folder}")
    image = read_image(folder / "image.tif").astype(np.float32)
    target = read_image(folder / "target.tif").astype(np.float32)
    cells, _ = read_points(folder / "cells.csv")
    if image.ndim != 2 or target.ndim != 3 or target.shape[1:] != image.shape:
        raise UserError(
            f"{folder}: image {image.shape} and target {target.shape} do not match "
            "(expected (H, W) and (K, H, W))"
        )
    return image, target, cells
