"""Reading segmentation data: image/mask pairs from folders and the network's input layout.

Images: uint8/uint16/float, grayscale (H, W) or RGB(A) (H, W, 3|4) / (3, H, W); an alpha
channel is dropped. The network input is (C, H, W) float32 after percentile normalisation over
all pixels and channels (1st -> 0, 99.8th -> 1), so colour ratios are kept.
Masks: 2-D integer class ids (0 = background) with the image's height and width.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ...data.io import RASTER_SUFFIXES, TIFF_SUFFIXES, read_image
from ...data.transforms import percentile_normalize, to_channels_first
from ...errors import UserError

IMAGE_SUFFIXES = TIFF_SUFFIXES | RASTER_SUFFIXES
MASK_SUFFIXES = (".tif", ".tiff", ".png")


def prepare_image(image: np.ndarray, source: str = "image") -> np.ndarray:
    """(H, W) / (H, W, C) / (C, H, W) array -> normalised float32 (C, H, W), C = 1 or 3."""
    image = np.asarray(image)
    if image.dtype == bool or not (
        np.issubdtype(image.dtype, np.integer) or np.issubdtype(image.dtype, np.floating)
    ):
        raise UserError(f"{source}: unsupported pixel type {image.dtype}")
    if image.ndim not in (2, 3):
        raise UserError(f"{source}: expected a 2-D grayscale or RGB image, got shape {image.shape}")
    image = to_channels_first(image)
    if image.shape[0] == 4:
        image = image[:3]
    if image.shape[0] == 2 or image.shape[0] > 4:
        raise UserError(f"{source}: expected 1 (grayscale) or 3 (RGB) channels, got shape "
                        f"{image.shape}")
    if not np.isfinite(image).all():
        raise UserError(f"{source}: image contains NaN or Inf values")
    if min(image.shape[1:]) < 8:
        raise UserError(f"{source}: image is too small ({image.shape[1]}x{image.shape[2]}), "
                        "need at least 8x8 pixels")
    return percentile_normalize(image).astype(np.float32)


def check_mask(mask: np.ndarray, shape: tuple[int, int], source: str = "mask") -> np.ndarray:
    """Validate a label map against an image's (H, W); returns it as int64."""
    mask = np.asarray(mask)
    if mask.ndim == 3 and mask.shape[-1] in (3, 4) and (mask == mask[..., :1]).all():
        mask = mask[..., 0]  # a grey mask saved as RGB
    if mask.ndim != 2:
        raise UserError(f"{source}: a mask must be a 2-D label image, got shape {mask.shape}")
    if mask.shape != tuple(shape):
        raise UserError(f"{source}: mask is {mask.shape[0]}x{mask.shape[1]} but the image is "
                        f"{shape[0]}x{shape[1]}")
    if np.issubdtype(mask.dtype, np.floating) and not (mask == np.round(mask)).all():
        raise UserError(f"{source}: mask values must be integer class ids")
    if mask.min() < 0 or mask.max() > 255:
        raise UserError(f"{source}: class ids must be in 0..255, got {mask.min()}..{mask.max()}")
    return mask.astype(np.int64)


def read_label_map(path: str | Path) -> np.ndarray:
    """Read a mask file as (H, W) int64 class ids."""
    mask = read_image(path)
    return check_mask(mask, np.asarray(mask).shape[:2], str(path))


def load_pairs(images_dir: str | Path, masks_dir: str | Path):
    """images_dir/NAME.* with masks_dir/NAME.tif -> (names, images [(C, H, W)], masks [(H, W)]).

    All images must have the same number of channels."""
    images_dir, masks_dir = Path(images_dir), Path(masks_dir)
    for folder in (images_dir, masks_dir):
        if not folder.is_dir():
            raise UserError(f"folder not found: {folder}")
    files = sorted(p for p in images_dir.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise UserError(f"{images_dir}: no images (.tif, .png, .jpg)")
    names, images, masks = [], [], []
    for path in files:
        mask_path = next(
            (masks_dir / f"{path.stem}{s}" for s in MASK_SUFFIXES
             if (masks_dir / f"{path.stem}{s}").is_file()),
            None,
        )
        if mask_path is None:
            raise UserError(f"no mask {masks_dir / (path.stem + '.tif')} for image {path}")
        image = prepare_image(read_image(path), str(path))
        names.append(path.stem)
        images.append(image)
        masks.append(check_mask(read_image(mask_path), image.shape[1:], str(mask_path)))
    channels = {im.shape[0] for im in images}
    if len(channels) > 1:
        raise UserError(f"{images_dir}: images mix grayscale and RGB; convert them to one kind")
    return names, images, masks
