"""SparseRecovery: a lasso layer whose backward does not depend on the forward solver.

Forward: any solver of the lasso (seed eq. 4)

    â = argmin_a 0.5·||D a − x̂||² + lam·||a||_1        (or with a >= 0: nonneg prox)

e.g. ISTA/FISTA (:func:`unrolled_lasso`, the default), a LISTA network, OMP, or a non-differentiable
routine. It runs without building an autograd graph. Backward, with p = {i : â_i ≠ 0} per
sample, g = δâ restricted to p (zero elsewhere), r = x̂ − D â:

    exact rule (eqs. 5-7):  v = [D(:, p)^T D(:, p)]^{-1} g(p)
                            δx̂ = D(:, p) v,   δD(:, p) = r v^T − D(:, p) v â(p)^T,  δD(:, q) = 0
    batch rule (eqs. 8-9):  v ≈ g(p)  ([D^T D(p, p)]^{-1} ≈ I for Gaussian D with variance 1/m)

Over a batch, δD is the sum of the per-sample terms. The exact rule solves one |p|×|p| system
per sample; here it is vectorised as a batched n×n solve of the masked Gram matrix
diag(1_p) D^T D diag(1_p) + diag(1_q), whose solution is v on p and 0 on q. Where D(:, p) is
rank-deficient (e.g. |p| > m, as an unconverged solver leaves it), the system is singular:
those samples get the least-squares (minimum-norm) solution, the pseudo-inverse with
eigenvalues below ``sqrt(eps)`` times the largest cut off; a full-rank support keeps the exact
inverse, so the rule still matches finite differences wherever the lasso solution is
differentiable.
Memory of the backward is O(batch·n) (batch rule) and does not grow with solver iterations.

Seed: cnncs-cell-detection-compressed-sensing.txt eqs. (4)-(9), Appendix A eqs. (20), (30)-(33).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

import torch

from ..operators.matrix import MatrixOperator
from ..prox import nonneg_soft_threshold, soft_threshold
from .unrolled import UnrolledProximalGradient

Solver = Callable[[MatrixOperator, torch.Tensor, float], torch.Tensor]
RULES = ("exact", "batch")


@contextlib.contextmanager
def single_thread() -> Iterator[None]:
    """Run torch on one thread inside the block: the per-iteration ops of small lasso problems
    are far too small to gain from threads, and on a loaded machine thread hand-offs dominate."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def lasso_step(D: torch.Tensor) -> float:
    """1/||D||² (spectral norm from an SVD of the small matrix): the ISTA/FISTA step."""
    return 1.0 / float(torch.linalg.matrix_norm(D.detach(), 2) ** 2)


def unrolled_lasso(
    D: torch.Tensor, lam: float, n_iter: int, momentum: str = "fista", nonneg: bool = True
) -> UnrolledProximalGradient:
    """``n_iter`` iterations of ISTA (momentum 'none') or FISTA ('fista') on the lasso (4) with
    sensing matrix ``D`` (m, n), as an unrolled network with one shared operator: step
    :func:`lasso_step`, threshold lam·step, nonneg or plain soft
    threshold. It is the bare iteration of :func:`proxscope.solvers.proximal_gradient` (no
    per-iteration convergence test or history), so it is also the lean forward solver of
    :class:`SparseRecovery`; with ``copy.deepcopy`` of the operator per layer it is the
    initialisation of a LISTA network."""
    return UnrolledProximalGradient.from_solver(
        MatrixOperator(D.detach()), lam, n_iter, step=lasso_step(D), momentum=momentum,
        prox=nonneg_soft_threshold if nonneg else soft_threshold, share_op=True,
    )


def lasso_solver(momentum: str = "fista", n_iter: int = 30, nonneg: bool = True) -> Solver:
    """A forward solver ``solver(op, x, lam) -> a``: :func:`unrolled_lasso` on ``op.matrix``
    (ISTA or FISTA, ``n_iter`` iterations), run without autograd on one thread (see
    :func:`single_thread`)."""

    def solve(op: MatrixOperator, x: torch.Tensor, lam: float) -> torch.Tensor:
        with single_thread(), torch.no_grad():
            return unrolled_lasso(op.matrix, lam, n_iter, momentum, nonneg)(x)

    return solve


def _backward_direction(D: torch.Tensor, a: torch.Tensor, grad_a: torch.Tensor, rule: str):
    """v (N, n): [D^T D(p, p)]^{-1} δâ(p) on the support p of each row of ``a``, 0 elsewhere."""
    support = a != 0
    g = torch.where(support, grad_a, torch.zeros_like(grad_a))
    if rule == "batch":
        return g
    mask = support.to(D.dtype)
    gram = D.T @ D
    system = mask[:, :, None] * gram * mask[:, None, :] + torch.diag_embed(1 - mask)
    rtol = torch.finfo(D.dtype).eps ** 0.5
    factor, info = torch.linalg.cholesky_ex(system)
    v = torch.cholesky_solve(g.unsqueeze(-1), factor).squeeze(-1)
    # a pivot² below rtol·(largest diagonal entry) bounds the smallest eigenvalue from above
    pivot = factor.diagonal(dim1=-2, dim2=-1).pow(2).amin(-1)
    bad = (info != 0) | ~(pivot >= rtol * gram.diagonal().amax()) | ~v.isfinite().all(-1)
    if bad.any():  # rank-deficient supports: least squares instead of the (singular) inverse
        pinv = torch.linalg.pinv(system[bad], hermitian=True, rtol=rtol)
        v[bad] = (pinv @ g[bad].unsqueeze(-1)).squeeze(-1)
    return v


class SparseRecovery(torch.autograd.Function):
    """``SparseRecovery.apply(x, D, lam, solver, rule) -> a``.

    x: (N, m) dense codes; D: (m, n) sensing matrix; lam: lasso weight; solver:
    ``solver(op, x, lam) -> a`` (N, n); rule: 'exact' (eqs. 5-7) or 'batch' (eqs. 8-9).
    Gradients flow to x and D (not to lam).
    """

    @staticmethod
    def forward(ctx, x, D, lam, solver, rule):
        if rule not in RULES:
            raise ValueError(f"rule must be one of {RULES}, got {rule!r}")
        with torch.no_grad():
            a = solver(MatrixOperator(D.detach()), x.detach(), lam).detach()
        ctx.rule = rule
        ctx.save_for_backward(x, D, a)
        return a

    @staticmethod
    def backward(ctx, grad_a):
        x, D, a = ctx.saved_tensors
        v = _backward_direction(D, a, grad_a, ctx.rule)
        grad_x = v @ D.T if ctx.needs_input_grad[0] else None
        grad_d = None
        if ctx.needs_input_grad[1]:
            residual = x - a @ D.T
            # Σ_i r_i v_i^T − D v_i a_i^T  (columns outside the support vanish since v_i = 0 there
            # and a_i = 0 there).
            grad_d = residual.T @ v - D @ (v.T @ a)
        return grad_x, grad_d, None, None, None


def sparse_recovery(
    x: torch.Tensor,
    D: torch.Tensor,
    lam: float,
    solver: Solver | None = None,
    rule: str = "batch",
) -> torch.Tensor:
    """Functional form of :class:`SparseRecovery`: x (..., m) -> â (..., n).

    solver: default :func:`lasso_solver` (30 FISTA iterations, non-negative soft threshold).
    """
    solver = solver or lasso_solver()
    lead = x.shape[:-1]
    a = SparseRecovery.apply(x.reshape(-1, x.shape[-1]), D, lam, solver, rule)
    return a.reshape(*lead, D.shape[1])
