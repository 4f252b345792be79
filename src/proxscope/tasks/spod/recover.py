"""Recovery of a prepared SPoD stack: FISTA / ISTA on eq. (5), or a trained SPoD-Net/LISTA-Net.

The core solvers minimise 0.5·||A x − y||² + λ_core·||x||_1 (x >= 0); with λ_core = λ·A/B this
is A·L(Y, x), so they minimise eq. (5) exactly and their objective history divided by A is
L(Y, x) (see :func:`proxscope.operators.spod.core_lam`).

Seed: spodnet-lista-spod-microscopy.txt eq. (5) (objective), eqs. (6)-(7) (ISTA), Sec. 5.2
(FISTA with line search as the baseline).
"""

from __future__ import annotations

import torch

from ...data.tiling import tiled_apply
from ...operators.spod import SPoDConv, core_lam, normalisation
from ...prox import nonneg_soft_threshold
from ...solvers import SolverResult, proximal_gradient

METHODS = {"fista": "fista", "ista": "none"}


def spod_operator(psf: torch.Tensor, channels: int) -> SPoDConv:
    """The forward operator of eq. (3) for a PSF (a, b)."""
    return SPoDConv.from_psf(psf, channels)


def solve(
    op: SPoDConv,
    y: torch.Tensor,
    lam: float,
    method: str = "fista",
    n_iter: int = 1000,
    tol: float = 0.0,
    line_search: bool = True,
    track: bool = True,
) -> SolverResult:
    """Minimise L(Y, x) of eq. (5) for y (B, c, H, W): FISTA (with backtracking line search by
    default, the seed's baseline) or ISTA (constant step 1/||A||² unless ``line_search``).
    The returned ``objective`` (n_iter, B) is L(Y, x) itself (the core objective / A)."""
    if method not in METHODS:
        raise ValueError(f"method must be one of {sorted(METHODS)}, got {method!r}")
    a, b = op.kernel_shape
    x_shape = (op.channels, y.shape[-2] + a - 1, y.shape[-1] + b - 1)
    big_a, _ = normalisation(x_shape, op.channels, (a, b))
    result = proximal_gradient(
        op, y, core_lam(lam, x_shape, op.channels, (a, b)), nonneg_soft_threshold,
        n_iter=n_iter, tol=tol, momentum=METHODS[method], line_search=line_search, track=track,
    )
    result.objective = result.objective / big_a
    return result


@torch.no_grad()
def predict_model(model, y: torch.Tensor, tile: int = 512, overlap: int | None = None
                  ) -> torch.Tensor:
    """Run an unrolled SPoD model on y (B, c, H, W) -> x (B, c, H+a−1, W+b−1).

    Observations larger than ``tile`` px are processed in tiles (memory stays bounded: ~0.45 GB
    for 18 channels at the default 512 px, which runs a 512×512 stack in one pass; 256-px tiles
    did 2.2× the FFT work there, 9 overlapping tiles, and took 1.8× longer) that
    overlap by ``overlap`` px (default: the PSF size); each output pixel comes from the tile
    where it is farthest from a tile border. The tiling works on a canvas in image
    coordinates: the observation zero padded by the PSF size − 1 at the bottom/right, of which
    each tile uses its first rows/columns as its observation.
    """
    a, b = model.config.psf_size
    overlap = max(a, b) if overlap is None else overlap
    canvas = torch.nn.functional.pad(y, (0, b - 1, 0, a - 1))

    def fn(piece: torch.Tensor) -> torch.Tensor:
        return model(piece[..., : piece.shape[-2] - a + 1, : piece.shape[-1] - b + 1])

    tile_x = tile + max(a, b) - 1
    if tile_x <= 2 * overlap:
        overlap = (tile_x - 1) // 2
    return tiled_apply(fn, canvas, tile=tile_x, overlap=overlap)
