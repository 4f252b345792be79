"""Array preparation shared by the tasks: intensity normalisation and layout checks."""

from __future__ import annotations

import numpy as np

from ..errors import UserError


def percentile_normalize(
    image: np.ndarray, low: float = 1.0, high: float = 99.8, axis=None
) -> np.ndarray:
    """Map the ``low``/``high`` percentiles of ``image`` to 0/1 (float32, not clipped).

    Works for any dtype (uint8, uint16, float). ``axis``: the axes the percentiles are taken over
    (None = all), e.g. (0, 1) for per-channel normalisation of an (H, W, C) image.
    """
    image = np.asarray(image, dtype=np.float32)
    lo = np.percentile(image, low, axis=axis, keepdims=True)
    hi = np.percentile(image, high, axis=axis, keepdims=True)
    return (image - lo) / np.maximum(hi - lo, 1e-8)


def to_channels_first(image: np.ndarray, max_channels: int = 4) -> np.ndarray:
    """(H, W) -> (1, H, W); (H, W, C) with C <= max_channels -> (C, H, W); (C, H, W) unchanged."""
    if image.ndim == 2:
        return image[None]
    if image.ndim == 3:
        if image.shape[-1] <= max_channels and image.shape[0] > max_channels:
            return np.moveaxis(image, -1, 0)
        return image
    raise UserError(f"expected a 2-D or 3-D image, got shape {image.shape}")


def prepare_image(
    image: np.ndarray,
    channels: tuple[int, ...] | None = (1, 3),
    normalize: str | None = "percentile",
    per_channel: bool = False,
    pad_to: int = 0,
    source: str = "image",
) -> np.ndarray:
    """Check and normalise an input image -> float32 (C, H, W), the one input path of every task.

    Accepts (H, W), (H, W, C) or (C, H, W) of any integer or float type; RGBA drops alpha. C must
    be one of ``channels`` (None: any, e.g. a polarization stack; RGBA then stays 4 channels).
    ``normalize``: 'percentile' maps the 1 % / 99.8 % percentiles to 0 / 1 (over all channels, or
    each channel when ``per_channel``); 'max' shifts negative values to 0 and scales the maximum
    to 255 (the FluoroSpot simulator's scale); None keeps the values (the task normalises).
    ``pad_to``: pad (row / column medians) up to this size. Raises :class:`UserError` (one line
    naming ``source``) for another pixel type, shape or channel count, NaN/Inf, an image under
    8 x 8, or a blank image with 'max'."""
    image = np.asarray(image)
    if image.dtype == bool or not (
        np.issubdtype(image.dtype, np.integer) or np.issubdtype(image.dtype, np.floating)
    ):
        raise UserError(f"{source}: unsupported pixel type {image.dtype}")
    if image.ndim not in (2, 3):
        raise UserError(f"{source}: expected a 2-D image (grey or colour), got shape {image.shape}")
    image = to_channels_first(image)
    if channels is not None and image.shape[0] == 4 and 4 not in channels:
        image = image[:3]
    if channels is not None and image.shape[0] not in channels:
        kinds = " or ".join({1: "1 (grey)", 3: "3 (RGB)"}.get(c, str(c)) for c in channels)
        raise UserError(f"{source}: expected {kinds} channel(s), got shape {image.shape}")
    if not np.isfinite(image).all():
        raise UserError(f"{source}: image contains NaN or Inf values")
    if min(image.shape[1:]) < 8:
        raise UserError(f"{source}: image {image.shape[1]}x{image.shape[2]} is too small (at least 8x8)")
    if normalize == "percentile":
        image = percentile_normalize(image, axis=(1, 2) if per_channel else None)
    elif normalize == "max":
        image = image.astype(np.float32)
        image = image - min(float(image.min()), 0.0)
        peak = float(image.max())
        if peak <= 0:
            raise UserError(f"{source}: image is blank (all zeros)")
        image = image * (255.0 / peak)
    elif normalize is not None:
        raise ValueError(f"normalize must be 'percentile', 'max' or None, got {normalize!r}")
    pad_h, pad_w = max(0, pad_to - image.shape[1]), max(0, pad_to - image.shape[2])
    if pad_h or pad_w:
        image = np.pad(image, ((0, 0), (0, pad_h), (0, pad_w)), mode="median")
    return image.astype(np.float32)


