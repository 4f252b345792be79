"""End-to-end recovery and evaluation of one stack, as the CLI and the demo use them.

``recover_stack`` prepares a raw stack (preprocessing + scale s), recovers x with a model or a
solver, and returns x in the stack's intensity units (x·s) together with L(Y/s, x/s) of eq. (5):
the objective on the normalised stack, comparable between acquisitions and methods.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch

from ...errors import UserError
from ...operators.spod import spod_objective
from .data import prepare
from .recover import predict_model, solve, spod_operator


@dataclass
class Recovery:
    """x: (c, H+a−1, W+b−1) float32 in the stack's units; objective: L(Y/s, x/s) (eq. 5);
    seconds: recovery wall time (without reading/preprocessing); iterations: solver iterations
    or network layers."""

    x: np.ndarray
    objective: float
    seconds: float
    iterations: int


def check_model(model, stack: np.ndarray, psf: np.ndarray) -> None:
    """One-line errors when a model does not fit the stack's channels or the PSF size."""
    if model.config.channels != stack.shape[0]:
        raise UserError(
            f"the model was trained for {model.config.channels} channels, the stack has "
            f"{stack.shape[0]}"
        )
    if list(model.config.psf_size) != list(psf.shape):
        raise UserError(f"the model expects a {model.config.psf_size} PSF, got {list(psf.shape)}")


def recover_stack(
    stack: np.ndarray,
    psf: np.ndarray,
    lam: float,
    model=None,
    method: str = "fista",
    n_iter: int = 1000,
    preprocessing: bool = True,
    device: str | torch.device = "cpu",
) -> Recovery:
    """Recover one raw stack (c, H, W) with ``model`` (if given) or FISTA/ISTA (``method``)."""
    prepared = prepare(stack, psf, preprocessing)
    y = torch.from_numpy(prepared.y)[None].to(device)
    op = spod_operator(torch.from_numpy(psf), stack.shape[0]).to(device)
    start = time.perf_counter()
    if model is not None:
        check_model(model, stack, psf)
        x = predict_model(model, y)
        iterations = model.config.n_layers
    else:
        result = solve(op, y, lam, method, n_iter=n_iter, track=False)
        x, iterations = result.x, result.n_iter
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    with torch.no_grad():
        objective = float(spod_objective(op, x, y, lam)[0])
    return Recovery((x[0].cpu().numpy() * prepared.scale).astype(np.float32), objective, seconds,
                    iterations)


def evaluate_recovery(
    stack: np.ndarray,
    psf: np.ndarray,
    recovered: np.ndarray,
    lam: float,
    truth: np.ndarray | None = None,
    preprocessing: bool = True,
) -> dict[str, float]:
    """{'objective': L(Y/s, x/s), 'nonzero_fraction', ['psnr_db' against ``truth``]}."""
    from ...metrics import psnr

    a, b = psf.shape
    expected = (stack.shape[0], stack.shape[1] + a - 1, stack.shape[2] + b - 1)
    if recovered.shape != expected:
        raise UserError(
            f"recovered image has shape {recovered.shape}; for this stack and PSF it must be "
            f"{expected} (channels, H + PSF height − 1, W + PSF width − 1)"
        )
    if (recovered < 0).any():
        raise UserError("recovered image has negative values; eq. (5) needs x >= 0")
    prepared = prepare(stack, psf, preprocessing)
    op = spod_operator(torch.from_numpy(psf), stack.shape[0])
    x = torch.from_numpy(recovered.astype(np.float32) / prepared.scale)[None]
    with torch.no_grad():
        objective = float(spod_objective(op, x, torch.from_numpy(prepared.y)[None], lam)[0])
    metrics = {"objective": objective, "lam": lam,
               "nonzero_fraction": float((recovered > 0).mean())}
    if truth is not None:
        if truth.shape != expected:
            raise UserError(f"truth has shape {truth.shape}, expected {expected}")
        metrics["psnr_db"] = psnr(recovered, truth)
    return metrics
