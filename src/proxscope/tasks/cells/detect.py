"""Detection with a trained CNNCS model in an image of any size.

The image is normalised like the training data (each channel by its 1 % / 99.8 % percentiles)
and cut into P×P tiles overlapping by P/2 (core :func:`~proxscope.data.tiling.tiled_apply`);
each tile goes through CNN -> recovery -> back-projection to a vote map, every pixel keeps the
vote of the tile where it lies farthest from the border, and one mean shift over the whole merged
vote map gives the detections, so a cell on a tile boundary is found once (decoding:
:mod:`proxscope.models.cnncs`).
"""

from __future__ import annotations

import numpy as np
import torch

from ...checkpoint import detection_settings
from ...data.tiling import tiled_apply
from ...data.transforms import prepare_image, to_channels_first
from ...layers.sparse_recovery import single_thread
from ...models.cnncs import CNNCS, VOTE_THRESHOLD, cluster_votes, vote_map


def load_detector(name: str, device: str | None = None) -> tuple[CNNCS, float, dict]:
    """Bundled model name or checkpoint path -> (model in eval mode, its tuned vote threshold,
    the checkpoint's extra metadata). Raises CheckpointError (a UserError) for a bad file."""
    from ...models import load
    from ...utils import resolve_device

    model, extra = load(name, device=resolve_device(device), expected=CNNCS)
    return model, detection_settings(extra, vote_threshold=VOTE_THRESHOLD)["vote_threshold"], extra


def prepare(image: np.ndarray, patch: int, channels: tuple[int, ...] = (1, 3),
            source: str = "image") -> np.ndarray:
    """Any image -> float32 (C, H, W), each channel percentile-normalised, padded to ``patch``."""
    return prepare_image(image, channels, per_channel=True, pad_to=patch, source=source)


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


def detect(model: CNNCS, image: np.ndarray, vote_threshold: float,
           source: str = "image") -> tuple[np.ndarray, np.ndarray]:
    """Raw image (any dtype, (H, W) or RGB, as many channels as the model) -> detections (K, 2)
    as (y, x) pixels and scores (K,) in [0, 1]. Raises UserError (naming ``source``) for an
    unusable image."""
    c = model.config
    prepared = prepare(image, c.patch, (c.in_channels,), source)
    height, width = to_channels_first(np.asarray(image)).shape[1:]
    votes = predict_votes(model, prepared)[:height, :width]
    return cluster_votes(votes, vote_threshold, c.bandwidth)
