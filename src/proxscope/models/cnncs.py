"""CNNCS cell detector: a compact residual CNN regresses the compressed line codes of the cell
centroids, a sparse-recovery layer returns the line projections.

Per patch: a_l ∈ R^n is the projection of the centroids on line l (see
:class:`proxscope.operators.lines.LineProjection`), x_l = D a_l with one Gaussian D (m×n,
entries N(0, 1/m)), and the CNN output is [x̂_1, ..., x̂_L, β·ĉ] (L·m + 1 values, multi-task
count). Recovery solves the lasso (eq. 4) per line: â_l = argmin 0.5·||D a − x̂_l||² + lam·||a||_1
with a >= 0 (cells are counts; the backward rules only use the support, so they hold unchanged).

Regressor (where this differs from the seed's ResNet-152 + dense layer): a small residual
encoder-decoder produces a non-negative map δ̂ (P×P) and the output layer is the *structured*
linear map x̂_l = D P_l δ̂, β·ĉ = β Σ δ̂ (P_l: the line projection). A dense layer from the
feature map to the L·m codes would have to learn the random columns of D for every pixel
position; it does not train from scratch in CPU minutes and would not fit the 1 MB bundled-weight
budget. The codes, the loss (3), the recovery layer and the decoding are the seed's.

Variants (Sec. 4.1). All three recover with the same solver at initialisation: ``n_iter``
iterations of FISTA (``momentum``) on D with ``lam``; they differ in how they train.
    cnncs    fixed D, L2 loss only; recovery at inference only.
    ecnncs1  loss eq. (3); recovery by a LISTA network (the solver unrolled, with learned
             per-layer matrices, steps and thresholds) differentiated by autograd.
    ecnncs2  loss eq. (3); the solver inside :class:`SparseRecovery` with the batch backward
             rules (8)-(9); D is learned.
The recovery parameters (LISTA's, D) train with ``recovery_lr`` times the CNN's learning rate:
they start at a solver that is already right, and Adam's steps of ~lr per entry are large
against entries of size 1/sqrt(m) and thresholds of size lam/||D||².

Seed: cnncs-cell-detection-compressed-sensing.txt eqs. (1)-(4) (encoding and lasso), eq. (3)
(loss), Sec. 4.1 (variants, multi-task label {x, β c}), eqs. (8)-(9) (ECNNCS-2 backward).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from ..layers.sparse_recovery import lasso_solver, lasso_step, sparse_recovery
from ..layers.unrolled import UnrolledProximalGradient
from ..operators.lines import LineProjection
from ..operators.matrix import MatrixOperator
from ..prox import nonneg_soft_threshold
from .base import ConfigModule

VARIANTS = ("cnncs", "ecnncs1", "ecnncs2")


@dataclass
class CNNCSConfig:
    """variant: 'cnncs' | 'ecnncs1' | 'ecnncs2'; patch: square input side (multiple of 8);
    n_lines (L), m: code length per line; width: CNN channels of the first stage; lam: lasso
    weight; alpha: weight of the L1 term of eq. (3); beta: count label scale; momentum, n_iter:
    recovery solver ('fista' or 'none' = ISTA) and its iterations (= LISTA layers of ECNNCS-1);
    recovery_lr: learning-rate factor of the recovery parameters; seed: draws D. Decoding:
    bandwidth (mean shift, pixels), vote_threshold (fraction of lines that must agree),
    code_threshold (minimum recovered count)."""

    variant: str = "ecnncs2"
    in_channels: int = 1
    patch: int = 64
    n_lines: int = 8
    m: int = 32
    width: int = 8
    lam: float = 0.1
    alpha: float = 0.2
    beta: float = 0.2
    momentum: str = "fista"
    n_iter: int = 30
    recovery_lr: float = 0.1
    seed: int = 0
    bandwidth: float = 4.0
    vote_threshold: float = 0.6
    code_threshold: float = 0.15


class ResidualBlock(nn.Module):
    """conv3×3(stride)–BN–ReLU–conv3×3–BN plus a (1×1, stride) shortcut, then ReLU."""

    def __init__(self, c_in: int, c_out: int, stride: int):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False),
            nn.BatchNorm2d(c_out),
            nn.ReLU(inplace=True),
            nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False),
            nn.BatchNorm2d(c_out),
        )
        self.shortcut = (
            nn.Identity()
            if stride == 1 and c_in == c_out
            else nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out))
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.body(x) + self.shortcut(x))


class CNNCS(ConfigModule):
    """Image patch (B, C, P, P) -> CNN output (B, L·m + 1); ``recover`` -> â (B, L, n)."""

    config_class = CNNCSConfig

    def __init__(self, config: CNNCSConfig):
        super().__init__(config)
        c = config
        if c.variant not in VARIANTS:
            raise ValueError(f"variant must be one of {VARIANTS}, got {c.variant!r}")
        if c.patch % 8:
            raise ValueError(f"patch must be a multiple of 8, got {c.patch}")
        self.lines = LineProjection(c.patch, c.patch, c.n_lines)
        n = self.lines.n_bins
        gen = torch.Generator().manual_seed(c.seed)
        D = torch.randn(c.m, n, generator=gen) / math.sqrt(c.m)
        self.D = nn.Parameter(D, requires_grad=c.variant == "ecnncs2")
        w = c.width
        self.stem = nn.Sequential(
            nn.Conv2d(c.in_channels, w, 3, 1, 1, bias=False), nn.BatchNorm2d(w), nn.ReLU(True)
        )
        self.down = nn.Sequential(ResidualBlock(w, 2 * w, 2), ResidualBlock(2 * w, 4 * w, 2))
        self.context = ResidualBlock(4 * w, 4 * w, 1)
        self.up = nn.Sequential(
            nn.Conv2d(4 * w, w, 1),
            nn.Upsample(scale_factor=4, mode="bilinear", align_corners=False),
        )
        self.density = nn.Sequential(
            nn.ReLU(), nn.Conv2d(w, w, 3, 1, 1), nn.ReLU(True), nn.Conv2d(w, 1, 1), nn.Softplus()
        )
        nn.init.constant_(self.density[3].bias, -7.0)  # start near an empty map (softplus ≈ 1e-3)
        if c.variant == "ecnncs1":
            self.lista = UnrolledProximalGradient.from_solver(
                MatrixOperator(D), c.lam, c.n_iter, step=lasso_step(D),
                prox=nonneg_soft_threshold, momentum=c.momentum,
            )

    @property
    def n_bins(self) -> int:
        return self.lines.n_bins

    def density_map(self, image: torch.Tensor) -> torch.Tensor:
        """(B, C, P, P) -> non-negative centroid map δ̂ (B, P, P) of the residual CNN."""
        skip = self.stem(image)
        features = self.up(self.context(self.down(skip)))
        return self.density(features + skip)[:, 0]

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        """(B, C, P, P) -> (B, L·m + 1): the line codes x̂_l = D P_l δ̂ and β·count = β Σ δ̂."""
        delta = self.density_map(image)
        codes = self.lines(delta) @ self.D.T
        return torch.cat([codes.flatten(1), self.config.beta * delta.flatten(1).sum(1, keepdim=True)], 1)

    def split(self, out: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """CNN output -> (x̂ (B, L, m), predicted count (B,))."""
        c = self.config
        return out[:, :-1].reshape(-1, c.n_lines, c.m), out[:, -1] / c.beta

    def encode(self, a: torch.Tensor) -> torch.Tensor:
        """Sparse labels a (B, L, n) -> dense codes x = D a (B, L, m) (target, no gradient)."""
        return a @ self.D.detach().T

    def recover(self, codes: torch.Tensor) -> torch.Tensor:
        """x̂ (B, L, m) -> â (B, L, n) with the variant's recovery layer (differentiable for
        ECNNCS-1/2)."""
        c = self.config
        if c.variant == "ecnncs1":
            flat = codes.reshape(-1, c.m)
            return self.lista(flat).reshape(*codes.shape[:-1], self.n_bins)
        solver = lasso_solver(c.momentum, c.n_iter)
        if c.variant == "ecnncs2":
            return sparse_recovery(codes, self.D, c.lam, solver, "batch")
        with torch.no_grad():
            return sparse_recovery(codes, self.D, c.lam, solver, "batch")

    def param_groups(self, lr: float) -> list[dict]:
        """Optimizer groups: the CNN at ``lr``, the recovery parameters (ECNNCS-1's LISTA,
        ECNNCS-2's D) at ``recovery_lr · lr``."""
        recovery = [p for p in (self.lista.parameters() if hasattr(self, "lista") else [self.D])
                    if p.requires_grad]
        ids = {id(p) for p in recovery}
        cnn = [p for p in self.parameters() if p.requires_grad and id(p) not in ids]
        groups = [{"params": cnn, "lr": lr}]
        if recovery:
            groups.append({"params": recovery, "lr": self.config.recovery_lr * lr})
        return groups

    def loss(self, image: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
        """Loss eq. (3) with the multi-task label {x, β c}, averaged over the batch:
        0.5·||[x̂, β ĉ] − [D a, β c]||² (+ alpha·||â − a||_1 for ECNNCS-1/2)."""
        c = self.config
        out = self.forward(image)
        codes, _ = self.split(out)
        count = a[:, 0].sum(-1)  # every cell lands on line 0 exactly once
        target = torch.cat([self.encode(a).flatten(1), (c.beta * count)[:, None]], 1)
        loss = 0.5 * (out - target).pow(2).sum(1).mean()
        if c.variant != "cnncs":
            loss = loss + c.alpha * (self.recover(codes) - a).abs().flatten(1).sum(1).mean()
        return loss
