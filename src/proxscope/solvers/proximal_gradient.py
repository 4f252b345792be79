"""Proximal-gradient solvers for min_x 0.5·||A x − y||² + lam·R(x): ISTA, FISTA, APG.

All three are one loop (:func:`proximal_gradient`) that differ in the momentum rule; they are
batched over the leading dimension (each sample has its own objective, and with line search its
own step) and return the solution with a per-iteration history of objective and elapsed time.
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from ..operators.base import LinearOperator
from ..prox import penalty_of, soft_threshold


@dataclass
class SolverResult:
    """x: solution (B, ...); objective: (n_iter, B) objective after each iteration (empty when
    not tracked); time: elapsed seconds after each iteration; n_iter: iterations of the longest
    sample; converged: every sample met the tolerance; step: final step per sample (B,);
    sample_iters: iterations of each sample (B,)."""

    x: torch.Tensor
    objective: torch.Tensor
    time: list[float] = field(default_factory=list)
    n_iter: int = 0
    converged: bool = False
    step: torch.Tensor | None = None
    sample_iters: torch.Tensor | None = None


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


def _check_dtype(op: LinearOperator, y: torch.Tensor) -> None:
    """One clear error for y in another float type than the operator's weights."""
    p = next(iter(op.parameters()), None)
    if p is not None and p.is_floating_point() and y.dtype != p.dtype:
        raise TypeError(f"y is {y.dtype} but the operator's weights are {p.dtype}: convert one "
                        f"(y.to({p.dtype}) or op.to({y.dtype}))")


def _check_step(op: LinearOperator, step: float, in_shape: tuple[int, ...]) -> None:
    """A warning for a constant step above 1/L (ISTA/FISTA may diverge)."""
    limit = 1.0 / op.lipschitz(in_shape)
    if step > limit * (1 + 1e-6):
        warnings.warn(f"step {step:.6g} is above 1/L = {limit:.6g} (L = ||A||²): the iteration "
                      f"may diverge; use step <= 1/L or line_search=True", RuntimeWarning,
                      stacklevel=4)


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
    up to a rounding slack of 64·eps(dtype)·0.5·||y||², from ``step`` or (None) from a
    Rayleigh quotient of A^T A at a seeded random vector, the same for every sample.

    Each sample stops on its own when ||x_k − x_{k−1}||/||x_k|| < ``tol`` (it is then left as it
    is, so a sample's result does not depend on the others in the batch), all of them after
    ``n_iter`` iterations; ``SolverResult.n_iter`` is the largest count, ``sample_iters`` each
    sample's. ``lam`` may be a float or a (B,) tensor. ``callback(k, x_k)``, if given, is called
    after every iteration (e.g. to score intermediate iterates). y must have the float type of
    the operator's weights (TypeError otherwise); a constant ``step`` above 1/L warns.

    Seed: spodnet-lista-spod-microscopy.txt eqs. (6)-(7) (ISTA step and threshold);
    spotnet-fluorospot-learned-iterations.txt eq. (2) and Fig. 2 (APG).
    """
    betas = momentum_schedule(momentum, n_iter)
    penalty = penalty or penalty_of(prox)
    _check_dtype(op, y)
    x = torch.zeros_like(op.adjoint(y)) if x0 is None else x0.clone()
    batch = x.shape[0]
    in_shape = tuple(x.shape[1:])
    if step is not None and not line_search:
        _check_step(op, step, in_shape)
    lam_t = torch.as_tensor(lam, dtype=x.dtype, device=x.device).expand(batch).clone()
    if line_search and step is None:
        gen = torch.Generator(device="cpu").manual_seed(0)
        v = torch.randn((1, *in_shape), generator=gen, dtype=torch.float64).to(x)
        lip0 = float(op.normal(v).norm() / v.norm())
        lipschitz = torch.full((batch,), max(lip0, 1e-12), dtype=x.dtype, device=x.device)
    else:
        step = step if step is not None else 1.0 / op.lipschitz(in_shape)
        lipschitz = torch.full((batch,), 1.0 / step, dtype=x.dtype, device=x.device)

    # Rounding slack of the backtracking test: near the solution both sides agree to the
    # precision of 0.5·||A z − y||² (a float32 sum of residuals of large terms); without it the
    # test fails on noise, L grows without bound (step ~1e-14) and FISTA's momentum drifts.
    slack = 64 * torch.finfo(x.dtype).eps * 0.5 * _per_sample_dot(y, y)
    z = x
    objectives: list[torch.Tensor] = []
    times: list[float] = []
    iters = torch.zeros(batch, dtype=torch.long)
    active = torch.ones(batch, dtype=torch.bool)
    start = time.perf_counter()
    k = 0
    for k in range(1, n_iter + 1):
        idx = active.nonzero()[:, 0] if not bool(active.all()) else None
        zs, xs, ys, lam_s, lip, slack_s = (t if idx is None else t[idx.to(t.device)]
                                           for t in (z, x, y, lam_t, lipschitz, slack))
        residual = op(zs) - ys
        grad = op.adjoint(residual)
        while True:
            inv_l = _bcast(1.0 / lip, xs)
            x_new = prox(zs - inv_l * grad, _bcast(lam_s, xs) * inv_l)
            if not line_search:
                break
            d = x_new - zs
            upper = (
                0.5 * _per_sample_dot(residual, residual)
                + _per_sample_dot(grad, d)
                + 0.5 * lip * _per_sample_dot(d, d)
            )
            ok = data_fidelity(op, x_new, ys) <= upper + slack_s
            if bool(ok.all()):
                break
            lip = torch.where(ok, lip, lip * eta)
        beta = betas[k - 1]
        change = (x_new - xs).flatten(1).norm(dim=1) / x_new.flatten(1).norm(dim=1).clamp_min(1e-30)
        z_new = x_new + beta * (x_new - xs) if beta else x_new
        if idx is None:
            x, z, lipschitz = x_new, z_new, lip
        else:
            dev_idx = idx.to(x.device)
            x, z = x.index_copy(0, dev_idx, x_new), z.index_copy(0, dev_idx, z_new)
            lipschitz = lipschitz.index_copy(0, dev_idx, lip)
        ran = active.nonzero()[:, 0]
        iters[ran] = k
        active[ran[(change < tol).cpu()]] = False
        if track:
            objectives.append(lasso_objective(op, x, y, lam_t, penalty).detach())
        times.append(time.perf_counter() - start)
        if callback is not None:
            callback(k, x)
        if not bool(active.any()):
            break
    objective = torch.stack(objectives) if objectives else torch.empty(0, batch)
    return SolverResult(x, objective, times, k, not bool(active.any()), 1.0 / lipschitz, iters)


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
