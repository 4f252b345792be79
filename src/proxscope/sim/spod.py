"""SPoD polarization-stack simulator with ground truth.

A sparse image x (c, S+P−1, S+P−1) holds filaments (smooth random curves, one pixel wide, each
pixel in the orientation channel k of its local tangent, k·π/c ≈ angle) and isolated dots (a
random orientation each). The observation is the valid SPoD model of eq. (3),
y_t = Σ_k φ ∗ x_k · cos²((t−k)π/c), plus a flat background, Poisson (shot) noise and Gaussian
read noise. The PSF is an Airy pattern (slightly elliptical, with a faint noise floor like a
bead measurement) or a Gaussian; it depends only on its parameters, not on the seed, so every
simulated stack with the default parameters shares the PSF the bundled SPoD-Net was trained for.

Seed: spodnet-lista-spod-microscopy.txt eq. (3).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

PSF_KINDS = ("airy", "gaussian")


@dataclass
class SPoDSimConfig:
    """size: observation height = width (px); the truth is size + psf_size − 1 px wide.
    psf_width: Airy first-zero radius or 2·Gaussian sigma (px). photons: expected count at the
    brightest clean pixel. background and read_noise: fractions of that brightest pixel."""

    size: int = 96
    channels: int = 18
    psf_size: int = 32
    psf_kind: str = "airy"
    psf_width: float = 5.0
    n_filaments: int = 8
    n_dots: int = 25
    photons: float = 400.0
    background: float = 0.03
    read_noise: float = 0.01


def make_psf(size: int = 32, kind: str = "airy", width: float = 5.0) -> np.ndarray:
    """PSF φ (size, size), float32, non-negative, sum 1, peak at the centre.

    'airy': (2·J1(v)/v)² with v = 3.8317·r/width (first dark ring at r = width px), stretched 10%
    along one diagonal (mild astigmatism) plus a faint non-negative noise floor (fixed seed), as
    a bead measurement looks. 'gaussian': exp(−r²/(2σ²)) with σ = width/2.
    """
    from scipy.special import j1

    if kind not in PSF_KINDS:
        raise ValueError(f"psf kind must be one of {PSF_KINDS}, got {kind!r}")
    centre = (size - 1) / 2
    yy, xx = np.mgrid[0:size, 0:size] - centre
    if kind == "gaussian":
        psf = np.exp(-(yy**2 + xx**2) / (2 * (width / 2) ** 2))
    else:
        u, v = (yy + xx) / np.sqrt(2), (yy - xx) / np.sqrt(2)
        r = np.sqrt((u / 1.1) ** 2 + v**2)
        arg = 3.8317 * np.maximum(r, 1e-9) / width
        psf = (2 * j1(arg) / arg) ** 2
        floor = np.random.default_rng(0).normal(0.0, 2e-3, psf.shape)
        psf = np.clip(psf + floor, 0, None)
    return (psf / psf.sum()).astype(np.float32)


def make_truth(shape: tuple[int, int], channels: int, n_filaments: int, n_dots: int,
               rng: np.random.Generator) -> np.ndarray:
    """Sparse non-negative x (channels, H, W): filaments + dots (see the module docstring)."""
    hh, ww = shape
    x = np.zeros((channels, hh, ww), np.float32)
    n_steps = 2 * max(hh, ww)
    # Filaments: random-walk curvature, 0.5 px steps, lengths 20 px .. half the image.
    start = rng.uniform([0, 0], [hh, ww], size=(n_filaments, 2))
    turn = rng.normal(0.0, 0.04, size=(n_filaments, n_steps))
    angle = rng.uniform(0, np.pi * 2, size=(n_filaments, 1)) + np.cumsum(turn, axis=1)
    path = start[:, None, :] + 0.5 * np.cumsum(np.stack([np.sin(angle), np.cos(angle)], -1), 1)
    length = rng.uniform(40, max(41, n_steps // 2), size=(n_filaments, 1))
    keep = np.arange(n_steps)[None, :] < length
    rows, cols = np.rint(path[..., 0]).astype(int), np.rint(path[..., 1]).astype(int)
    keep &= (rows >= 0) & (rows < hh) & (cols >= 0) & (cols < ww)
    orient = np.rint(np.mod(angle, np.pi) / (np.pi / channels)).astype(int) % channels
    value = np.broadcast_to(rng.uniform(0.5, 1.0, size=(n_filaments, 1)), keep.shape)
    # One value per (channel, pixel): several samples of the same filament land on one pixel.
    np.maximum.at(x, (orient[keep], rows[keep], cols[keep]), value[keep])
    # Dots: random pixel, random orientation.
    k = rng.integers(0, channels, n_dots)
    r, c = rng.integers(0, hh, n_dots), rng.integers(0, ww, n_dots)
    np.maximum.at(x, (k, r, c), rng.uniform(0.5, 1.5, n_dots).astype(np.float32))
    return x


def forward_model(x: np.ndarray, psf: np.ndarray) -> np.ndarray:
    """Clean observation a_t ∗ x of eq. (3) for a PSF in the convolution convention (the image
    of a point source; its correlation kernel φ is the PSF flipped):
    (c, H, W) -> (c, H−a+1, W−b+1), float32."""
    import torch

    from ..operators.spod import SPoDConv, psf_kernel

    op = SPoDConv.from_psf(psf_kernel(torch.from_numpy(psf).double()), x.shape[0])
    with torch.no_grad():
        return op(torch.from_numpy(x).double()[None])[0].float().numpy()


def simulate(config: SPoDSimConfig, seed: int = 0) -> dict[str, np.ndarray]:
    """One stack: {'observation' (c, S, S), 'psf' (P, P), 'truth' (c, S+P−1, S+P−1)}, float32;
    'psf' is the image of a point source (convolution convention, as a bead measurement)."""
    if config.size < 1 or config.channels < 2 or config.psf_size < 1:
        raise ValueError("size >= 1, channels >= 2 and psf_size >= 1 are required")
    rng = np.random.default_rng(seed)
    psf = make_psf(config.psf_size, config.psf_kind, config.psf_width)
    side = config.size + config.psf_size - 1
    truth = make_truth((side, side), config.channels, config.n_filaments, config.n_dots, rng)
    clean = forward_model(truth, psf)
    peak = float(clean.max()) or 1.0
    expected = config.photons * (clean / peak + config.background)
    counts = rng.poisson(expected).astype(np.float64) / config.photons
    noisy = peak * (counts + rng.normal(0.0, config.read_noise, clean.shape))
    return {"observation": noisy.astype(np.float32), "psf": psf, "truth": truth}
