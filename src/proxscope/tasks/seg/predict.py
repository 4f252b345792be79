"""``seg predict``: class probabilities and a label mask for one image of any size.

The net's logits are computed tile by tile (core ``tiled_apply``, overlap larger than the
receptive field of the compact nets), then the (TV-)softmax runs on the whole logit map, so the
TV iterations see no tile seams.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ...data.io import read_image, write_image
from ...data.tiling import tiled_apply
from ...errors import UserError
from ...models import load
from ...models.segmentation import SegmentationNet
from ...utils import resolve_device
from .data import prepare_image

# Overlay colours of classes 0, 1, 2, ... (background is left uncoloured).
PALETTE = np.array(
    [[0, 0, 0], [0, 200, 255], [255, 60, 160], [255, 200, 0], [60, 220, 60], [160, 90, 255]],
    dtype=np.float32,
) / 255


def load_model(name_or_path: str | Path, device: str | None = None) -> SegmentationNet:
    """A bundled model name ('unet', 'runet') or a checkpoint written by ``seg train``."""
    model, _ = load(name_or_path, device=resolve_device(device), expected=SegmentationNet)
    return model


@torch.no_grad()
def segment(
    model: SegmentationNet,
    image: np.ndarray,
    tv_iters: int | None = None,
    post_tv_lam: float | None = None,
    tile: int = 512,
    overlap: int = 64,
) -> np.ndarray:
    """Normalised image (C, H, W) -> class probabilities (n_classes, H, W) float32.

    ``tv_iters``: TV iterations at test time (default: the model's n_iter_eval);
    ``post_tv_lam``: post-TV baseline for a plain net (TV softmax with this fixed lam)."""
    if image.shape[0] != model.config.in_channels:
        kinds = {1: "grayscale", 3: "RGB"}
        raise UserError(
            f"the model expects {kinds.get(model.config.in_channels, model.config.in_channels)} "
            f"images, got {kinds.get(image.shape[0], image.shape[0])}"
        )
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    x = torch.from_numpy(np.ascontiguousarray(image))[None].to(device)
    logits = tiled_apply(model.logits, x, tile=tile, overlap=overlap)
    probs = model.activate(logits, tv_iters, post_tv_lam)
    model.train(was_training)
    return probs[0].float().cpu().numpy()


def overlay(image: np.ndarray, labels: np.ndarray, alpha: float = 0.45) -> np.ndarray:
    """RGB uint8 (H, W, 3): the image in grey/colour with class colours blended on top and
    class borders drawn opaque."""
    from skimage.segmentation import find_boundaries

    rgb = np.repeat(image, 3, axis=0) if image.shape[0] == 1 else image[:3]
    rgb = np.clip(np.moveaxis(rgb, 0, -1), 0, 1)
    colours = PALETTE[labels % len(PALETTE)]
    weight = np.where(labels > 0, alpha, 0.0)[..., None]
    out = (1 - weight) * rgb + weight * colours
    border = find_boundaries(labels, mode="inner")
    out[border] = colours[border]
    return np.round(out * 255).astype(np.uint8)


def predict_file(
    image_path: str | Path,
    model_name: str,
    out: str | Path,
    tv_iters: int | None = None,
    post_tv_lam: float | None = None,
    probs_path: str | Path | None = None,
    overlay_path: str | Path | None = None,
    device: str | None = None,
) -> dict:
    """Segment one image file; writes the uint8 label mask (and optional float32 probabilities
    (C, H, W) TIFF and PNG overlay). Returns a summary dict."""
    for path, kinds in ((out, (".tif", ".tiff", ".png")), (probs_path, (".tif", ".tiff")),
                        (overlay_path, (".png",))):
        if path is not None and Path(path).suffix.lower() not in kinds:
            raise UserError(f"{path}: output must end with {' or '.join(kinds)}")
    if tv_iters is not None and tv_iters < 0:
        raise UserError("--tv-iters must be >= 0")
    if post_tv_lam is not None and post_tv_lam <= 0:
        raise UserError("--post-tv-lam must be positive")
    model = load_model(model_name, device)
    if post_tv_lam is not None and model.tv is not None:
        raise UserError("--post-tv-lam is for plain nets (unet, segnet); this model has a TV softmax")
    image = prepare_image(read_image(image_path), str(image_path))
    probs = segment(model, image, tv_iters, post_tv_lam)
    labels = probs.argmax(0).astype(np.uint8)
    if probs_path is not None:
        write_image(probs_path, probs)
    if overlay_path is not None:
        write_image(overlay_path, overlay(image, labels))
    write_image(out, labels)
    counts = np.bincount(labels.ravel(), minlength=probs.shape[0])
    return {"out": str(out), "shape": list(labels.shape),
            "class_fractions": [round(float(c) / labels.size, 4) for c in counts]}
