"""Detection with a trained CNNCS model in an image of any size, at the model's object scale.

The image is normalised like the training data (each channel by its 1 % / 99.8 % percentiles),
resampled so that objects of ``diameter`` pixels get the diameter the model works at
(cellpose/spotiflow ``--diameter``; :func:`~proxscope.data.transforms.rescale_to_diameter`),
and cut into P×P tiles overlapping by P/2 (core :func:`~proxscope.data.tiling.tiled_apply`);
each tile goes through CNN -> recovery -> back-projection to a vote map, every pixel keeps the
vote of the tile where it lies farthest from the border, and one mean shift over the whole merged
vote map gives the detections, so a cell on a tile boundary is found once (decoding:
:mod:`proxscope.models.cnncs`). Detections are mapped back to the input's pixels.

Scales in a checkpoint's ``extra``: ``object_diameter_px`` (:data:`~proxscope.checkpoint.
DIAMETER_KEY`) is the object diameter the network works at (= ``config.diameter``);
``data_diameter_px`` the object diameter in the images it was trained on, before resampling
(the default ``--diameter`` of ``cells predict``; absent for the bundled model, whose training
images were at the network's scale).
"""

from __future__ import annotations

import numpy as np
import torch

from ...checkpoint import DIAMETER_KEY, detection_settings, trained_diameter
from ...data.tiling import tiled_apply
from ...data.transforms import (
    points_to_original,
    prepare_image,
    rescale_to_diameter,
    to_channels_first,
)
from ...layers.sparse_recovery import single_thread
from ...models.cnncs import CNNCS, VOTE_THRESHOLD, cluster_votes, vote_map

#: ``extra`` key of the object diameter (px) in the training images before resampling
DATA_DIAMETER_KEY = "data_diameter_px"


def load_detector(name: str, device: str | None = None) -> tuple[CNNCS, float, dict]:
    """Bundled model name or checkpoint path -> (model in eval mode, its tuned vote threshold,
    the checkpoint's extra metadata). Raises CheckpointError (a UserError) for a bad file."""
    from ...models import load
    from ...utils import resolve_device

    model, extra = load(name, device=resolve_device(device), expected=CNNCS)
    return model, detection_settings(extra, vote_threshold=VOTE_THRESHOLD)["vote_threshold"], extra


def model_diameter(model: CNNCS, extra: dict) -> float:
    """The object diameter (px) the network works at: the checkpoint's record, else the
    config's (checkpoints written before it was recorded)."""
    return trained_diameter(extra) or model.config.diameter


def scale_extra(model: CNNCS, data_diameter: float | None) -> dict:
    """The checkpoint ``extra`` entries that record the model's scale (see the module doc)."""
    extra = {DIAMETER_KEY: model.config.diameter}
    return extra | ({DATA_DIAMETER_KEY: data_diameter} if data_diameter else {})


def prepare(image: np.ndarray, patch: int, channels: tuple[int, ...] = (1, 3),
            source: str = "image", diameter: float | None = None,
            model_diameter: float | None = None) -> tuple[np.ndarray, tuple[float, float]]:
    """Any image -> (float32 (C, H'', W''), each channel percentile-normalised, resampled to
    (H', W') so objects of ``diameter`` px become ``model_diameter`` px (either None: not
    resampled), then padded at the bottom/right to at least ``patch``; the scale (H'/H, W'/W))."""
    image = prepare_image(image, channels, per_channel=True, source=source)
    image, scale = rescale_to_diameter(image, diameter, model_diameter, source)
    return prepare_image(image, None, normalize=None, pad_to=patch, source=source), scale


@torch.no_grad()
def predict_votes(model: CNNCS, image: np.ndarray) -> np.ndarray:
    """Prepared image (C, H, W) (see :func:`prepare`) -> vote map (H, W) in [0, 1]."""
    c = model.config

    def tile_votes(tile: torch.Tensor) -> torch.Tensor:
        codes, _ = model.split(model(tile))
        return vote_map(model.lines, model.recover(codes), c.code_threshold)[:, None]

    x = torch.from_numpy(np.ascontiguousarray(image))[None].to(model.D.device)
    with single_thread():  # one small tile at a time
        votes = tiled_apply(tile_votes, x, tile=c.patch, overlap=c.patch // 4)
    return votes[0, 0].cpu().numpy()


def detect(model: CNNCS, image: np.ndarray, vote_threshold: float, source: str = "image",
           diameter: float | None = None,
           trained: float | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Raw image (any dtype, (H, W) or RGB, as many channels as the model) -> detections (K, 2)
    as (y, x) pixels of ``image`` and scores (K,) in [0, 1]. ``diameter``: object diameter (px)
    in ``image``, resampled to ``trained`` (default: the model's ``config.diameter``) before
    detection; None: no resampling. Raises UserError (naming ``source``) for an unusable
    image."""
    c = model.config
    prepared, scale = prepare(image, c.patch, (c.in_channels,), source, diameter,
                              trained or c.diameter)
    height, width = (round(s * n) for s, n in zip(scale, _size(image), strict=True))
    votes = predict_votes(model, prepared)[:height, :width]
    points, scores = cluster_votes(votes, vote_threshold, c.bandwidth)
    return points_to_original(points, scale), scores


def _size(image: np.ndarray) -> tuple[int, int]:
    """(H, W) of a raw image in any layout :func:`prepare` accepts."""
    return to_channels_first(np.asarray(image)).shape[1:]
