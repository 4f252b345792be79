"""Process large images in overlapping tiles so memory stays bounded."""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Callable, Iterator

_PROGRESS: contextvars.ContextVar[str | None] = contextvars.ContextVar("tile_progress", default=None)


@contextlib.contextmanager
def tile_progress(desc: str | None) -> Iterator[None]:
    """Inside the block every :func:`tiled_apply` over more than one tile shows a progress bar
    (tqdm, on stderr) labelled ``desc``; None: no bar. ``predict`` of every task runs in one
    (unless ``--quiet``), so a large image that takes minutes shows its progress."""
    token = _PROGRESS.set(desc)
    try:
        yield
    finally:
        _PROGRESS.reset(token)


def _starts(size: int, tile: int, overlap: int, align: int) -> list[int]:
    """Tile starts along one axis: multiples of ``align``, consecutive tiles overlapping by at
    least 2·``overlap``; the last tile ends at ``size`` (it may be up to ``align`` - 1 shorter
    than ``tile``, so that it too starts on the grid)."""
    if size <= tile:
        return [0]
    stride = (tile - 2 * overlap) // align * align
    last = -(-(size - tile) // align) * align  # the first grid start whose tile reaches the end
    return sorted(set(range(0, size - tile, stride)) | {last})


def tiled_apply(fn: Callable, x, tile: int = 512, overlap: int = 32, align: int = 1):
    """Apply a size-preserving map ``fn: (B, C, h, w) -> (B, C', h, w)`` tile by tile.

    Tiles of at most ``tile``×``tile`` overlap by at least 2·``overlap``; each output pixel is
    taken from the tile where it lies farthest from a tile border (at least ``overlap`` pixels
    away, except at the image border), so maps with a receptive field radius up to ``overlap``
    give the same result as one call on the whole image. ``align``: every tile starts at a
    multiple of it (2^depth for a network that pools ``depth`` times, whose output depends on
    where the pooling grid lies); the last tile is then shorter and ``fn`` must accept it.
    Raises ValueError when no whole multiple of ``align`` fits between the overlaps.
    """
    import torch

    h, w = x.shape[-2:]
    if h <= tile and w <= tile:
        return fn(x)
    if (tile - 2 * overlap) // align < 1:
        raise ValueError(f"tile {tile} leaves no stride of {align} px between overlaps of {overlap}")
    from tqdm.auto import tqdm

    out = None
    ys, xs = _starts(h, tile, overlap, align), _starts(w, tile, overlap, align)
    ends_y = [min(y0 + tile, h) for y0 in ys]
    ends_x = [min(x0 + tile, w) for x0 in xs]
    desc = _PROGRESS.get()
    bar = tqdm(total=len(ys) * len(xs), desc=desc, unit="tile", leave=False, disable=desc is None)
    for i, y0 in enumerate(ys):
        for j, x0 in enumerate(xs):
            piece = fn(x[..., y0 : ends_y[i], x0 : ends_x[j]])
            bar.update(1)
            if out is None:
                out = torch.empty((*piece.shape[:-2], h, w), dtype=piece.dtype, device=piece.device)
            # Interior of this tile: half-way into each overlap with the neighbours.
            top = 0 if i == 0 else (ends_y[i - 1] + y0) // 2
            left = 0 if j == 0 else (ends_x[j - 1] + x0) // 2
            bottom = h if i == len(ys) - 1 else (ends_y[i] + ys[i + 1]) // 2
            right = w if j == len(xs) - 1 else (ends_x[j] + xs[j + 1]) // 2
            out[..., top:bottom, left:right] = piece[..., top - y0 : bottom - y0, left - x0 : right - x0]
    bar.close()
    return out
