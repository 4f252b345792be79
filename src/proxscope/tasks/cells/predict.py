"""``cells predict``: detect cell centroids in an image of any size.

The image is normalised like the training data and cut into P×P tiles overlapping by P/2
(core :func:`~proxscope.data.tiling.tiled_apply`); each tile goes through CNN -> recovery ->
back-projection to a vote map, every pixel keeps the vote of the tile where it lies farthest from
the border, and one mean shift over the whole merged vote map gives the detections, so a cell on
a tile boundary is found once.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ...data.io import read_image, write_points
from ...data.tiling import tiled_apply
from ...data.transforms import to_channels_first
from ...errors import UserError
from ...layers.sparse_recovery import single_thread
from ...models.cnncs import CNNCS
from .codec import cluster_votes, vote_map
from .train import prepare_image


@torch.no_grad()
def predict_votes(model: CNNCS, image: np.ndarray) -> np.ndarray:
    """Prepared image (C, H, W) (see :func:`prepare_image`) -> vote map (H, W) in [0, 1]."""
    c = model.config
    device = model.D.device

    def tile_votes(tile: torch.Tensor) -> torch.Tensor:
        codes, _ = model.split(model(tile))
        return vote_map(model.lines, model.recover(codes), c.code_threshold)[:, None]

    x = torch.from_numpy(np.ascontiguousarray(image))[None].to(device)
    with single_thread():  # one small tile at a time
        votes = tiled_apply(tile_votes, x, tile=c.patch, overlap=c.patch // 4)
    return votes[0, 0].cpu().numpy()


def detect(model: CNNCS, image: np.ndarray, source: str = "image") -> tuple[np.ndarray, np.ndarray]:
    """Raw image (any dtype, (H, W) or RGB) -> detections (K, 2) as (y, x) and scores (K,)."""
    height, width = to_channels_first(np.asarray(image)).shape[1:]
    prepared = prepare_image(image, model.config.patch, source=source)
    if prepared.shape[0] != model.config.in_channels:
        raise UserError(
            f"{source}: {prepared.shape[0]} channel(s), the model expects {model.config.in_channels}"
        )
    votes = predict_votes(model, prepared)[:height, :width]
    return cluster_votes(votes, model.config.vote_threshold, model.config.bandwidth)


def predict_file(image_path: str | Path, model_name: str, out: str | Path, device=None) -> int:
    """Detect cells in ``image_path`` with ``model_name`` (bundled name or checkpoint) and write
    ``out`` (CSV y,x,score). Returns the number of detections."""
    from ...models import load
    from ...utils import resolve_device

    image = read_image(image_path)
    model, _ = load(model_name, device=resolve_device(device), expected=CNNCS)
    points, scores = detect(model, image, source=str(image_path))
    write_points(out, points, {"score": scores})
    return len(points)
