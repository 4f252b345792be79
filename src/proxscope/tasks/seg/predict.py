"""``seg predict``: class probabilities and a label mask for images of any size.

The image is padded by reflection by the net's ``margin`` (its receptive radius, rounded up to
the pooling grid) so no output pixel sees the zero padding of the convolutions (which labelled a
band along a blank image's right edge as nucleus). The net's logits are computed tile by tile
(core ``tiled_apply``: tiles on the pooling grid, overlap = margin), equal to one pass to float
rounding; then the (TV-)softmax runs on the whole logit map, so the TV iterations see no tile
seams.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ...checkpoint import trained_diameter
from ...data.io import read_image, write_image
from ...data.tiling import tiled_apply
from ...data.transforms import prepare_image, rescale_to_diameter, resize
from ...errors import UserError
from ...models import load
from ...models.segmentation import SegmentationNet
from ...utils import resolve_device
from .data import MASK_SUFFIXES

#: the range a normalised image is clipped to before the net (see :func:`segment`)
INPUT_RANGE = (-2.0, 3.0)

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
) -> np.ndarray:
    """Normalised image (C, H, W) -> class probabilities (n_classes, H, W) float32.

    The image is clipped to [-2, 3] first (:data:`INPUT_RANGE`; the percentile normalisation
    maps the 1 % / 99.8 % percentiles to 0 / 1): a hot pixel 20 times brighter than the cells
    otherwise changed the labels of 400 pixels around it, and normal images stay unchanged.

    ``tv_iters``: TV iterations at test time (default: the model's n_iter_eval);
    ``post_tv_lam``: post-TV baseline for a plain net (TV softmax with this fixed lam);
    ``tile``: largest tile side of the padded image (memory); the result does not depend on it."""
    if image.shape[0] != model.config.in_channels:
        kinds = {1: "grayscale", 3: "RGB"}
        raise UserError(
            f"the model expects {kinds.get(model.config.in_channels, model.config.in_channels)} "
            f"images, got {kinds.get(image.shape[0], image.shape[0])}"
        )
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    m, (h, w) = model.margin, image.shape[1:]
    padded = np.pad(np.clip(image, *INPUT_RANGE), ((0, 0), (m, m), (m, m)), mode="reflect")
    x = torch.from_numpy(np.ascontiguousarray(padded))[None].to(device)
    logits = tiled_apply(model.logits, x, tile=tile, overlap=m, align=2**model.config.depth)
    probs = model.activate(logits[..., m : m + h, m : m + w], tv_iters, post_tv_lam)
    model.train(was_training)
    return probs[0].float().cpu().numpy()


def overlay_image(image: np.ndarray, labels: np.ndarray, alpha: float = 0.45) -> np.ndarray:
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


def make_predictor(
    model_name: str, device: str | None = None, tv_iters: int | None = None,
    post_tv_lam: float | None = None, probs: bool = False, overlay: bool = False,
    diameter: float | None = None,
):
    """Load the model once; returns ``run(image_path, out) -> summary`` that writes the uint8
    label mask ``out`` (.tif/.tiff/.png) and, when asked, the float32 probabilities (C, H, W)
    at ``out`` with suffix .probs.tif and the PNG overlay with suffix .overlay.png.
    ``diameter``: object diameter (px) in the images; each image is resampled so its objects
    get the diameter the model was trained on (checkpoint ``object_diameter_px``), segmented,
    and its probabilities resampled back to the image's size. Raises :class:`UserError` for
    ``post_tv_lam`` with a TV-softmax net, ``diameter`` with a model that does not record its
    object size, or another output suffix."""
    net, extra = load(model_name, device=resolve_device(device), expected=SegmentationNet)
    if post_tv_lam is not None and net.tv is not None:
        raise UserError("--post-tv-lam is for plain nets (unet, segnet); this model has a TV softmax")
    trained = trained_diameter(extra)
    if diameter is not None and trained is None:
        raise UserError(f"--diameter: model {model_name} does not record the object size it was "
                        f"trained on (checkpoints from 'seg train' of this version do)")

    def run(image_path: Path, out: Path) -> dict:
        if out.suffix.lower() not in MASK_SUFFIXES:
            raise UserError(f"{out}: output must end with {' or '.join(MASK_SUFFIXES)}")
        image = prepare_image(read_image(image_path), channels=(net.config.in_channels,),
                              source=str(image_path))
        scaled, _ = rescale_to_diameter(image, diameter, trained, source=str(image_path))
        p = resize(segment(net, scaled, tv_iters, post_tv_lam), image.shape[1:])
        labels = p.argmax(0).astype(np.uint8)
        if probs:
            write_image(out.with_suffix(".probs.tif"), p)
        if overlay:
            write_image(out.with_suffix(".overlay.png"), overlay_image(image, labels))
        write_image(out, labels)
        fractions = np.bincount(labels.ravel(), minlength=p.shape[0]) / labels.size
        return {"out": str(out), "height": labels.shape[0], "width": labels.shape[1]} | {
            f"fraction_class_{k}": round(float(f), 4) for k, f in enumerate(fractions)}

    return run
