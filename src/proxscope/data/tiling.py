"""Process large images in overlapping tiles so memory stays bounded."""

from __future__ import annotations

from collections.abc import Callable


def _starts(size: int, tile: int, overlap: int) -> list[int]:
    if size <= tile:
        return [0]
    stride = tile - 2 * overlap
    starts = list(range(0, size - tile, stride)) + [size - tile]
    return sorted(set(starts))


def tiled_apply(fn: Callable, x, tile: int = 512, overlap: int = 32):
    """Apply a size-preserving map ``fn: (B, C, h, w) -> (B, C', h, w)`` tile by tile.

    Tiles of ``tile``×``tile`` overlap by 2·``overlap``; each output pixel is taken from the tile
    where it lies farthest from a tile border (at least ``overlap`` pixels away, except at the
    image border), so maps with a receptive field below ``overlap`` give the same result as one
    call on the whole image.
    """
    import torch

    h, w = x.shape[-2:]
    if h <= tile and w <= tile:
        return fn(x)
    if tile <= 2 * overlap:
        raise ValueError("tile must be larger than twice the overlap")
    out = None
    ys, xs = _starts(h, tile, overlap), _starts(w, tile, overlap)
    for i, y0 in enumerate(ys):
        for j, x0 in enumerate(xs):
            th, tw = min(tile, h), min(tile, w)
            piece = fn(x[..., y0 : y0 + th, x0 : x0 + tw])
            if out is None:
                out = torch.empty((*piece.shape[:-2], h, w), dtype=piece.dtype, device=piece.device)
            # Interior of this tile: half-way into each overlap with the neighbours.
            top = 0 if i == 0 else (ys[i - 1] + th + y0) // 2 - y0
            left = 0 if j == 0 else (xs[j - 1] + tw + x0) // 2 - x0
            bottom = th if i == len(ys) - 1 else (y0 + th + ys[i + 1]) // 2 - y0
            right = tw if j == len(xs) - 1 else (x0 + tw + xs[j + 1]) // 2 - x0
            out[..., y0 + top : y0 + bottom, x0 + left : x0 + right] = piece[
                ..., top:bottom, left:right
            ]
    return out
