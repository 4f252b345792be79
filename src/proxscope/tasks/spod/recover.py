"""Recovery of SPoD stacks: FISTA / ISTA on eq. (5) or a trained SPoD-Net / LISTA-Net, and the
scores of a recovered stack.

The core solvers minimise 0.5·||A x − y||² + λ_core·||x||_1 (x >= 0); with λ_core = λ·A/B this
is A·L(Y, x), so they minimise eq. (5) exactly and their objective history divided by A is
L(Y, x) (see :func:`proxscope.operators.spod.core_lam`). ``recover_stack`` prepares a raw stack
(preprocessing + scale s, :mod:`.data`), recovers x and returns it in the stack's intensity
units (x·s) with L(Y/s, x/s): the objective on the normalised stack, comparable between
acquisitions and methods. Without a λ, the solvers use the noise rule
(:func:`~proxscope.operators.spod.noise_lam`) of each stack, a network its training λ.

Seed: spodnet-lista-spod-microscopy.txt eq. (5) (objective), eqs. (6)-(7) (ISTA), Sec. 5.2
(FISTA with line search as the baseline).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch

from ...data.tiling import tiled_apply
from ...errors import UserError
from ...operators.spod import (
    SPoDConv,
    core_lam,
    lam_max,
    noise_lam,
    normalisation,
    spod_objective,
)
from ...prox import nonneg_soft_threshold
from ...solvers import SolverResult, proximal_gradient
from .data import prepare

METHODS = {"fista": "fista", "ista": "none"}


def solve(
    op: SPoDConv,
    y: torch.Tensor,
    lam: float,
    method: str = "fista",
    n_iter: int = 1000,
    tol: float = 0.0,
    line_search: bool = True,
    track: bool = True,
    callback=None,
) -> SolverResult:
    """Minimise L(Y, x) of eq. (5) for y (B, c, H, W): FISTA (with backtracking line search by
    default, the seed's baseline) or ISTA (constant step 1/L, L the closed-form bound of
    :meth:`SPoDConv.lipschitz`, unless ``line_search``).
    The returned ``objective`` (n_iter, B) is L(Y, x) itself (the core objective / A);
    ``callback(k, x_k)`` as in :func:`~proxscope.solvers.proximal_gradient`."""
    if method not in METHODS:
        raise ValueError(f"method must be one of {sorted(METHODS)}, got {method!r}")
    a, b = op.kernel_shape
    x_shape = (op.channels, y.shape[-2] + a - 1, y.shape[-1] + b - 1)
    big_a, _ = normalisation(x_shape, op.channels, (a, b))
    step = None if line_search else 1.0 / op.lipschitz(x_shape, bound=True)
    result = proximal_gradient(
        op, y, core_lam(lam, x_shape, op.channels, (a, b)), nonneg_soft_threshold,
        n_iter=n_iter, tol=tol, step=step, momentum=METHODS[method], line_search=line_search,
        track=track, callback=callback,
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


@dataclass
class Recovery:
    """x: (c, H+a−1, W+b−1) float32 in the stack's units; objective: L(Y/s, x/s) (eq. 5) at
    ``lam``; lam_ratio: λ / λ_max (λ_max: the smallest λ with x = 0 optimal); seconds: recovery
    wall time (without reading/preprocessing); n_iter: solver iterations or network layers."""

    x: np.ndarray
    objective: float
    lam: float
    lam_ratio: float | None
    seconds: float
    n_iter: int


def check_model(model, stack: np.ndarray, psf: np.ndarray) -> None:
    """One-line errors when a model does not fit the stack's channels or the PSF size."""
    if model.config.channels != stack.shape[0]:
        raise UserError(
            f"the model was trained for {model.config.channels} channels, the stack has "
            f"{stack.shape[0]}"
        )
    if list(model.config.psf_size) != list(psf.shape):
        raise UserError(f"the model expects a {model.config.psf_size} PSF, got {list(psf.shape)}")


def _lam_ratio(lam: float, op: SPoDConv, y: torch.Tensor) -> float | None:
    top = lam_max(op, y)
    return lam / top if top > 0 else None


def recover_stack(
    stack: np.ndarray,
    psf: np.ndarray,
    lam: float | None = None,
    model=None,
    method: str = "fista",
    n_iter: int = 1000,
    preprocessing: str = "background",
    device: str | torch.device = "cpu",
) -> Recovery:
    """Recover one raw stack (c, H, W) with ``model`` (if given) or FISTA/ISTA (``method``);
    ``psf``: the correlation kernel φ (a, b) (:func:`.data.read_psf`). ``lam`` None: the
    model's λ (:meth:`SPoDNet.lam_for` this size), or for the solvers the noise rule of this
    stack."""
    if model is not None:
        check_model(model, stack, psf)
    prepared = prepare(stack, preprocessing)
    y = torch.from_numpy(prepared.y)[None].to(device)
    op = SPoDConv.from_psf(torch.from_numpy(psf), stack.shape[0]).to(device)
    if lam is None:
        lam = model.lam_for(y.shape[-2:]) if model is not None else noise_lam(op, y, prepared.sigma)
    start = time.perf_counter()
    if model is not None:
        x, n_iter = predict_model(model, y), model.config.n_layers
    else:
        result = solve(op, y, lam, method, n_iter=n_iter, track=False)
        x, n_iter = result.x, result.n_iter
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    with torch.no_grad():
        objective = float(spod_objective(op, x, y, lam)[0])
    return Recovery((x[0].cpu().numpy() * prepared.scale).astype(np.float32), objective, lam,
                    _lam_ratio(lam, op, y), seconds, n_iter)


def evaluate_recovery(
    stack: np.ndarray,
    psf: np.ndarray,
    recovered: np.ndarray,
    lam: float | None = None,
    truth: np.ndarray | None = None,
    preprocessing: str = "background",
) -> dict:
    """{'objective': L(Y/s, x/s), 'lam', 'lam_over_lam_max', 'nonzero_fraction'} and, with a
    ``truth``, the field-of-view fidelity scores of :func:`.metrics.fidelity`; ``lam`` None:
    the noise rule. One-line UserError when the recovered stack (or the truth) does not fit
    the stack and PSF, or has negative or non-finite values."""
    from .metrics import fidelity

    a, b = psf.shape
    expected = (stack.shape[0], stack.shape[1] + a - 1, stack.shape[2] + b - 1)
    for name, image in (("recovered image", recovered), ("truth", truth)):
        if image is None:
            continue
        if image.shape != expected:
            raise UserError(
                f"{name} has shape {image.shape}; for this stack and PSF it must be "
                f"{expected} (channels, H + PSF height − 1, W + PSF width − 1)"
            )
        if not np.isfinite(image).all() or (image < 0).any():
            raise UserError(f"{name} has negative or non-finite values; eq. (5) needs x >= 0")
    prepared = prepare(stack, preprocessing)
    op = SPoDConv.from_psf(torch.from_numpy(psf), stack.shape[0])
    y = torch.from_numpy(prepared.y)[None]
    lam = noise_lam(op, y, prepared.sigma) if lam is None else lam
    x = torch.from_numpy(recovered.astype(np.float32) / prepared.scale)[None]
    with torch.no_grad():
        objective = float(spod_objective(op, x, y, lam)[0])
    metrics = {"objective": objective, "lam": lam, "lam_over_lam_max": _lam_ratio(lam, op, y),
               "nonzero_fraction": float((recovered > 0).mean())}
    if truth is not None:
        metrics |= fidelity(recovered, truth, (a, b))
    return metrics