def random_crop_rot_flip(
    rng: np.random.Generator,
    image: np.ndarray,
    size: int,
    targets: tuple[np.ndarray, ...] = (),
    points: np.ndarray | None = None,
    augment: bool = True,
) -> tuple[np.ndarray, list[np.ndarray], np.ndarray | None]:
    """A random ``size`` x ``size`` crop of ``image`` (..., H, W), turned by a random multiple
    of 90° and flipped left-right with probability 1/2 (when ``augment``), the training
    augmentation of every task whose physics has no preferred orientation.

    ``targets`` (arrays (..., H, W): masks, target maps) get the same crop and turn; ``points``
    (N, 2) (y, x) follow into crop coordinates (points outside the crop are dropped).
    Draws from ``rng`` in the order row, column, turn, flip. Returns (crop, targets, points),
    all C-contiguous."""
    h, w = image.shape[-2:]
    y0, x0 = int(rng.integers(h - size + 1)), int(rng.integers(w - size + 1))
    arrays = [a[..., y0 : y0 + size, x0 : x0 + size] for a in (image, *targets)]
    if points is not None:
        points = np.asarray(points, dtype=float).reshape(-1, 2) - [y0, x0]
        points = points[((points >= -0.5) & (points < size - 0.5)).all(1)]
    if augment:
        k, flip = int(rng.integers(4)), bool(rng.integers(2))
        arrays = [np.rot90(a, k, axes=(-2, -1)) for a in arrays]
        if flip:
            arrays = [a[..., ::-1] for a in arrays]
        if points is not None:
            for _ in range(k):  # np.rot90 maps (y, x) -> (size - 1 - x, y)
                points = np.stack([size - 1 - points[:, 1], points[:, 0]], 1)
            if flip:
                points = np.stack([points[:, 0], size - 1 - points[:, 1]], 1)
    arrays = [np.ascontiguousarray(a) for a in arrays]
    return arrays[0], arrays[1:], points


def random_fundus_augment(image, generator=None, mask=None, max_shift: float = 10.0,
                          scale: tuple[float, float] = (0.85, 1.15),
                          contrast: tuple[float, float] = (0.6, 1 / 0.6)):
    """Training augmentation of the retina system (seed: deep-image-mining-retinopathy-
    heatmaps.txt Sec. 5.1.1): per image a rotation uniform in [0, 360°), a translation uniform in
    [-max_shift, max_shift] px per axis, a scale uniform in ``scale``, a left-right flip with
    probability 1/2 and a contrast factor log-uniform in ``contrast`` (multiplies the
    background-subtracted image), all in one ``F.affine_grid``/``F.grid_sample`` warp about the
    image centre (bilinear, zeros outside).

    ``image``: float tensor (N, C, H, W); ``mask``: optional integer tensor (N, H, W) or
    (N, 1, H, W) warped the same way with nearest-neighbour sampling (values are kept, 0
    outside). ``generator``: a ``torch.Generator``, a ``numpy.random.Generator``, an int seed or
    None (torch's global generator); the six numbers per image are drawn in one call.
    Returns (augmented image, augmented mask or None)."""
    import math

    import torch
    import torch.nn.functional as F

    if not torch.is_tensor(image) or image.ndim != 4 or not image.is_floating_point():
        raise ValueError("random_fundus_augment expects a float tensor (N, C, H, W)")
    n, _, h, w = image.shape
    if isinstance(generator, np.random.Generator):
        u = torch.from_numpy(generator.random((n, 6)))
    else:
        if generator is not None and not isinstance(generator, torch.Generator):
            generator = torch.Generator().manual_seed(int(generator))
        u = torch.rand((n, 6), generator=generator, dtype=torch.float64)
    angle = 2 * math.pi * u[:, 0]
    shift = (2 * u[:, 1:3] - 1) * max_shift  # (tx, ty) in pixels
    s = scale[0] + (scale[1] - scale[0]) * u[:, 3]
    flip = torch.where(u[:, 4] < 0.5, -1.0, 1.0).to(torch.float64)
    factor = torch.exp(math.log(contrast[0]) + (math.log(contrast[1]) - math.log(contrast[0])) * u[:, 5])
    # Output pixel p (centred, pixel units, (x, y)) samples the input at A (p - t), with
    # A = flip . R(-angle) / s: the inverse of "flip, rotate, scale, translate".
    cos, sin = torch.cos(angle), torch.sin(angle)
    a = torch.stack([torch.stack([cos * flip, sin * flip], -1), torch.stack([-sin, cos], -1)], -2)
    a = a / s[:, None, None]
    t = -(a @ shift[:, :, None])[..., 0]
    d = torch.tensor([2.0 / w, 2.0 / h], dtype=torch.float64)  # pixels -> normalised units
    theta = torch.cat([a * d[None, :, None] / d[None, None, :], (t * d)[:, :, None]], 2)
    grid = F.affine_grid(theta.to(image.dtype).to(image.device), list(image.shape), align_corners=False)
    out = F.grid_sample(image, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    out = out * factor.to(image.dtype).to(image.device)[:, None, None, None]
    if mask is None:
        return out, None
    m = mask if mask.ndim == 4 else mask[:, None]
    warped = F.grid_sample(m.to(grid.dtype), grid, mode="nearest", padding_mode="zeros", align_corners=False)
    warped = warped.round().to(mask.dtype)
    return out, (warped if mask.ndim == 4 else warped[:, 0])
