"""Reading, checking and preparing SPoD stacks and PSFs.

A stack Y is (c, H, W) (a TIFF with the polarization states first, or last: see
:func:`read_stack`); a PSF is (a, b), normalised to sum 1, given as the image of a point source
(convolution convention) unless said otherwise (:func:`~proxscope.operators.spod.psf_kernel`).

Before recovery a stack is preprocessed (:func:`preprocess`) and divided by one scale s (its
99.9th percentile), so that λ means the same for every acquisition; recovered images are
multiplied back by s. Eq. (3) has no background term, so the default preprocessing removes it:
hot pixels are replaced by their neighbours' median, then each polarization image's background
level (a sigma-clipped median) is subtracted. The seed's filters (median 5, then minimum 7) are
kept as ``'seed'``: the minimum filter *replaces* the image by its background (it keeps 13 % of
the signal mass of a simulated stack and 3 % of an isolated dot's peak), which the non-negative
lasso then rebuilds out of x as a lattice or a haze (issue 15).

Seed: spodnet-lista-spod-microscopy.txt Sec. 5 (Dataset: median 5 then minimum 7), Sec. 5.1
(training crops with random flips).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ...data.io import read_image
from ...data.transforms import random_crop_rot_flip
from ...errors import UserError
from ...operators.spod import noise_sigma, psf_kernel

MEDIAN_SIZE = 5
MINIMUM_SIZE = 7
PREPROCESSING = ("background", "seed", "none")
HOT_PIXEL_SIGMAS = 5.0
CLIP_SIGMAS = 3.0
AXES = ("auto", "CYX", "YXC")


def _sigma(image: np.ndarray) -> float:
    """Robust noise σ of an image or stack (:func:`~proxscope.operators.spod.noise_sigma`)."""
    import torch

    return noise_sigma(torch.from_numpy(np.ascontiguousarray(image)))


def remove_hot_pixels(image: np.ndarray, sigma: float) -> np.ndarray:
    """Replace hot pixels of one image (H, W) by the median of their 8 neighbours. A hot pixel
    exceeds its brightest neighbour by more than HOT_PIXEL_SIGMAS·σ *and* by more than twice
    its neighbours' range: a PSF-blurred signal rises over several pixels and is kept (a
    noise-free dot keeps its peak), a single-pixel spike is not."""
    from scipy import ndimage

    ring = np.ones((3, 3), bool)
    ring[1, 1] = False
    high = ndimage.maximum_filter(image, footprint=ring, mode="nearest")
    low = ndimage.minimum_filter(image, footprint=ring, mode="nearest")
    jump = image - high
    hot = (jump > HOT_PIXEL_SIGMAS * sigma) & (jump > 2 * (high - low))
    if not hot.any():
        return image
    out = image.copy()
    out[hot] = ndimage.median_filter(image, footprint=ring, mode="nearest")[hot]
    return out


def background_level(image: np.ndarray, sigma: float, n_iter: int = 20) -> float:
    """Background of one image (H, W): the median of the pixels below median + CLIP_SIGMAS·σ,
    repeated until it stops moving (a sigma-clipped median; bright structures are left out)."""
    level = float(np.median(image))
    for _ in range(n_iter):
        new = float(np.median(image[image <= level + CLIP_SIGMAS * sigma]))
        if new == level:
            break
        level = new
    return level


def preprocess(stack: np.ndarray, mode: str = "background") -> np.ndarray:
    """Preprocess each polarization image of a stack (c, H, W) -> float32 (c, H, W).

    'background' (default): hot pixels replaced (:func:`remove_hot_pixels`), then each image's
    background level (:func:`background_level`) subtracted; a flat image becomes 0. 'seed': the
    seed's median 5 then minimum 7 filters. 'none': unchanged."""
    from scipy import ndimage

    if mode not in PREPROCESSING:
        raise UserError(f"preprocessing must be one of {', '.join(PREPROCESSING)}, got {mode!r}")
    out = np.asarray(stack, dtype=np.float32)
    if mode == "seed":
        out = ndimage.median_filter(out, size=(1, MEDIAN_SIZE, MEDIAN_SIZE), mode="nearest")
        return ndimage.minimum_filter(out, size=(1, MINIMUM_SIZE, MINIMUM_SIZE), mode="nearest")
    if mode == "none":
        return out
    images = []
    for image in out:
        sigma = _sigma(image)
        image = remove_hot_pixels(image, sigma)
        images.append(image - background_level(image, sigma))
    return np.stack(images).astype(np.float32)


def stack_layout(shape: tuple[int, ...], axes: str = "auto", channels: int | None = None) -> str:
    """'CYX' or 'YXC' for an array of ``shape`` (3-D). ``axes`` 'CYX'/'YXC' is taken as given;
    'auto': the end axis whose length is ``channels`` (the expected number of polarization
    states) when exactly one end axis matches, else the end axis that is shorter than the other
    two (a count that then differs from ``channels`` is reported by the caller). Raises
    :class:`UserError` naming the shape when it cannot tell."""
    if axes not in AXES:
        raise UserError(f"--axes must be one of {', '.join(AXES)}, got {axes!r}")
    if axes != "auto":
        return axes
    if channels is not None:
        matches = [name for name, n in (("CYX", shape[0]), ("YXC", shape[-1])) if n == channels]
        if len(matches) == 1:
            return matches[0]
    shorter = [name for name, n, rest in (("CYX", shape[0], shape[1:]), ("YXC", shape[-1], shape[:2]))
               if n < min(rest)]
    if len(shorter) == 1:
        return shorter[0]
    expected = f"{channels} polarization states" if channels else "one axis shorter than the others"
    raise UserError(f"cannot tell the polarization axis of a stack of shape {tuple(shape)} "
                    f"(expected {expected} first or last); give --axes CYX or --axes YXC")


