"""LISTA for a dense sensing matrix: n learned ISTA/FISTA iterations of the lasso
min_x 0.5·||D x − y||² + lam·||x||_1, each layer with its own matrix, step and threshold.

Seed: cnncs-cell-detection-compressed-sensing.txt eq. (4) (the lasso recovery) and Sec. 4.1
(ECNNCS-1 trains through a LISTA recovery); spodnet-lista-spod-microscopy.txt Sec. 3 (LISTA).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..layers.unrolled import UnrolledProximalGradient, momentum_schedule
from ..operators.matrix import MatrixOperator
from ..prox import nonneg_soft_threshold, soft_threshold
from .base import ConfigModule


@dataclass
class LISTAConfig:
    m: int  # measurements (rows of D)
    n: int  # unknowns (columns of D)
    n_layers: int = 10
    nonneg: bool = False
    momentum: str = "none"  # momentum rule at init: 'none' (ISTA), 'fista', 'nesterov'


class LISTA(ConfigModule):
    """y (B, m) -> x (B, n). Build with :meth:`from_solver` to start as exact solver iterations."""

    config_class = LISTAConfig

    def __init__(self, config: LISTAConfig):
        super().__init__(config)
        n_layers = config.n_layers
        ops = [MatrixOperator(torch.zeros(config.m, config.n)) for _ in range(n_layers)]
        for op in ops:
            op.matrix.requires_grad_(True)
        self.net = UnrolledProximalGradient(
            ops,
            [1.0] * n_layers,
            [0.0] * n_layers,
            momentum_schedule(config.momentum, n_layers),
            prox=nonneg_soft_threshold if config.nonneg else soft_threshold,
        )

    @classmethod
    def from_solver(
        cls, matrix: torch.Tensor, lam: float, n_layers: int = 10, nonneg: bool = False,
        momentum: str = "none",
    ) -> LISTA:
        """Initialise as exactly ``n_layers`` iterations of ISTA/FISTA with step 1/||D||²."""
        m, n = matrix.shape
        model = cls(LISTAConfig(m, n, n_layers, nonneg, momentum))
        op = MatrixOperator(matrix.to(torch.get_default_dtype()))
        model.net = UnrolledProximalGradient.from_solver(
            op, lam, n_layers, in_shape=(n,), prox=model.net.prox, momentum=momentum
        )
        return model

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        return self.net(y)
