"""Segmentation data on disk: image / mask pairs and label maps.

Images go through the core :func:`~proxscope.data.transforms.prepare_image` (grey or RGB(A),
percentile normalisation over all pixels and channels, so colour ratios are kept) -> (C, H, W)
float32. Masks: 2-D integer class ids 0..255 (0 = background) with the image's height and width.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ...data.io import expand_inputs, read_image
from ...data.transforms import prepare_image
from ...errors import UserError

MASK_SUFFIXES = (".tif", ".tiff", ".png")


def check_mask(mask: np.ndarray, shape: tuple[int, int], source: str = "mask") -> np.ndarray:
    """Validate a label map against an image's (H, W); returns it as int64. A grey mask saved
    as RGB(A) is accepted. Raises :class:`UserError` (one line naming ``source``)."""
    mask = np.asarray(mask)
    if mask.ndim == 3 and mask.shape[-1] in (3, 4) and (mask == mask[..., :1]).all():
        mask = mask[..., 0]
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


def load_pairs(images: str | Path, masks_dir: str | Path) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Every image of ``images`` (a folder or a glob) with its mask ``masks_dir``/NAME.tif|.tiff|.png
    -> (prepared images [(C, H, W)], masks [(H, W) int64]). Raises :class:`UserError` for an
    image without a mask, a mask that does not fit, or a mix of grey and RGB images."""
    masks_dir = Path(masks_dir)
    if not masks_dir.is_dir():
        raise UserError(f"--masks: folder not found: {masks_dir}")
    image_list, mask_list = [], []
    for path in expand_inputs(images):
        mask_path = next((masks_dir / f"{path.stem}{s}" for s in MASK_SUFFIXES
                          if (masks_dir / f"{path.stem}{s}").is_file()), None)
        if mask_path is None:
            raise UserError(f"no mask {masks_dir / (path.stem + '.tif')} for image {path}")
        image = prepare_image(read_image(path), source=str(path))
        image_list.append(image)
        mask_list.append(check_mask(read_image(mask_path), image.shape[1:], str(mask_path)))
    if len({im.shape[0] for im in image_list}) > 1:
        raise UserError(f"{images}: images mix grayscale and RGB; convert them to one kind")
    return image_list, mask_list


def object_diameter(masks: list[np.ndarray]) -> float | None:
    """Median equivalent diameter 2·sqrt(area/pi) (px) of the objects in label maps: the
    connected regions of non-background pixels (all classes > 0 together, 8-connected).
    None when no mask holds an object. Recorded in the checkpoint so ``predict --diameter``
    can resample images to the object size the net was trained on."""
    from scipy import ndimage

    areas = []
    for mask in masks:
        labels, n = ndimage.label(np.asarray(mask) > 0, np.ones((3, 3), bool))
        areas.extend(np.bincount(labels.ravel())[1:].tolist() if n else [])
    return float(np.median(2 * np.sqrt(np.array(areas) / np.pi))) if areas else None
