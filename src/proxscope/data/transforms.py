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


def _kinds(channels: tuple[int, ...]) -> str:
    names = {1: "a grey (H, W)", 3: "an RGB (H, W, 3)"}
    return " or ".join(names.get(c, f"a {c}-channel (C, H, W)") for c in channels)


def to_channels_first(image: np.ndarray, channels: tuple[int, ...] | None = None,
                      source: str = "image") -> np.ndarray:
    """The one layout rule of every 2-D image with channels -> (C, H, W).

    (H, W) -> (1, H, W). For a 3-D array the channel axis is the first or the last:
    with ``channels`` (the counts the caller accepts), the axis whose length is one of them,
    where a colour axis (3, or 4 = RGBA when last) also counts when grey is accepted (see
    :func:`prepare_image`); the last axis wins when both fit and it is 3 or 4 long (colour files
    store colour last), else the first. An RGBA image (H, W, 4) loses its alpha when 4
    channels are not accepted; a stack of 4 planes (4, H, W) is never taken for RGBA. Without
    ``channels``: a last axis of at most 4 after a longer first axis is channel-last, anything
    else channel-first (a stack of planes). Raises :class:`UserError` naming ``source``, the
    shape found and the layouts expected."""
    shape = image.shape
    if image.ndim == 2:
        return image[None]
    if image.ndim != 3:
        raise UserError(f"{source}: expected a 2-D image (grey or colour), got shape {shape}")
    if channels is None:
        last = shape[-1] <= 4 < shape[0]
    else:
        colour = 3 in channels or 1 in channels
        fits_last = shape[2] in channels or (colour and shape[2] in (3, 4))
        fits_first = shape[0] in channels or (colour and shape[0] == 3)
        if not (fits_last or fits_first):
            hint = f" (a stack of {shape[0]} planes? give one)" if shape[0] < min(shape[1:]) else ""
            raise UserError(f"{source}: expected {_kinds(channels)} image, got shape {shape}{hint}")
        last = fits_last and (shape[2] in (3, 4) or not fits_first)
    if not last:
        return image
    image = np.moveaxis(image, -1, 0)
    if channels is not None and shape[2] == 4 and 4 not in channels:
        image = image[:3]  # RGBA: drop alpha
    return image


def prepare_image(
    image: np.ndarray,
    channels: tuple[int, ...] | None = (1, 3),
    normalize: str | None = "percentile",
    per_channel: bool = False,
    pad_to: int = 0,
    source: str = "image",
) -> np.ndarray:
    """Check and normalise an input image -> float32 (C, H, W), the one input path of every task.

    Accepts (H, W), (H, W, C) or (C, H, W) of any integer or float type, laid out by
    :func:`to_channels_first`; RGBA drops alpha; a colour image whose channels are all equal
    (grey saved as RGB) is grey where grey is expected but not colour. C must be one of
    ``channels`` (None: any, e.g. a polarization stack).
    ``normalize``: 'percentile' maps the 1 % / 99.8 % percentiles to 0 / 1 (over all channels, or
    each channel when ``per_channel``; a blank image becomes all 0); 'max' shifts negative
    values to 0 and scales the maximum to 255 (the FluoroSpot simulator's scale); None keeps the
    values (the task normalises). ``pad_to``: pad (row / column medians) up to this size.
    Raises :class:`UserError` (one line naming ``source`` and the shape as found) for another
    pixel type, shape or channel count, NaN/Inf, an image under 8 x 8, or a blank image with
    'max'."""
    image = np.asarray(image)
    found = image.shape
    if image.dtype == bool or not (
        np.issubdtype(image.dtype, np.integer) or np.issubdtype(image.dtype, np.floating)
    ):
        raise UserError(f"{source}: unsupported pixel type {image.dtype}")
    image = to_channels_first(image, channels, source)
    if channels is not None and image.shape[0] == 3 and 3 not in channels:
        if not (image == image[:1]).all():
            raise UserError(f"{source}: expected {_kinds(channels)} image, got colour (shape "
                            f"{found}) with channels that differ; convert it to grey")
        image = image[:1]
    if channels is not None and image.shape[0] not in channels:
        raise UserError(f"{source}: expected {_kinds(channels)} image, got shape {found}")
    if not np.isfinite(image).all():
        raise UserError(f"{source}: image contains NaN or Inf values")
    if min(image.shape[1:]) < 8:
        raise UserError(f"{source}: image {image.shape[1]}x{image.shape[2]} (shape {found}) is "
                        f"too small (at least 8x8)")
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


def diameter_factor(diameter: float | None, trained_diameter: float | None) -> float:
    """Zoom factor ``s = trained_diameter / diameter`` that brings objects of ``diameter`` px
    to the size a model was trained on (cellpose/spotiflow ``--diameter``); 1.0 when either is
    None. Raises :class:`UserError` for a diameter that is not a positive finite number."""
    if diameter is None or trained_diameter is None:
        return 1.0
    if not (np.isfinite(diameter) and diameter > 0):
        raise UserError(f"--diameter must be a positive number of pixels, got {diameter}")
    return float(trained_diameter) / float(diameter)


def resize(array: np.ndarray, shape: tuple[int, int], order: int = 1) -> np.ndarray:
    """Resample the last two axes of ``array`` (..., H, W) to ``shape`` (H', W'): ``order`` 1
    (bilinear, anti-aliased when shrinking; images, score maps, probabilities) or 0 (nearest;
    label maps, dtype kept). Pixel centres map as y' = (y + 0.5)·H'/H - 0.5 (see
    :func:`points_to_original`). Same shape -> the array itself."""
    array = np.asarray(array)
    shape = tuple(int(n) for n in shape)
    if array.shape[-2:] == shape:
        return array
    from skimage.transform import resize as sk_resize

    shrink = shape[0] < array.shape[-2] or shape[1] < array.shape[-1]
    out = sk_resize(array, (*array.shape[:-2], *shape), order=order, mode="reflect",
                    preserve_range=True, anti_aliasing=bool(order and shrink))
    return out.astype(array.dtype if order == 0 else np.float32)


def rescale_to_diameter(
    image: np.ndarray, diameter: float | None, trained_diameter: float | None,
    source: str = "image",
) -> tuple[np.ndarray, tuple[float, float]]:
    """Resample a prepared image (C, H, W) so objects of ``diameter`` px get the
    ``trained_diameter`` the model was trained on -> (image (C, H', W') float32, scale (H'/H,
    W'/W)). Map outputs back with :func:`resize` (maps, masks: to (H, W)) or
    :func:`points_to_original` (points). ``diameter`` or ``trained_diameter`` None -> the
    image unchanged and scale (1.0, 1.0). Raises :class:`UserError` when the result would be
    under 8 x 8 pixels."""
    factor = diameter_factor(diameter, trained_diameter)
    h, w = image.shape[-2:]
    shape = (max(1, round(h * factor)), max(1, round(w * factor)))
    if min(shape) < 8:
        raise UserError(f"{source}: --diameter {diameter} shrinks the {h}x{w} image to "
                        f"{shape[0]}x{shape[1]} (models here need at least 8x8)")
    return resize(image, shape).astype(np.float32), (shape[0] / h, shape[1] / w)


def points_to_original(yx: np.ndarray, scale: tuple[float, float]) -> np.ndarray:
    """Points (N, 2) (y, x) found on an image resampled by ``scale`` (from
    :func:`rescale_to_diameter`) -> coordinates on the original image."""
    yx = np.asarray(yx, dtype=float).reshape(-1, 2)
    return (yx + 0.5) / np.asarray(scale, dtype=float) - 0.5


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
