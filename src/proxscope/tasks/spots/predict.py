"""Inference: image -> secretion maps (SpotNet / ConvNet) -> detected cells and their profiles.

Detection (Seed: spotnet-fluorospot-learned-iterations.txt Sec. 4): local maxima of the temporal
mean of the K output maps (scikit-image ``peak_local_max``, 3×3 neighbourhood), score = the peak
value. Unlike the seed, the mean is first sharpened by a Laplacian-of-Gaussian filter (sigma 1
px): the learned maps are blurry and crowded cells otherwise merge into one peak. Cells with
score >= threshold are kept; the model's threshold is fixed on validation images at training
time and stored with the LoG sigma it was fitted for (:func:`proxscope.checkpoint.detection_settings`).
A cell's secretion profile is the sum of each output map over the 3×3 neighbourhood of its peak
(target units: the network output spreads a cell over a few pixels).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

TILE, OVERLAP, PAD = 576, 32, 16  # a padded 512x512 image is one tile
DETECT_SIGMA = 1.0  # px; chosen on the 3 validation images (benchmarks/spots.md)
#: input scaling (:func:`normalize`): background percentile, and the least signal range, in
#: noise standard deviations, that is mapped to the full 0..255 scale
BACKGROUND_PERCENTILE, MIN_RANGE_SIGMAS = 0.1, 100.0
NORMALIZATION = {"rule": "robust-range", "background_percentile": BACKGROUND_PERCENTILE,
                 "min_range_sigmas": MIN_RANGE_SIGMAS}


def noise_sigma(image: np.ndarray) -> float:
    """Standard deviation of white noise in an image (H, W), robust to smooth signal and to
    outliers: 1.4826·MAD of the image filtered with Immerkær's 3×3 Laplacian difference mask
    (which cancels planes and passes white noise with gain 6)."""
    from scipy.ndimage import convolve

    mask = np.array([[1, -2, 1], [-2, 4, -2], [1, -2, 1]], np.float64)
    residual = convolve(image.astype(np.float64), mask, mode="reflect")[1:-1, 1:-1]
    return float(1.4826 * np.median(np.abs(residual - np.median(residual))) / 6.0)


def normalize(image: np.ndarray) -> tuple[np.ndarray, float]:
    """Map a grey image (H, W) of any type and range to the scale the models are trained on
    -> (gain·(image − b), gain), float32. b = the 0.1 % percentile (a camera offset or an
    empty well's level goes to 0); gain = 255 / max(r, 100·sigma) with r the maximum of the
    3×3 median-filtered image minus b (one hot or dead pixel cannot change it) and sigma the
    noise level (:func:`noise_sigma`): an image whose signal spans less than 100 noise
    standard deviations (an empty well, a flat field) is not stretched to fill 0..255, so
    noise is not turned into cells. Values above the 3×3-median maximum (isolated hot pixels,
    the noise on the brightest spot) are clipped to it. Simulated images are barely changed
    (gain 1.0-1.15);
    targets and secretion profiles scale by the same gain. Invariant to bit depth and to any
    affine change of intensities."""
    from scipy.ndimage import median_filter

    image = np.asarray(image, np.float64)
    background = float(np.percentile(image, BACKGROUND_PERCENTILE))
    top = float(median_filter(image, size=3, mode="reflect").max())
    spread = max(top - background, MIN_RANGE_SIGMAS * noise_sigma(image))
    gain = 255.0 / spread if spread > 0 else 1.0
    return ((np.minimum(image, top) - background) * gain).astype(np.float32), gain


def infer(model, image: np.ndarray, device="cpu") -> np.ndarray:
    """Model output for one :func:`normalize`-d image (H, W) -> secretion maps (K, H, W)
    float32 (numpy, clipped at 0: secretion is non-negative),
    computed in overlapping 576×576 tiles (receptive field < 32 px). The image is mirrored by
    ``PAD`` px at its borders first (cropped after): the assay continues beyond the field of
    view, and zero padding would make the border look like an edge of dark background."""
    import torch
    import torch.nn.functional as F

    from ...data.tiling import tiled_apply

    x = torch.from_numpy(np.ascontiguousarray(image))[None, None].to(device)
    pad = min(PAD, image.shape[0] - 1, image.shape[1] - 1)
    with torch.no_grad():
        out = tiled_apply(model, F.pad(x, (pad,) * 4, mode="reflect"), tile=TILE, overlap=OVERLAP)
    out = out[0, :, pad : pad + image.shape[0], pad : pad + image.shape[1]].clamp_min(0)
    return out.cpu().numpy()


def detection_map(secretion: np.ndarray, sigma: float = DETECT_SIGMA) -> np.ndarray:
    """(K, H, W) -> (H, W): the temporal mean, sharpened by a Laplacian-of-Gaussian filter
    (−∇²G_sigma ⊛ mean, a standard blob detector) when sigma > 0, so that two cells a few
    pixels apart give two maxima instead of one merged blob."""
    from scipy.ndimage import gaussian_laplace

    mean = secretion.mean(0)
    return -gaussian_laplace(mean, sigma) if sigma > 0 else mean


def detect(
    secretion: np.ndarray, min_score: float = 0.0, sigma: float = DETECT_SIGMA
) -> tuple[np.ndarray, np.ndarray]:
    """Cells of secretion maps (K, H, W): positive local maxima (3×3) of :func:`detection_map`
    with a value >= ``min_score`` -> (yx (N, 2) int, scores (N,) = the map's value), sorted by
    decreasing score."""
    from skimage.feature import peak_local_max

    score_map = detection_map(secretion, sigma)
    yx = peak_local_max(score_map, min_distance=1, threshold_abs=0.0, exclude_border=False)
    scores = score_map[yx[:, 0], yx[:, 1]]
    keep = (scores > 0) & (scores >= min_score)
    order = np.argsort(-scores[keep], kind="stable")
    return yx[keep][order], scores[keep][order]


def profiles(secretion: np.ndarray, yx: np.ndarray) -> np.ndarray:
    """Per-cell secretion (N, K): each map summed over the 3×3 neighbourhood of the cell."""
    from scipy.ndimage import uniform_filter

    local = uniform_filter(secretion, size=(1, 3, 3), mode="constant") * 9.0
    return local[:, yx[:, 0], yx[:, 1]].T


def load_model(name: str, device=None) -> tuple[object, dict, object]:
    """(model, detection settings, torch device) of a bundled name or checkpoint path; raises
    :class:`UserError` when it is not a spots model."""
    from ...checkpoint import detection_settings
    from ...errors import UserError
    from ...models import load
    from ...models.base import ConfigModule
    from ...utils import resolve_device

    device = resolve_device(device)
    model, extra = load(name, device=device, expected=ConfigModule)
    if not hasattr(model.config, "n_channels"):
        raise UserError(f"{name}: not a spots model ({type(model).__name__})")
    return model, detection_settings(extra), device


def predictor(model_name: str, device=None, threshold: float | None = None,
              save_secretion: bool = False) -> Callable:
    """Load the model once -> ``run(image_path, out_dir) -> {"cells", "threshold"}``, which
    writes OUT/cells.csv (y,x,score,x_0..x_{K-1}: the profile in the image's units, as the
    simulator's x) and OUT/overlay.png (detections on the image), and with
    ``save_secretion`` OUT/secretion.tif (K, H, W float32, 4·K bytes per pixel).
    The image is scaled by :func:`normalize`; ``threshold`` None: the model's (in the
    normalised units)."""
    from ...data.io import read_image, write_image, write_points
    from ...data.transforms import prepare_image

    model, settings, device = load_model(model_name, device)
    threshold = settings["threshold"] if threshold is None else threshold

    def run(image_path: Path, out: Path) -> dict:
        image, gain = normalize(prepare_image(read_image(image_path), channels=(1,),
                                              normalize=None, source=str(image_path))[0])
        secretion = infer(model, image, device)
        yx, scores = detect(secretion, min_score=threshold, sigma=settings["sigma"])
        per_cell = profiles(secretion, yx) / gain
        columns = {"score": scores} | {f"x_{k}": per_cell[:, k] for k in range(per_cell.shape[1])}
        if save_secretion:
            write_image(out / "secretion.tif", secretion / np.float32(gain))
        write_overlay(out / "overlay.png", image, yx)
        write_points(out / "cells.csv", yx, columns)
        return {"cells": int(len(yx)), "threshold": threshold}

    return run


def write_overlay(path: Path, image: np.ndarray, yx: np.ndarray) -> Path:
    """PNG of the image (gray, 1 px per pixel) with a circle at every detected cell."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ...report import save_figure

    h, w = image.shape
    fig = plt.figure(figsize=(w / 100, h / 100), dpi=100)
    ax = fig.add_axes((0, 0, 1, 1))
    ax.imshow(image, cmap="gray", vmin=0, vmax=255)
    ax.scatter(yx[:, 1], yx[:, 0], s=12, facecolors="none", edgecolors="lime", linewidths=0.6)
    ax.set_xlim(-0.5, w - 0.5)
    ax.set_ylim(h - 0.5, -0.5)
    ax.axis("off")
    return save_figure(fig, path, dpi=100, tight=False)
