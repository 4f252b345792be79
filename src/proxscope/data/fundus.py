"""Fundus photograph preprocessing (seed: deep-image-mining-retinopathy-heatmaps.txt Sec. 5.1.1,
after B. Graham's min-pooling solution).

1. Field of view (FOV): the photograph (any size, FOV anywhere, possibly cut by the frame) is
   reduced to at most ~512 px, the brightest channel is smoothed and thresholded at 10 % of its
   99th percentile, the largest connected component (after a small opening, holes filled) is
   the FOV. A circle is fitted by least squares to its rim, leaving out rim pixels on the frame
   border (so a FOV cut by the frame is handled) and outliers (notches); without a rim (the FOV
   fills the frame) the extents give centre and radius.
2. Crop and resize: the square box of side 2·radius·canvas/fov_width around the centre (zero
   padded where it leaves the photograph) is resized (anti-aliased) to ``canvas`` x ``canvas``
   pixels, so the FOV is ``fov_width`` px wide (seed: 512; the networks use 448).
3. Background: I_b = Gaussian filter of each channel with std 8.5·fov_width/512 px (the seed's
   8.5 px at 512); I_n = 4 (I_r − I_b), with I_r on the [0, 1] scale.
4. The FOV, eroded by 5 % of its width (the seed's "eroded by 5 %"; Graham's mask of 0.9 times
   the radius), keeps I_n; outside it I_n = 0. The erosion (3 sigma of the background filter)
   also removes the bright/dark ring the filter leaves along the rim.

``FundusGeometry`` records the crop box and scale so ``heatmap_to_image`` can put a heatmap
computed at network size back onto the input photograph.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from ..errors import UserError
from .transforms import prepare_image

DETECT_SIZE = 512  # the FOV is detected on a copy at most about this large
SEED_SIGMA_AT_512 = 8.5  # seed Sec. 5.1.1: background Gaussian std at a 512 px FOV width
EROSION = 0.05  # seed Sec. 5.1.1: the FOV is eroded by 5 % (of its width)


@dataclass(frozen=True)
class FundusGeometry:
    """Where the network canvas lies in the input photograph.

    ``input_shape``: (H, W) of the photograph; ``center`` (y, x) and ``radius`` of the FOV in
    input pixels (pixel centres at integer coordinates); ``box`` = (y0, x0, side): the square of
    input pixels [y0, y0 + side) x [x0, x0 + side) that was resized to ``canvas`` x ``canvas``
    (it may extend beyond the photograph); ``fov_width``: the FOV diameter on the canvas.
    """

    input_shape: tuple[int, int]
    center: tuple[float, float]
    radius: float
    box: tuple[int, int, int]
    canvas: int
    fov_width: int

    @property
    def scale(self) -> float:
        """Canvas pixels per input pixel."""
        return self.canvas / self.box[2]


@dataclass
class PreprocessedFundus:
    """``image``: I_n, float32 (3, canvas, canvas), 0 outside the eroded FOV; ``fov_mask``: bool
    (canvas, canvas), the eroded FOV; ``geometry``: see ``FundusGeometry``."""

    image: np.ndarray
    fov_mask: np.ndarray
    geometry: FundusGeometry


def as_rgb_float(image: np.ndarray) -> np.ndarray:
    """Check an RGB photograph and return it as float32 (H, W, 3) in [0, 1].

    Layout by the core rule (:func:`~proxscope.data.transforms.to_channels_first`: (H, W, 3),
    (3, H, W), RGBA loses its alpha). Scale, from the 99.9th percentile p (so a few hot
    pixels change nothing): a float image with p <= 1 is kept; any other is divided by the
    maximum of its bit depth, the smallest 2^b - 1 (b >= 8) not below p (255 for 8-bit, 4095
    for a 12-bit camera, also as float); values above 1 (hot pixels) are clipped.
    Raises ``UserError`` for other shapes or pixel types, images under 16 x 16, NaN/Inf."""
    image = np.asarray(image)
    rgb = np.moveaxis(prepare_image(image, channels=(3,), normalize=None,
                                    source="fundus photograph"), 0, -1)
    if rgb.shape[0] < 16 or rgb.shape[1] < 16:
        raise UserError(f"fundus photograph too small ({rgb.shape[0]}x{rgb.shape[1]} px)")
    peak = float(np.percentile(rgb, 99.9))
    if not (np.issubdtype(image.dtype, np.floating) and peak <= 1):
        bits = max(8, int(np.ceil(np.log2(max(peak, 0.0) + 1))))
        rgb = rgb / np.float32(2**bits - 1)
    return np.clip(rgb, 0, 1)


def detect_fov(image: np.ndarray) -> tuple[np.ndarray, tuple[float, float], float, int]:
    """Find the field of view of an RGB photograph (float [0, 1], (H, W, 3)).

    Returns (mask at reduced resolution (bool), centre (y, x) and radius in input pixels,
    reduction factor f: reduced pixel (i, j) covers input pixels [i f, (i + 1) f)).
    Raises ``UserError`` when no FOV is found (blank, black or contrast-free image)."""
    H, W = image.shape[:2]
    f = max(1, int(math.ceil(max(H, W) / DETECT_SIZE)))
    small = np.maximum(np.maximum(image[..., 0], image[..., 1]), image[..., 2])
    if f > 1:
        small = _block_mean(small[: (H // f) * f, : (W // f) * f], f)
    smooth = ndimage.gaussian_filter(small, 1.5)
    top = float(np.percentile(smooth, 99))
    if top < 0.03 or float(smooth.std()) < 0.01:
        raise UserError("no field of view found: the image is blank (black or without contrast)")
    fov = ndimage.binary_opening(smooth > 0.1 * top, np.ones((3, 3), bool))
    labels, n = ndimage.label(fov)
    if n == 0:
        raise UserError("no field of view found: no bright region in the image")
    sizes = np.bincount(labels.ravel())[1:]
    fov = labels == int(np.argmax(sizes)) + 1
    # the rim from a lightly smoothed copy (the heavy smoothing above moves it outwards)
    rim = ndimage.gaussian_filter(small, 0.7) > 0.1 * top
    fov = ndimage.binary_fill_holes(rim & ndimage.binary_dilation(fov, iterations=3))
    if fov.sum() < 0.01 * fov.size or fov.sum() < 50:
        raise UserError("no field of view found: the bright region is too small")
    circle = _fit_circle(fov)
    if circle is None:  # no usable rim (the FOV fills the frame): use the extents
        rows, cols = np.nonzero(fov.any(1))[0], np.nonzero(fov.any(0))[0]
        circle = ((rows[0] + rows[-1]) / 2, (cols[0] + cols[-1]) / 2,
                  max(rows[-1] - rows[0] + 1, cols[-1] - cols[0] + 1) / 2)
    cy, cx, r = circle
    return fov, (float((cy + 0.5) * f - 0.5), float((cx + 0.5) * f - 0.5)), float(r * f), f


def _fit_circle(mask: np.ndarray):
    """Least-squares circle (Kasa fit, refitted without outliers such as notches) through the
    rim of ``mask``, ignoring rim pixels on the frame border. (cy, cx, r) in mask pixels with
    pixel centres at integers, or None when the rim is too short or the fit implausible."""
    edge = mask & ~ndimage.binary_erosion(mask)
    edge[0, :] = edge[-1, :] = edge[:, 0] = edge[:, -1] = False
    ey, ex = np.nonzero(edge)
    if len(ey) < 20:
        return None
    ey, ex = ey.astype(float), ex.astype(float)
    keep = np.ones(len(ey), bool)
    for _ in range(3):
        a = np.stack([ex[keep], ey[keep], np.ones(keep.sum())], 1)
        (d, e, g), *_ = np.linalg.lstsq(a, ex[keep] ** 2 + ey[keep] ** 2, rcond=None)
        cx, cy = d / 2, e / 2
        r = math.sqrt(max(g + cx**2 + cy**2, 0.0))
        residual = np.abs(np.hypot(ex - cx, ey - cy) - r)
        new_keep = residual < max(2.0, 3 * float(np.median(residual[keep])))
        if new_keep.sum() < 20 or (new_keep == keep).all():
            break
        keep = new_keep
    r += 0.5  # rim pixels lie half a pixel inside the boundary
    span = max(mask.any(0).sum(), mask.any(1).sum()) / 2
    if not (0.45 * span <= r <= 3 * span):
        return None
    return cy, cx, r


def _block_mean(array: np.ndarray, k: int) -> np.ndarray:
    """Means over k x k blocks of the first two axes (their lengths are multiples of k)."""
    h, w = array.shape[0] // k, array.shape[1] // k
    out = array.reshape(h, k, w, k, *array.shape[2:]).sum(axis=3, dtype=np.float32).sum(axis=1)
    return out / np.float32(k * k)


def _crop(array: np.ndarray, y0: int, x0: int, side: int) -> np.ndarray:
    """array[y0:y0 + side, x0:x0 + side] with zeros where the box leaves the array."""
    H, W = array.shape[:2]
    out = np.zeros((side, side) + array.shape[2:], array.dtype)
    ya, yb = max(y0, 0), min(y0 + side, H)
    xa, xb = max(x0, 0), min(x0 + side, W)
    if ya < yb and xa < xb:
        out[ya - y0 : yb - y0, xa - x0 : xb - x0] = array[ya:yb, xa:xb]
    return out


def _resize(array: np.ndarray, size: int, order: int = 1) -> np.ndarray:
    import skimage.transform

    shape = (size, size) + array.shape[2:]
    down = array.shape[0] > size
    return skimage.transform.resize(
        array, shape, order=order, mode="constant", anti_aliasing=down, preserve_range=True
    ).astype(np.float32)


def preprocess_fundus(
    image: np.ndarray, fov_width: int = 448, canvas: int | None = None
) -> PreprocessedFundus:
    """Seed Sec. 5.1.1 preprocessing of an RGB fundus photograph (module docstring).

    ``fov_width``: FOV diameter on the output (px); ``canvas``: output side (default
    ``fov_width``). Returns ``PreprocessedFundus`` (I_n channels-first, eroded FOV mask, geometry).
    Raises ``UserError`` for a non-RGB, blank or otherwise unusable photograph."""
    fov_width = int(fov_width)
    canvas = int(canvas or fov_width)
    if fov_width < 8 or canvas < fov_width:
        raise UserError(f"need fov_width >= 8 and canvas >= fov_width, got {fov_width}, {canvas}")
    rgb = as_rgb_float(image)
    H, W = rgb.shape[:2]
    small_fov, (cy, cx), radius, f = detect_fov(rgb)
    side = max(int(round(2 * radius * canvas / fov_width)), 1)
    k = max(1, side // canvas)  # big photographs: block means first (side rounded up to k)
    side = int(math.ceil(side / k)) * k
    y0 = int(round(cy + 0.5 - side / 2))
    x0 = int(round(cx + 0.5 - side / 2))
    geometry = FundusGeometry((H, W), (cy, cx), radius, (y0, x0, side), canvas, fov_width)

    crop = _crop(rgb, y0, x0, side)
    if k > 1:
        crop = _block_mean(crop, k)
    resized = _resize(crop, canvas)
    # FOV mask on the canvas: the reduced-resolution mask, mapped through the same box.
    fy = np.clip((np.arange(H) // f), 0, small_fov.shape[0] - 1)
    fx = np.clip((np.arange(W) // f), 0, small_fov.shape[1] - 1)
    ys = np.clip(np.arange(y0, y0 + side), 0, H - 1)
    xs = np.clip(np.arange(x0, x0 + side), 0, W - 1)
    inside = ((np.arange(y0, y0 + side) >= 0) & (np.arange(y0, y0 + side) < H))[:, None] & (
        (np.arange(x0, x0 + side) >= 0) & (np.arange(x0, x0 + side) < W)
    )[None, :]
    box_mask = small_fov[fy[ys][:, None], fx[xs][None, :]] & inside
    fov = _resize(box_mask.astype(np.float32), canvas) > 0.5

    sigma = SEED_SIGMA_AT_512 * fov_width / 512
    background = ndimage.gaussian_filter(resized, (sigma, sigma, 0), mode="constant")
    normalized = 4 * (resized - background)
    margin = EROSION * fov_width
    eroded = ndimage.distance_transform_edt(np.pad(fov, 1))[1:-1, 1:-1] > margin
    # ... and inside the fitted circle shrunk by the same margin (the thresholded rim can lie
    # a fraction of a pixel outside the true one)
    cyc, cxc = ((c + 0.5 - o) * geometry.scale - 0.5 for c, o in ((cy, y0), (cx, x0)))
    ys, xs = np.arange(canvas, dtype=np.float32)[:, None], np.arange(canvas, dtype=np.float32)[None, :]
    eroded &= (ys - cyc) ** 2 + (xs - cxc) ** 2 <= (radius * geometry.scale - margin) ** 2
    normalized[~eroded] = 0
    return PreprocessedFundus(
        np.ascontiguousarray(normalized.transpose(2, 0, 1)), eroded, geometry
    )


def heatmap_to_image(heatmap: np.ndarray, geometry: FundusGeometry, order: int = 1) -> np.ndarray:
    """Map a heatmap on the network canvas ((canvas, canvas) or (C, canvas, canvas)) back onto
    the input photograph: resized to the crop box and pasted at its place, zero elsewhere.
    Returns float32 (H, W) or (C, H, W) with (H, W) the photograph's size."""
    heatmap = np.asarray(heatmap, dtype=np.float32)
    if heatmap.shape[-2:] != (geometry.canvas, geometry.canvas) or heatmap.ndim not in (2, 3):
        raise UserError(
            f"heatmap of shape {heatmap.shape} does not match the canvas {geometry.canvas}x{geometry.canvas}"
        )
    y0, x0, side = geometry.box
    H, W = geometry.input_shape
    planes = heatmap[None] if heatmap.ndim == 2 else heatmap
    out = np.zeros((len(planes), H, W), np.float32)
    ya, yb = max(y0, 0), min(y0 + side, H)
    xa, xb = max(x0, 0), min(x0 + side, W)
    if ya < yb and xa < xb:
        import skimage.transform

        for plane, target in zip(planes, out, strict=True):
            big = skimage.transform.resize(
                plane, (side, side), order=order, mode="edge", anti_aliasing=side < geometry.canvas,
                preserve_range=True,
            )
            target[ya:yb, xa:xb] = big[ya - y0 : yb - y0, xa - x0 : xb - x0]
    return out[0] if heatmap.ndim == 2 else out


def mask_to_canvas(mask: np.ndarray, geometry: FundusGeometry, min_cover: float = 0.2) -> np.ndarray:
    """Map a lesion-type mask of the photograph ((H, W), 0 = none, 1-4 = type) onto the network
    canvas: each canvas pixel takes the type that covers the largest part of it, if that part
    is at least ``min_cover`` (area-weighted, so lesions smaller than a canvas pixel survive a
    downscale). Returns uint8 (canvas, canvas). UserError if the mask's shape is not the
    photograph's."""
    mask = np.asarray(mask)
    if mask.shape != tuple(geometry.input_shape):
        raise UserError(
            f"lesion mask of shape {mask.shape} does not match the photograph {geometry.input_shape}")
    y0, x0, side = geometry.box
    crop = _crop(mask, y0, x0, side)
    types = [t for t in np.unique(crop) if t != 0]
    if not types:
        return np.zeros((geometry.canvas, geometry.canvas), np.uint8)
    cover = np.stack([_resize((crop == t).astype(np.float32), geometry.canvas) for t in types])
    best = cover.argmax(0)
    return np.where(cover.max(0) >= min_cover, np.asarray(types, np.uint8)[best], 0).astype(np.uint8)
