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