def read_stack(path: str | Path, axes: str = "auto", channels: int | None = None) -> np.ndarray:
    """Read an observation stack as float32 (c, H, W), values unchanged: a multi-page TIFF or an
    image whose polarization axis is first (CYX) or last (YXC), told apart by
    :func:`stack_layout` (``channels``: the expected count, e.g. the model's). One-line
    UserError for a wrong layout, NaN/Inf, fewer than 2 channels or an image under 8 x 8."""
    stack = np.asarray(read_image(path))
    if stack.ndim != 3:
        raise UserError(f"{path}: a SPoD stack must be 3-D (polarization states × H × W), got "
                        f"shape {stack.shape}")
    if stack.dtype == bool or not (np.issubdtype(stack.dtype, np.integer)
                                   or np.issubdtype(stack.dtype, np.floating)):
        raise UserError(f"{path}: unsupported pixel type {stack.dtype}")
    if stack_layout(stack.shape, axes, channels) == "YXC":
        stack = np.moveaxis(stack, -1, 0)
    if stack.shape[0] < 2:
        raise UserError(f"{path}: a SPoD stack needs at least 2 polarization channels, got "
                        f"shape {stack.shape}")
    if min(stack.shape[1:]) < 8:
        raise UserError(f"{path}: image {stack.shape[1]}x{stack.shape[2]} is too small (at least 8x8)")
    if not np.isfinite(stack).all():
        raise UserError(f"{path}: image contains NaN or Inf values")
    return np.ascontiguousarray(stack, dtype=np.float32)


def read_psf(path: str | Path, convention: str = "convolution") -> np.ndarray:
    """Read a PSF image (a, b) (a (1, a, b) TIFF is accepted), normalised to sum 1, and return
    the correlation kernel φ of eq. (3) for it (:func:`~proxscope.operators.spod.psf_kernel`:
    flipped for the default 'convolution' convention, a measured PSF)."""
    psf = read_image(path)
    if psf.ndim == 3 and psf.shape[0] == 1:
        psf = psf[0]
    if psf.ndim != 2:
        raise UserError(f"{path}: a PSF must be a 2-D image, got shape {psf.shape}")
    psf = psf.astype(np.float64)
    if not np.isfinite(psf).all():
        raise UserError(f"{path}: the PSF contains NaN or Inf values")
    total = psf.sum()
    if total <= 0:
        raise UserError(f"{path}: the PSF sums to {total:g}; it must be positive")
    return psf_kernel((psf / total).astype(np.float32), convention)


def load_directory(path: str | Path, axes: str = "auto") -> tuple[np.ndarray, np.ndarray]:
    """(observation, correlation kernel) from a simulate-style folder DIR/observation.tif +
    DIR/psf.tif (the PSF in the convolution convention)."""
    path = Path(path)
    if not path.is_dir():
        raise UserError(f"data folder not found: {path}")
    return read_stack(path / "observation.tif", axes), read_psf(path / "psf.tif")


@dataclass
class Prepared:
    """A stack ready for recovery: y (c, H, W) normalised, the scale s it was divided by, and
    the noise σ of the raw stack in units of y (for :func:`~proxscope.operators.spod.noise_lam`;
    measured before preprocessing, which can flatten the noise: the seed's minimum filter)."""

    y: np.ndarray
    scale: float
    sigma: float


def prepare(stack: np.ndarray, preprocessing: str = "background") -> Prepared:
    """Preprocess (:func:`preprocess`, ``preprocessing`` one of PREPROCESSING) and normalise a
    stack (c, H, W) for recovery: y = stack / s with s its 99.9th percentile (1 for a blank
    stack, or one without positive values)."""
    y = preprocess(stack, preprocessing)
    scale = float(np.percentile(y, 99.9))
    scale = scale if scale > 0 else 1.0
    return Prepared((y / scale).astype(np.float32), scale, _sigma(stack) / scale)


def random_crops(
    stacks: list[np.ndarray], n: int, size: int, rng: np.random.Generator
) -> np.ndarray:
    """n random size×size crops, each from a random stack, flipped vertically and/or
    horizontally with probability 1/2 each: the seed's augmentation (Sec. 5.1), which has no
    90° turns (:func:`random_crop_rot_flip` crops only): (n, c, size, size) float32."""
    out = []
    for _ in range(n):
        stack = stacks[rng.integers(len(stacks))]
        if min(stack.shape[-2:]) < size:
            hh, ww = stack.shape[-2:]
            raise UserError(f"observation {hh}x{ww} is smaller than the crop size {size}")
        crop = random_crop_rot_flip(rng, stack, size, augment=False)[0]
        if rng.random() < 0.5:
            crop = crop[:, ::-1]
        if rng.random() < 0.5:
            crop = crop[:, :, ::-1]
        out.append(crop)
    return np.ascontiguousarray(np.stack(out), dtype=np.float32)
