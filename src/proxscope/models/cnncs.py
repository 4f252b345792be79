"""CNNCS cell detector: a compact residual CNN regresses the compressed line codes of the cell
centroids, a sparse-recovery layer returns the line projections, and the decoder turns them into
detections.

Per patch: a_l ∈ R^n is the projection of the centroids on line l (see
:class:`proxscope.operators.lines.LineProjection`), x_l = D0 a_l with one fixed Gaussian
encoding matrix D0 (m×n, entries N(0, 1/m), a buffer), and the CNN output is
[x̂_1, ..., x̂_L, β·ĉ] (L·m + 1 values, multi-task count). Recovery solves the lasso (eq. 4) per
line with the recovery matrix D: â_l = argmin 0.5·||D a − x̂_l||² + lam·||a||_1 with a >= 0
(cells are counts; the backward rules only use the support, so they hold unchanged). D starts
at D0; only ECNNCS-2 trains it.

Code length: m = 112 per line by default (seed Sec. 4.3: m = 112, L = 27 on ICPR 2012; 103 and
118 on the other sets). With the default 64² patch n = 91 bins, so D^T D(p, p) ≈ I on supports
of the size seen here (7-25 per line), the premise of the batch rule (8)-(9).

Regressor (where this differs from the seed's ResNet-152 + dense layer): a small residual
encoder-decoder produces a non-negative map δ̂ (P×P) and the output layer is the *structured*
linear map x̂_l = D0 P_l δ̂, β·ĉ = β Σ δ̂ (P_l: the line projection). A dense layer from the
feature map to the L·m codes would have to learn the random columns of D0 for every pixel
position; it does not train from scratch in CPU minutes and would not fit the 1 MB bundled-weight
budget. The output layer uses the fixed D0, as the seed's CNN regresses the fixed code x = D0 a:
the code, and the L2 term of the loss (3), do not depend on the recovery matrix D, so D gets
gradient from the L1 term only and autograd's dLoss/dD is the derivative of the loss.

Variants (Sec. 4.1), one class each (``VARIANTS``). All three recover with the same solver at
initialisation: ``n_iter`` iterations of FISTA (``momentum``) on D = D0 with ``lam``; they
differ in how they train.
    CNNCS    fixed D, L2 loss only; recovery at inference only.
    ECNNCS1  loss eq. (3); recovery by a LISTA network (the solver unrolled, with learned
             per-layer matrices, steps and thresholds) differentiated by autograd.
    ECNNCS2  loss eq. (3); the solver inside :class:`SparseRecovery` with backward ``rule``
             ('batch': eqs. (8)-(9), 'exact': eqs. (5)-(7)); D is learned from the L1 term with
             its column norms held at those of D0 (:meth:`ECNNCS2.renormalise` after every
             optimizer step), or frozen (``learn_matrix=False``).
The recovery parameters (LISTA's, D) train with ``recovery_lr`` times the CNN's learning rate:
they start at a solver that is already right, and Adam's steps of ~lr per entry are large
against entries of size 1/sqrt(m) and thresholds of size lam/||D||².

Object scale: ``diameter`` is the object diameter (pixels) the network works at; images of
other object sizes are resampled to it (:mod:`proxscope.tasks.cells.detect`).

Decoding (Sec. 4.3): the recovered projections â (B, L, n) are summed over ±1 bin (a regressed
centroid spreads its count over neighbouring 1-pixel bins; thresholding single bins loses those
cells), thresholded at ``code_threshold`` (clamped to [0, 1], a soft count) and back-projected
into the image plane with the adjoint of the line projection. Dividing by L gives a vote map:
the fraction of lines whose detections pass through a pixel. Pixels where at least
``vote_threshold`` of the lines agree are candidate points; mean shift with ``bandwidth``
(pixels) clusters them and each cluster gives one detection at its centre, scored by its
highest vote.

Seed: cnncs-cell-detection-compressed-sensing.txt eqs. (1)-(4) (encoding and lasso), eq. (3)
(loss), Sec. 4.1 (variants, multi-task label {x, β c}), eqs. (8)-(9) (ECNNCS-2 backward),
Sec. 4.3 (threshold, back-projection, mean shift clustering, one cell per cluster).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from ..layers.sparse_recovery import RULES, lasso_solver, lasso_step, sparse_recovery
from ..layers.unrolled import UnrolledProximalGradient
from ..operators.lines import LineProjection
from ..operators.matrix import MatrixOperator
from ..prox import nonneg_soft_threshold
from .base import ConfigModule

#: vote threshold until one is tuned on validation images (``checkpoint.detection_settings``)
VOTE_THRESHOLD = 0.6


@dataclass
class CNNCSConfig:
    """patch: square input side (multiple of 8); n_lines (L), m: code length per line; width:
    CNN channels of the first stage; lam: lasso weight; alpha: weight of the L1 term of eq. (3);
    beta: count label scale; momentum, n_iter: recovery solver ('fista' or 'none' = ISTA) and its
    iterations (= LISTA layers of ECNNCS-1); recovery_lr: learning-rate factor of the recovery
    parameters; rule: ECNNCS-2's backward ('batch' or 'exact'); learn_matrix: ECNNCS-2 trains D
    (False: D stays D0); seed: draws D0. Decoding: bandwidth (mean shift, pixels),
    code_threshold (minimum recovered count). diameter: object diameter (pixels) at the
    network's scale, as :func:`proxscope.tasks.cells.train.estimate_diameter` measures it (10.8
    on the simulator's targets of radius 3.5-6 px)."""

    in_channels: int = 1
    patch: int = 64
    n_lines: int = 8
    m: int = 112
    width: int = 8
    lam: float = 0.1
    alpha: float = 0.2
    beta: float = 0.2
    momentum: str = "fista"
    n_iter: int = 30
    recovery_lr: float = 0.1
    rule: str = "batch"
    learn_matrix: bool = True
    seed: int = 0
    bandwidth: float = 4.0
    code_threshold: float = 0.15
    diameter: float = 10.8


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
    """Image patch (B, C, P, P) -> CNN output (B, L·m + 1); ``recover`` -> â (B, L, n).

    This class is the plain CNNCS: D fixed, the L2 loss on the codes only, recovery without
    gradients. The subclasses :class:`ECNNCS1` and :class:`ECNNCS2` train through the recovery.
    Buffers/parameters: D0 (m, n) the fixed encoding matrix of the CNN's output layer and of
    the targets; D (m, n) the recovery matrix (= D0 unless ECNNCS-2 trains it)."""

    config_class = CNNCSConfig
    #: whether the variant can train D (ECNNCS-2, unless ``config.learn_matrix`` is False)
    trains_matrix: ClassVar[bool] = False

    def __init__(self, config: CNNCSConfig):
        super().__init__(config)
        c = config
        if c.patch % 8:
            raise ValueError(f"patch must be a multiple of 8, got {c.patch}")
        self.lines = LineProjection(c.patch, c.patch, c.n_lines)
        gen = torch.Generator().manual_seed(c.seed)
        if c.rule not in RULES:
            raise ValueError(f"rule must be one of {RULES}, got {c.rule!r}")
        D0 = torch.randn(c.m, self.n_bins, generator=gen) / math.sqrt(c.m)
        self.register_buffer("D0", D0)
        self.D = nn.Parameter(D0.clone(), requires_grad=self.trains_matrix and c.learn_matrix)
        self._register_load_state_dict_pre_hook(_encoding_from_older_checkpoint)
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

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> CNNCS:
        """Rebuild from a checkpoint's config. Older checkpoints are all of class CNNCS and name
        their variant in the config (``variant``: 'cnncs', 'ecnncs1', 'ecnncs2'); they also kept
        the tuned ``vote_threshold`` there, a copy of the one in their ``extra`` (now read with
        :func:`proxscope.checkpoint.detection_settings`)."""
        config = dict(config)
        config.pop("vote_threshold", None)
        variant = VARIANTS.get(config.pop("variant", None), cls)
        return super(CNNCS, variant).from_config(config)

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
        codes = self.lines(delta) @ self.D0.T
        return torch.cat([codes.flatten(1), self.config.beta * delta.flatten(1).sum(1, keepdim=True)], 1)

    def split(self, out: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """CNN output -> (x̂ (B, L, m), predicted count (B,))."""
        c = self.config
        return out[:, :-1].reshape(-1, c.n_lines, c.m), out[:, -1] / c.beta

    def encode(self, a: torch.Tensor) -> torch.Tensor:
        """Sparse labels a (B, L, n) -> dense codes x = D0 a (B, L, m) (target)."""
        return a @ self.D0.T

    def solve(self, codes: torch.Tensor) -> torch.Tensor:
        """x̂ (B, L, m) -> â (B, L, n): ``n_iter`` solver iterations on D inside
        :class:`~proxscope.layers.sparse_recovery.SparseRecovery` (backward ``config.rule``)."""
        c = self.config
        return sparse_recovery(codes, self.D, c.lam, lasso_solver(c.momentum, c.n_iter), c.rule)

    def recover(self, codes: torch.Tensor) -> torch.Tensor:
        """x̂ (B, L, m) -> â (B, L, n) with the variant's recovery layer (CNNCS: no gradient)."""
        with torch.no_grad():
            return self.solve(codes)

    def recovery_parameters(self) -> list[nn.Parameter]:
        """The parameters of the recovery layer that train (none for CNNCS)."""
        return []

    def param_groups(self, lr: float) -> list[dict]:
        """Optimizer groups: the CNN at ``lr``, the recovery parameters (ECNNCS-1's LISTA,
        ECNNCS-2's D) at ``recovery_lr · lr``."""
        recovery = self.recovery_parameters()
        ids = {id(p) for p in recovery}
        cnn = [p for p in self.parameters() if p.requires_grad and id(p) not in ids]
        groups = [{"params": cnn, "lr": lr}]
        if recovery:
            groups.append({"params": recovery, "lr": self.config.recovery_lr * lr})
        return groups

    def code_loss(self, out: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
        """L2 term of eq. (3) with the multi-task label {x, β c}, averaged over the batch:
        0.5·||[x̂, β ĉ] − [D a, β c]||² for CNN output ``out`` and sparse labels a (B, L, n)."""
        count = a[:, 0].sum(-1)  # every cell lands on line 0 exactly once
        target = torch.cat([self.encode(a).flatten(1), (self.config.beta * count)[:, None]], 1)
        return 0.5 * (out - target).pow(2).sum(1).mean()

    def loss(self, image: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
        """Training loss of images (B, C, P, P) against sparse labels a (B, L, n): the L2 term."""
        return self.code_loss(self.forward(image), a)


class _EndToEnd(CNNCS):
    """ECNNCS: the loss (3) adds alpha·||â − a||_1 through a differentiable recovery."""

    def loss(self, image: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
        """0.5·||[x̂, β ĉ] − [D a, β c]||² + alpha·||â − a||_1, averaged over the batch."""
        out = self.forward(image)
        codes, _ = self.split(out)
        l1 = (self.recover(codes) - a).abs().flatten(1).sum(1).mean()
        return self.code_loss(out, a) + self.config.alpha * l1


class ECNNCS1(_EndToEnd):
    """ECNNCS-1: recovery by LISTA (the solver unrolled, its layers trained) through autograd."""

    def __init__(self, config: CNNCSConfig):
        super().__init__(config)
        c = config
        D = self.D0.clone()
        self.lista = UnrolledProximalGradient.from_solver(
            MatrixOperator(D), c.lam, c.n_iter, step=lasso_step(D),
            prox=nonneg_soft_threshold, momentum=c.momentum,
        )

    def recover(self, codes: torch.Tensor) -> torch.Tensor:
        flat = codes.reshape(-1, self.config.m)
        return self.lista(flat).reshape(*codes.shape[:-1], self.n_bins)

    def recovery_parameters(self) -> list[nn.Parameter]:
        return [p for p in self.lista.parameters() if p.requires_grad]


class ECNNCS2(_EndToEnd):
    """ECNNCS-2: the solver inside SparseRecovery, backward by rules (8)-(9) (or (5)-(7)); D is
    learned from the L1 term, its column norms held at D0's (or frozen: ``learn_matrix``)."""

    trains_matrix = True

    def recover(self, codes: torch.Tensor) -> torch.Tensor:
        return self.solve(codes)

    def recovery_parameters(self) -> list[nn.Parameter]:
        return [self.D] if self.D.requires_grad else []

    @torch.no_grad()
    def renormalise(self) -> None:
        """Rescale every column of D to the norm of the same column of D0 (call after each
        optimizer step): a shrinking column raises its effective lasso threshold lam/||D_j||,
        a growing one lowers it, so without this D drifts in scale rather than in direction."""
        self.D.mul_(self.D0.norm(dim=0) / self.D.norm(dim=0).clamp_min(1e-12))


VARIANTS: dict[str, type[CNNCS]] = {"cnncs": CNNCS, "ecnncs1": ECNNCS1, "ecnncs2": ECNNCS2}


def _encoding_from_older_checkpoint(state, prefix, *_args) -> None:
    """Checkpoints written before D0 existed used their one D both to encode and to recover:
    load it as D0 too, which reproduces their predictions exactly."""
    if prefix + "D0" not in state and prefix + "D" in state:
        state[prefix + "D0"] = state[prefix + "D"]


# Decoding ----------------------------------------------------------------------------------


def encode_patches(lines: LineProjection, points: list[np.ndarray]) -> torch.Tensor:
    """Centroids of each patch (list of (N_b, 2) arrays, patch coordinates) -> a (B, L, n)."""
    sizes = [len(p) for p in points]
    yx = torch.as_tensor(np.concatenate([np.reshape(p, (-1, 2)) for p in points]), dtype=torch.float64)
    batch_index = torch.repeat_interleave(torch.arange(len(points)), torch.as_tensor(sizes))
    return lines.encode_points(yx, batch_index, len(points))


def vote_map(lines: LineProjection, a_hat: torch.Tensor, code_threshold: float) -> torch.Tensor:
    """Recovered projections (B, L, n) -> vote map (B, h, w) in [0, 1]."""
    summed = 3 * torch.nn.functional.avg_pool1d(a_hat, 3, stride=1, padding=1)
    soft = torch.where(summed >= code_threshold, summed.clamp(0, 1), torch.zeros_like(summed))
    return lines.adjoint(soft) / lines.n_lines


def cluster_votes(
    votes: np.ndarray, vote_threshold: float, bandwidth: float
) -> tuple[np.ndarray, np.ndarray]:
    """Vote map (h, w) -> detections (K, 2) as (y, x) and scores (K,) by mean shift.

    Flat-kernel mean shift on the candidate pixels (votes >= ``vote_threshold``), as
    scikit-learn's ``MeanShift(bandwidth, bin_seeding=True, cluster_all=True)``: seeds at the
    occupied bins of side ``bandwidth``; each seed moves to the mean of the candidates within
    ``bandwidth`` of it until it stops; converged seeds closer than ``bandwidth`` to one with more
    candidates in its window are dropped; each candidate joins its nearest centre, and a
    cluster's score is its highest vote. Vectorised on the pixel grid: the window sums are
    disc correlations of the candidate mask (and of its coordinates), read at the seed's
    nearest pixel, so a window is centred to within half a pixel (sklearn's loop over seeds
    and radius queries took 0.5-2 s per 256² map).
    """
    from scipy import ndimage
    from scipy.spatial import cKDTree

    mask = votes >= vote_threshold
    candidates = np.argwhere(mask)
    if len(candidates) == 0:
        return np.zeros((0, 2)), np.zeros(0)
    r = int(np.floor(bandwidth))
    off = np.arange(-r, r + 1)
    disc = (off[:, None] ** 2 + off[None, :] ** 2 <= bandwidth**2).astype(float)
    yy, xx = np.indices(votes.shape, dtype=float)
    m = mask.astype(float)
    count, sum_y, sum_x = (ndimage.correlate(a, disc, mode="constant") for a in (m, m * yy, m * xx))
    limit = np.array(votes.shape) - 1
    seeds = np.unique(np.round(candidates / bandwidth), axis=0) * bandwidth
    for _ in range(100):
        pix = tuple(np.clip(np.round(seeds), 0, limit).astype(int).T)
        seeds, n = seeds[count[pix] > 0], count[pix][count[pix] > 0]
        pix = tuple(np.clip(np.round(seeds), 0, limit).astype(int).T)
        new = np.stack([sum_y[pix], sum_x[pix]], 1) / n[:, None]
        moved = np.abs(new - seeds).max(1) if len(seeds) else np.zeros(0)
        seeds = new
        if not (moved >= 1e-3 * bandwidth).any():
            break
    pix = tuple(np.clip(np.round(seeds), 0, limit).astype(int).T)
    strength = count[pix]
    order = np.argsort(-strength, kind="stable")
    kept: list[np.ndarray] = []
    for centre in seeds[order]:
        if not kept or np.min(np.hypot(*(np.array(kept) - centre).T)) >= bandwidth:
            kept.append(centre)
    centres = np.array(kept).reshape(-1, 2)
    _, labels = cKDTree(centres).query(candidates)
    scores = np.zeros(len(centres))
    np.maximum.at(scores, labels, votes[tuple(candidates.T)])
    return centres, scores


def decode(
    lines: LineProjection,
    a_hat: torch.Tensor,
    code_threshold: float,
    vote_threshold: float,
    bandwidth: float,
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Recovered projections (B, L, n) -> per patch (detections (K, 2), scores (K,))."""
    votes = vote_map(lines, a_hat, code_threshold).cpu().numpy()
    return [cluster_votes(v, vote_threshold, bandwidth) for v in votes]
