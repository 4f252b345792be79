"""Microscopy-like images with annotated target cells among lookalike clutter.

The four difficulties of the CNNCS seed (Sec. 1) are built in:
1. lookalike clutter: elongated nuclei (aspect 2.5-4), ring-shaped (hollow) objects of the
   target size, small bright debris and large faint blobs, as many as the targets;
2. appearance variation: target radius 3.5-6 px, aspect 1-1.35, orientation, intensity ±25 %,
   multiplicative texture;
3. density: cells per pixel ``density`` (Poisson number), a minimum centre distance
   ``min_distance`` (touching but not overlapping cells);
4. intensity variation: per-image stain gain 0.6-1.2, background offset plus a linear gradient
   and a low-frequency field, Gaussian read noise plus signal-dependent (shot-like) noise.

Targets are flat-topped discs with soft edges (profile sigmoid((r − d)/0.7)); the ground truth is
each target's centre (y, x) in pixels (sub-pixel). Images are returned as float32 in about
[0, 1] and written by the CLI as uint16 TIFF. ``scale`` multiplies every length (object radii,
minimum distance, texture and stamp size; density / scale²): the same scene at another
object size, e.g. scale = r / 4.75 for targets of mean radius r px.

Seed: cnncs-cell-detection-compressed-sensing.txt Sec. 1 (the four challenges), Sec. 4.2
(point annotations of cell centroids).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

STAMP = 31  # stamp side in pixels: fits the largest clutter (radius 12 plus the soft edge)


@dataclass
class CellSimConfig:
    size: int = 256
    density: float = 1 / 1400  # target cells per pixel
    clutter_ratio: float = 1.0  # clutter objects per target cell
    noise: float = 0.03  # Gaussian read-noise std (image units)
    min_distance: float = 9.0  # minimum target centre distance (pixels)
    scale: float = 1.0  # multiplies every length (target radius 3.5-6 px at 1)


def _spread_points(rng: np.random.Generator, count: int, size: int, dmin: float,
                   margin: float = 4.0) -> np.ndarray:
    """About ``count`` points in [margin, size − margin)² with no two closer than ``dmin``
    (candidates are dropped if an earlier candidate is too close)."""
    cand = rng.uniform(margin, size - margin, size=(3 * count + 8, 2))
    dist = np.sqrt(((cand[:, None] - cand[None]) ** 2).sum(-1))
    clash = np.tril(dist < dmin, k=-1).any(1)
    return cand[~clash][:count]


def _render(
    image: np.ndarray,
    centres: np.ndarray,
    radius: np.ndarray,
    aspect: np.ndarray,
    angle: np.ndarray,
    amplitude: np.ndarray,
    ring: np.ndarray,
    stamp_side: int = STAMP,
) -> None:
    """Add soft elliptical discs (or rings where ``ring``) to ``image`` in place, vectorised over
    objects: each object is a ``stamp_side``² patch (odd) added at its centre."""
    h, w = image.shape
    half = stamp_side // 2
    base = np.floor(centres).astype(int)
    frac = centres - base
    off = np.arange(stamp_side) - half
    dy = off[None, :, None] - frac[:, 0, None, None]
    dx = off[None, None, :] - frac[:, 1, None, None]
    c, s = np.cos(angle)[:, None, None], np.sin(angle)[:, None, None]
    u = (c * dy + s * dx) / aspect[:, None, None]
    v = -s * dy + c * dx
    d = np.sqrt(u**2 + v**2)
    r = radius[:, None, None]
    edge = 0.7 * max(1.0, half / (STAMP // 2))  # soft edge width, scaled with the stamp
    disc = 1.0 / (1.0 + np.exp(-(r - d) / edge))
    hollow = disc - 0.85 / (1.0 + np.exp(-(0.55 * r - d) / edge))
    stamp = np.where(ring[:, None, None], hollow, disc) * amplitude[:, None, None]
    rows = base[:, 0, None, None] + off[None, :, None]
    cols = base[:, 1, None, None] + off[None, None, :]
    rows, cols = np.broadcast_to(rows, stamp.shape), np.broadcast_to(cols, stamp.shape)
    inside = (rows >= 0) & (rows < h) & (cols >= 0) & (cols < w)
    np.add.at(image, (rows[inside], cols[inside]), stamp[inside])


def simulate_image(
    rng: np.random.Generator, config: CellSimConfig | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """One image -> (image (size, size) float32, target centres (N, 2) float64 as (y, x))."""
    cfg = config or CellSimConfig()
    size, k = cfg.size, cfg.scale
    n_target = rng.poisson(cfg.density * size * size / k**2)
    centres = _spread_points(rng, n_target, size, cfg.min_distance * k, 4 * k)
    n_target = len(centres)
    n_clutter = rng.poisson(cfg.clutter_ratio * max(n_target, 1))
    kind = rng.integers(0, 4, n_clutter)  # 0 elongated, 1 ring, 2 debris, 3 faint blob
    clutter = rng.uniform(0, size, size=(n_clutter, 2))

    gain = rng.uniform(0.6, 1.2)
    radius = np.concatenate(
        [
            rng.uniform(3.5, 6.0, n_target),
            np.choose(
                kind,
                [
                    rng.uniform(3.0, 4.5, n_clutter),
                    rng.uniform(3.5, 6.0, n_clutter),
                    rng.uniform(1.2, 2.2, n_clutter),
                    rng.uniform(8.0, 12.0, n_clutter),
                ],
            ),
        ]
    )
    aspect = np.concatenate(
        [rng.uniform(1.0, 1.35, n_target), np.where(kind == 0, rng.uniform(2.5, 4.0, n_clutter), 1.0)]
    )
    amplitude = gain * np.concatenate(
        [
            rng.uniform(0.75, 1.25, n_target) * 0.6,
            np.choose(
                kind,
                [
                    rng.uniform(0.45, 0.75, n_clutter),
                    rng.uniform(0.45, 0.75, n_clutter),
                    rng.uniform(0.6, 1.0, n_clutter),
                    rng.uniform(0.15, 0.3, n_clutter),
                ],
            ),
        ]
    )
    ring = np.concatenate([np.zeros(n_target, bool), kind == 1])
    angle = rng.uniform(0, np.pi, n_target + n_clutter)

    image = np.zeros((size, size))
    stamp_side = 2 * round(STAMP // 2 * max(k, 1.0)) + 1
    _render(image, np.concatenate([centres, clutter]), radius * k, aspect, angle, amplitude, ring,
            stamp_side)
    # std of white noise filtered at sigma is ∝ 1/sigma: × k keeps the contrast of scale 1
    texture = k * ndimage.gaussian_filter(rng.standard_normal((size, size)), k)
    image *= 1.0 + 0.4 * texture
    yy, xx = np.mgrid[0:size, 0:size] / size
    slope = rng.uniform(-0.2, 0.2, 2)
    low = ndimage.gaussian_filter(rng.standard_normal((size, size)), size / 8)
    low *= 0.1 / max(low.std(), 1e-12)
    background = rng.uniform(0.05, 0.2) + slope[0] * yy + slope[1] * xx + low
    image += background - background.min()
    image += rng.standard_normal(image.shape) * np.sqrt(cfg.noise**2 + 0.01 * np.clip(image, 0, None))
    return image.astype(np.float32), centres


def simulate(
    n_images: int, size: int = 256, seed: int = 0, config: CellSimConfig | None = None
) -> list[tuple[np.ndarray, np.ndarray]]:
    """``n_images`` independent images; image i uses rng seeded by (seed, i)."""
    cfg = dataclasses.replace(config or CellSimConfig(), size=size)
    return [simulate_image(np.random.default_rng([seed, i]), cfg) for i in range(n_images)]


def to_uint16(image: np.ndarray) -> np.ndarray:
    """Float image (about [0, 1]) -> uint16 with 1.0 at 40000 (headroom for bright objects)."""
    return np.clip(np.round(image * 40000.0), 0, 65535).astype(np.uint16)
