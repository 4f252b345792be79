"""Reconstruction quality: PSNR (the objective itself lives with the solvers)."""

from __future__ import annotations

import math

import numpy as np


def psnr(x: np.ndarray, reference: np.ndarray, data_range: float | None = None) -> float:
    """10·log10(range² / MSE) in dB; ``data_range`` defaults to max(reference) − min(reference)."""
    x = np.asarray(x, dtype=np.float64)
    reference = np.asarray(reference, dtype=np.float64)
    if x.shape != reference.shape:
        raise ValueError(f"shape mismatch {x.shape} vs {reference.shape}")
    if data_range is None:
        data_range = float(reference.max() - reference.min())
    mse = float(np.mean((x - reference) ** 2))
    if mse == 0:
        return math.inf
    return 10 * math.log10(data_range**2 / mse)
