"""Reading, checking and preparing SPoD stacks and PSFs.

A stack Y is (c, H, W) (a TIFF with the polarization states first); a PSF is (a, b). Before
recovery a stack is preprocessed as in the seed's experiments (median filter 5 against hot
pixels, then minimum filter 7 against the background, per polarization image) and divided by
one scale s (its 99.9th percentile), so that λ means the same for every acquisition; recovered
images are multiplied back by s. The PSF is normalised to sum 1.

Seed: spodnet-lista-spod-microscopy.txt Sec. 5 (Dataset: median 5 then minimum 7), Sec. 5.1
(training crops with random flips).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ...data.io import read_image
from ...data.transforms import prepare_image, random_crop_rot_flip
from ...errors import UserError

MEDIAN_SIZE = 5
MINIMUM_SIZE = 7


def preprocess(stack: np.ndarray, median: int = MEDIAN_SIZE, minimum: int = MINIMUM_SIZE) -> np.ndarray:
    """Median filter then minimum filter of each polarization image (c, H, W) -> (c, H, W).
    A size of 0 or 1 skips that filter."""
    from scipy import ndimage

    out = np.asarray(stack, dtype=np.float32)
    if median > 1:
        out = ndimage.median_filter(out, size=(1, median, median), mode="nearest")
    if minimum > 1:
        out = ndimage.minimum_filter(out, size=(1, minimum, minimum), mode="nearest")
    return out


def read_stack(path: str | Path) -> np.ndarray:
    """Read an observation (multi-page TIFF (c, H, W), or an RGB(A) image as 3 (4) channels) as
    float32 (c, H, W), values unchanged; one-line UserError for a wrong layout, NaN/Inf, fewer
    than 2 channels or an image under 8 x 8."""
    stack = prepare_image(read_image(path), channels=None, normalize=None, source=str(path))
    if stack.shape[0] < 2:
        raise UserError(f"{path}: a SPoD stack needs at least 2 polarization channels, got "
                        f"shape {stack.shape}")
    return stack


def read_psf(path: str | Path) -> np.ndarray:
    """Read a PSF image (a, b) (a (1, a, b) TIFF is accepted), normalised to sum 1."""
    psf = read_image(path)
    if psf.ndim == 3 and psf.shape[0] == 1:
        psf = psf[0]
    if psf.ndim != 2:
        raise UserError(f"{path}: a PSF must be a 2-D image, got shape {psf.shape}")
    psf = psf.astype(np.float64)
    total = psf.sum()
    if total <= 0:
        raise UserError(f"{path}: the PSF sums to {total:g}; it must be positive")
    return (psf / total).astype(np.float32)


def load_directory(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """(observation, psf) from a simulate-style folder DIR/observation.tif + DIR/psf.tif."""
    path = Path(path)
    if not path.is_dir():
        raise UserError(f"data folder not found: {path}")
    return read_stack(path / "observation.tif"), read_psf(path / "psf.tif")


@dataclass
class Prepared:
    """A stack ready for recovery: y (c, H, W) normalised, and the scale s it was divided by."""

    y: np.ndarray
    scale: float


def prepare(stack: np.ndarray, preprocessing: bool = True) -> Prepared:
    """Preprocess (optional) and normalise a stack (c, H, W) for recovery: y = stack / s with
    s its 99.9th percentile (1 for an all-zero or negative stack)."""
    y = preprocess(stack) if preprocessing else np.asarray(stack, np.float32)
    scale = float(np.percentile(y, 99.9))
    scale = scale if scale > 0 else 1.0
    return Prepared((y / scale).astype(np.float32), scale)


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
