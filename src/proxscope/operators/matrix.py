"""Dense matrix operator (compressed sensing)."""

from __future__ import annotations

import torch
from torch import nn

from .base import LinearOperator


class MatrixOperator(LinearOperator):
    """A x = D x for a dense matrix D of shape (m, n).

    forward: x (B, n) -> (B, m); adjoint: y (B, m) -> (B, n).
    """

    def __init__(self, matrix: torch.Tensor):
        super().__init__()
        if matrix.ndim != 2:
            raise ValueError(f"matrix must be 2-D, got shape {tuple(matrix.shape)}")
        self.matrix = nn.Parameter(matrix.clone(), requires_grad=False)

    @property
    def in_shape(self) -> tuple[int]:
        return (self.matrix.shape[1],)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x @ self.matrix.T

    def adjoint(self, y: torch.Tensor) -> torch.Tensor:
        return y @ self.matrix
