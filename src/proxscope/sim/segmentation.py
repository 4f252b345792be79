"""White-blood-cell-like phantoms with ground-truth masks, and the noise of the robustness test.

A phantom imitates a stained blood smear (the WBC dataset of the seed, Sec. 4.1): a light,
unevenly lit background; red blood cells (pink discs with a paler centre, partly overlapping);
one white blood cell made of a pale violet cytoplasm with a wavy outline and a dark purple
nucleus of 1-4 lobes; granular stain texture and a slight optical blur.
Classes: 0 background (red cells included), 1 cytoplasm, 2 nucleus.

Images are float32 (H, W, 3) in [0, 1]; masks uint8 (H, W). Noise (seed Sec. 4): Gaussian with
standard deviation sigma on the [0, 1] scale, and salt-and-pepper changing a fraction of the
pixels to black or white (all channels), both clipped to [0, 1].
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

CLASSES = ("background", "cytoplasm", "nucleus")

BACKGROUND_RGB = np.array([0.92, 0.86, 0.84])
RED_CELL_RGB = np.array([0.86, 0.56, 0.58])
CYTOPLASM_RGB = np.array([0.78, 0.70, 0.86])
NUCLEUS_RGB = np.array([0.42, 0.24, 0.55])


def _star_shapes(size, centers, radii, rng, wobble=0.08, harmonics=5, edge=1.0):
    """Soft indicator (n, H, W) in [0, 1] of star-shaped regions
    r(theta) = r0·(1 + sum_k a_k cos(k·theta + phi_k)), k = 2..harmonics, edge width ``edge`` px."""
    n = len(centers)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64)
    dy = yy[None] - centers[:, 0, None, None]
    dx = xx[None] - centers[:, 1, None, None]
    dist = np.hypot(dy, dx)
    theta = np.arctan2(dy, dx)
    k = np.arange(2, harmonics + 1)
    amp = rng.uniform(0, wobble, (n, len(k))) / np.sqrt(k)
    phase = rng.uniform(0, 2 * np.pi, (n, len(k)))
    waves = np.cos(k[None, :, None, None] * theta[:, None] + phase[:, :, None, None])
    radius = radii[:, None, None] * (1 + (amp[:, :, None, None] * waves).sum(1))
    return np.clip((radius - dist) / edge + 0.5, 0, 1), dist / radius


def _smooth_field(size, sigma, rng):
    """A zero-mean, unit-std smooth random field (H, W)."""
    field = ndimage.gaussian_filter(rng.standard_normal((size, size)), sigma, mode="wrap")
    return field / max(field.std(), 1e-12)


def simulate_wbc(size: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """One phantom: (image float32 (size, size, 3) in [0, 1], mask uint8 (size, size))."""
    scale = size / 128.0
    # White cell: cytoplasm outline and nucleus lobes inside it.
    center = rng.uniform(0.3, 0.7, 2) * size
    r_cyto = rng.uniform(25, 36) * scale
    cyto, rel = _star_shapes(size, center[None], np.array([r_cyto]), rng, wobble=0.12, edge=scale)
    n_lobes = rng.integers(1, 5)
    offsets = rng.standard_normal((n_lobes, 2)) * 0.3 * r_cyto
    lobe_centers = center + np.clip(offsets, -0.4 * r_cyto, 0.4 * r_cyto)
    lobe_radii = rng.uniform(0.35, 0.55, n_lobes) * r_cyto / np.sqrt(n_lobes) ** 0.5
    lobes, _ = _star_shapes(size, lobe_centers, lobe_radii, rng, wobble=0.15, edge=scale)
    inner = np.clip((0.85 - rel[0]) * r_cyto / scale + 0.5, 0, 1)  # keep a rim of cytoplasm
    nucleus = np.minimum(lobes.max(0), inner)
    cyto = cyto[0]
    # Red cells: discs with a pale centre, away from the white cell's centre.
    n_red = rng.poisson(14 * scale**2 * rng.uniform(0.6, 1.4))
    red_centers = rng.uniform(-0.05, 1.05, (max(n_red, 1), 2)) * size
    keep = np.hypot(*(red_centers - center).T) > 0.8 * r_cyto
    red_centers = red_centers[keep][:n_red]
    red_radii = rng.uniform(9, 13, len(red_centers)) * scale
    if len(red_centers):
        red, rel = _star_shapes(size, red_centers, red_radii, rng, wobble=0.05, edge=scale)
        pallor = np.clip(1 - rel / 0.55, 0, 1) * red
        red, pallor = red.max(0), pallor.max(0)
    else:
        red = pallor = np.zeros((size, size))
    # Colours with stain texture and uneven illumination.
    texture = _smooth_field(size, 1.2 * scale, rng)[..., None]
    light = 1 + 0.04 * _smooth_field(size, 30 * scale, rng)[..., None]
    shade = rng.normal(0, 0.03, 3)
    image = np.broadcast_to(BACKGROUND_RGB, (size, size, 3)).copy()
    image = _paint(image, red[..., None], RED_CELL_RGB + 0.5 * shade + 0.015 * texture)
    image = _paint(image, 0.35 * pallor[..., None], BACKGROUND_RGB)
    image = _paint(image, cyto[..., None], CYTOPLASM_RGB + shade + 0.03 * texture)
    image = _paint(image, nucleus[..., None], NUCLEUS_RGB + shade + 0.05 * texture)
    image = ndimage.gaussian_filter(image * light, (0.7 * scale, 0.7 * scale, 0))
    mask = np.zeros((size, size), np.uint8)
    mask[cyto >= 0.5] = 1
    mask[nucleus >= 0.5] = 2
    return np.clip(image, 0, 1).astype(np.float32), mask


def _paint(image, alpha, colour):
    return (1 - alpha) * image + alpha * colour


def simulate_dataset(n_images: int, size: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``n_images`` phantoms: images (N, size, size, 3) float32, masks (N, size, size) uint8.
    Image i depends only on (seed, i)."""
    pairs = [simulate_wbc(size, np.random.default_rng([seed, i])) for i in range(n_images)]
    return np.stack([p[0] for p in pairs]), np.stack([p[1] for p in pairs])


def gaussian_noise(image: np.ndarray, sigma: float, rng: np.random.Generator) -> np.ndarray:
    """image + N(0, sigma^2) per pixel and channel, clipped to [0, 1] (seed Sec. 4.1)."""
    return np.clip(image + rng.normal(0, sigma, image.shape), 0, 1).astype(np.float32)


def salt_and_pepper(image: np.ndarray, ratio: float, rng: np.random.Generator) -> np.ndarray:
    """Set a fraction ``ratio`` of the pixels (all channels) to 0 or 1 with equal chance.
    ``image``: (H, W) or (H, W, C) in [0, 1]."""
    out = np.array(image, dtype=np.float32, copy=True)
    hit = rng.random(out.shape[:2]) < ratio
    out[hit] = rng.integers(0, 2, int(hit.sum())).astype(np.float32).reshape(
        -1, *([1] * (out.ndim - 2))
    )
    return out


def add_noise(image: np.ndarray, kind: str, level: float, rng: np.random.Generator) -> np.ndarray:
    """``kind`` 'gaussian' (level = sigma), 'salt_pepper' (level = ratio) or 'clean'."""
    if kind == "clean" or level == 0:
        return np.asarray(image, dtype=np.float32)
    if kind == "gaussian":
        return gaussian_noise(image, level, rng)
    if kind == "salt_pepper":
        return salt_and_pepper(image, level, rng)
    raise ValueError(f"unknown noise kind {kind!r}")
