"""Proximal-gradient solvers for min_x 0.5·||A x − y||² + lam·R(x): ISTA, FISTA, APG.

All three are one loop (:func:`proximal_gradient`) that differ in the momentum rule; they are
batched over the leading dimension (each sample has its own objective, and with line search its
own step) and return the solution with a per-iteration history of objective and elapsed time.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from ..operators.base import LinearOperator
from ..prox import penalty_of, soft_threshold


@dataclass
class SolverResult:
    """x: solution (B, ...); objective: (n_iter, B) objective after each iteration (empty when
    not tracked); time: elapsed seconds after each iteration; step: final step per sample (B,)."""

    x: torch.Tensor
    objective: torch.Tensor
    time: list[float] = field(default_factory=list)
    n_iter: int = 0
    converged: bool = False
    step: torch.Tensor | None = None


def _bcast(v: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """(B,) -> (B, 1, ..., 1) to broadcast against ``like``."""
    return v.reshape(-1, *([1] * (like.ndim - 1)))


def _per_sample_dot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return (a * b).flatten(1).sum(1)


def data_fidelity(op: LinearOperator, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """0.5·||A x − y||² per sample: (B,)."""
    r = op(x) - y
    return 0.5 * _per_sample_dot(r, r)


def lasso_objective(
    op: LinearOperator,
    x: torch.Tensor,
    y: torch.Tensor,
    lam,
    penalty: Callable[[torch.Tensor], torch.Tensor],
) -> torch.Tensor:
    """F(x) = 0.5·||A x − y||² + lam·R(x) per sample: (B,)."""
    return data_fidelity(op, x, y) + torch.as_tensor(lam, dtype=x.dtype, device=x.device) * penalty(x)


def momentum_schedule(rule: str, n: int) -> list[float]:
    """β_1..β_n of a momentum rule, the one used by the solvers and the unrolled layers:
    'none': β = 0 (ISTA); 'fista': t_0 = 1, t_k = (1 + sqrt(1 + 4 t_{k−1}²))/2,
    β_k = (t_{k−1} − 1)/t_k (Beck & Teboulle); 'nesterov': β_k = (k−1)/(k+2) (APG).

    Seed: spotnet-fluorospot-learned-iterations.txt eq. (2), Fig. 2 (APG momentum)."""
    if rule == "none":
        return [0.0] * n
    if rule == "nesterov":
        return [(k - 1) / (k + 2) for k in range(1, n + 1)]
    if rule == "fista":
        betas, t = [], 1.0
        for _ in range(n):
            t_new = (1 + math.sqrt(1 + 4 * t * t)) / 2
            betas.append((t - 1) / t_new)
            t = t_new
        return betas
    raise ValueError(f"momentum must be 'none', 'fista' or 'nesterov', got {rule!r}")


def proximal_gradient(
    op: LinearOperator,
    y: torch.Tensor,
    lam,
    prox: Callable = soft_threshold,
    *,
    penalty: Callable | None = None,
    n_iter: int = 1000,
    tol: float = 1e-6,
    step: float | None = None,
    momentum: str = "none",
    line_search: bool = False,
    eta: float = 2.0,
    x0: torch.Tensor | None = None,
    track: bool = True,
    callback: Callable[[int, torch.Tensor], None] | None = None,
) -> SolverResult:
    """Proximal gradient for F(x) = 0.5·||A x − y||² + lam·R(x), R given by ``prox``.

    Iteration k (z_0 = x_0):
        x_k = prox(z_{k−1} − step·A^T(A z_{k−1} − y), lam·step)
        z_k = x_k + β_k (x_k − x_{k−1})
    with β_k from :func:`momentum_schedule` ('none': ISTA, 'fista', 'nesterov': APG).
    Constant step 1/L with L = ||A||² unless ``line_search``: then backtracking per sample,
    L ← eta·L until F(x) <= f(z) + <∇f(z), x − z> + L/2·||x − z||² (Beck & Teboulle, 2009),
    up to a rounding slack of 64·eps(dtype)·0.5·||y||².

    Stops after ``n_iter`` iterations or when max over the batch of ||x_k − x_{k−1}||/||x_k||
    falls below ``tol``. ``lam`` may be a float or a (B,) tensor. ``callback(k, x_k)``, if
    given, is called after every iteration (e.g. to score intermediate iterates).

    Seed: spodnet-lista-spod-microscopy.txt eqs. (6)-(7) (ISTA step and threshold);
    spotnet-fluorospot-learned-iterations.txt eq. (2) and Fig. 2 (APG).
    """
    betas = momentum_schedule(momentum, n_iter)
    penalty = penalty or penalty_of(prox)
    x = torch.zeros_like(op.adjoint(y)) if x0 is None else x0.clone()
    batch = x.shape[0]
    lam_t = torch.as_tensor(lam, dtype=x.dtype, device=x.device).expand(batch).clone()
    if line_search:
        if step is None:
            v = torch.randn_like(x)
            lip0 = op.normal(v).flatten(1).norm(dim=1) / v.flatten(1).norm(dim=1)
            lipschitz = lip0.clamp_min(1e-12)
        else:
            lipschitz = torch.full((batch,), 1.0 / step, dtype=x.dtype, device=x.device)
    else:
        step = step if step is not None else 1.0 / op.lipschitz(tuple(x.shape[1:]))
        lipschitz = torch.full((batch,), 1.0 / step, dtype=x.dtype, device=x.device)

    # Rounding slack of the backtracking test: near the solution both sides agree to the
    # precision of 0.5·||A z − y||² (a float32 sum of residuals of large terms); without it the
    # test fails on noise, L grows without bound (step ~1e-14) and FISTA's momentum drifts.
    slack = 64 * torch.finfo(x.dtype).eps * 0.5 * _per_sample_dot(y, y)
    z = x
    objectives: list[torch.Tensor] = []
    times: list[float] = []
    converged = False
    start = time.perf_counter()
    k = 0
    for k in range(1, n_iter + 1):
        residual = op(z) - y
        grad = op.adjoint(residual)
        while True:
            inv_l = _bcast(1.0 / lipschitz, x)
            x_new = prox(z - inv_l * grad, _bcast(lam_t, x) * inv_l)
            if not line_search:
                break
            d = x_new - z
            upper = (
                0.5 * _per_sample_dot(residual, residual)
                + _per_sample_dot(grad, d)
                + 0.5 * lipschitz * _per_sample_dot(d, d)
            )
            ok = data_fidelity(op, x_new, y) <= upper + slack
            if bool(ok.all()):
                break
            lipschitz = torch.where(ok, lipschitz, lipschitz * eta)
        beta = betas[k - 1]
        change = (x_new - x).flatten(1).norm(dim=1) / x_new.flatten(1).norm(dim=1).clamp_min(1e-30)
        z = x_new + beta * (x_new - x) if beta else x_new
        x = x_new
        if track:
            objectives.append(lasso_objective(op, x, y, lam_t, penalty).detach())
        times.append(time.perf_counter() - start)
        if callback is not None:
            callback(k, x)
        if float(change.max()) < tol:
            converged = True
            break
    objective = torch.stack(objectives) if objectives else torch.empty(0, batch)
    return SolverResult(x, objective, times, k, converged, 1.0 / lipschitz)


def ista(op, y, lam, prox=soft_threshold, **kwargs) -> SolverResult:
    """ISTA: :func:`proximal_gradient` without momentum (objective never increases)."""
    return proximal_gradient(op, y, lam, prox, momentum="none", **kwargs)


def fista(op, y, lam, prox=soft_threshold, **kwargs) -> SolverResult:
    """FISTA (Beck & Teboulle t-sequence momentum); ``line_search=True`` for backtracking."""
    return proximal_gradient(op, y, lam, prox, momentum="fista", **kwargs)


def apg(op, y, lam, prox=soft_threshold, **kwargs) -> SolverResult:
    """Accelerated proximal gradient with Nesterov momentum β_k = (k−1)/(k+2).

    Seed: spotnet-fluorospot-learned-iterations.txt eq. (2), Fig. 2.
    """
    return proximal_gradient(op, y, lam, prox, momentum="nesterov", **kwargs)
