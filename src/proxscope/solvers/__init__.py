"""Iterative solvers: ISTA, FISTA (+ backtracking), APG. Batched; return solution + history."""

from .proximal_gradient import (
    SolverResult,
    apg,
    data_fidelity,
    fista,
    ista,
    lasso_objective,
    proximal_gradient,
)

__all__ = [
    "SolverResult",
    "proximal_gradient",
    "ista",
    "fista",
    "apg",
    "data_fidelity",
    "lasso_objective",
]
