"""Random-line projection of cell centroids (CNNCS output encoding, before compression).

L observation lines surround an h×w patch; line l has unit direction u_l at angle
θ_l = π (l + 1/2) / L (orientations spread uniformly over [0, π), none parallel to the pixel
axes). A point p (row, column) is projected on line l and binned into 1-pixel bins:

    t_l(p) = floor((p − c)·u_l + n/2),   c = ((h − 1)/2, (w − 1)/2),   n = ceil(sqrt(h² + w²)),

so every point of the patch lands in one of n bins on every line. The sparse label of line l is
a_l ∈ R^n with a_l[t] = number of cells projected into bin t (a (B, L, n) tensor for a batch).

As a linear map on an image-plane density δ (B, h, w) the projection is
``forward(δ)[b, l, t] = Σ_{pixels p: t_l(p) = t} δ[b, p]``; its adjoint is the back-projection
``adjoint(a)[b, p] = Σ_l a[b, l, t_l(p)]`` that spreads each line's detections over the image
plane (decoding: pixels where the back-projections of many lines agree are cell candidates).

Seed: cnncs-cell-detection-compressed-sensing.txt Sec. 3.1 (encoding by random projections,
n = sqrt(h² + w²)) and Sec. 4.3 (back-projection, Fig. 6).
"""

from __future__ import annotations

import math

import torch

from .base import LinearOperator


class LineProjection(LinearOperator):
    """Projection of an (h, w) patch on ``n_lines`` lines with 1-pixel bins.

    forward: δ (B, h, w) -> a (B, L, n); adjoint: a (B, L, n) -> (B, h, w).
    ``encode_points`` bins point coordinates directly (sub-pixel positions allowed).
    """

    def __init__(self, height: int, width: int, n_lines: int):
        super().__init__()
        if height < 1 or width < 1 or n_lines < 1:
            raise ValueError("height, width and n_lines must be positive")
        self.height, self.width, self.n_lines = int(height), int(width), int(n_lines)
        self.n_bins = math.ceil(math.sqrt(height**2 + width**2))
        theta = math.pi * (torch.arange(n_lines, dtype=torch.float64) + 0.5) / n_lines
        directions = torch.stack([torch.sin(theta), torch.cos(theta)], 1)
        self.register_buffer("directions", directions, persistent=False)
        rows, cols = torch.meshgrid(
            torch.arange(height, dtype=torch.float64),
            torch.arange(width, dtype=torch.float64),
            indexing="ij",
        )
        pixels = torch.stack([rows.reshape(-1), cols.reshape(-1)], 1)
        # (L, h*w) bin of every pixel centre on every line (geometry, rebuilt, not saved).
        self.register_buffer("pixel_bins", self.bins(pixels).T.contiguous(), persistent=False)

    @property
    def in_shape(self) -> tuple[int, int]:
        return (self.height, self.width)

    def bins(self, yx: torch.Tensor) -> torch.Tensor:
        """Bin index t_l(p) of points ``yx`` (N, 2) on every line -> (N, L) int64."""
        centre = torch.tensor(
            [(self.height - 1) / 2, (self.width - 1) / 2], dtype=torch.float64, device=yx.device
        )
        proj = (yx.to(torch.float64) - centre) @ self.directions.to(yx.device).T
        return torch.floor(proj + self.n_bins / 2).long().clamp_(0, self.n_bins - 1)

    def encode_points(
        self, yx: torch.Tensor, batch_index: torch.Tensor, batch_size: int
    ) -> torch.Tensor:
        """Sparse labels a (batch_size, L, n) of points ``yx`` (N, 2) belonging to patches
        ``batch_index`` (N,): a[b, l, t] counts the points of patch b in bin t of line l."""
        a = torch.zeros(batch_size * self.n_lines * self.n_bins, dtype=torch.float32)
        if len(yx):
            bins = self.bins(yx)  # (N, L)
            lines = torch.arange(self.n_lines).expand_as(bins)
            flat = (batch_index[:, None].long() * self.n_lines + lines) * self.n_bins + bins
            a.index_add_(0, flat.reshape(-1), torch.ones(flat.numel()))
        return a.view(batch_size, self.n_lines, self.n_bins).to(yx.device)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.reshape(x.shape[0], 1, -1).expand(-1, self.n_lines, -1)
        out = x.new_zeros(x.shape[0], self.n_lines, self.n_bins)
        index = self.pixel_bins.expand(x.shape[0], -1, -1)
        return out.scatter_add(2, index, flat)

    def adjoint(self, y: torch.Tensor) -> torch.Tensor:
        index = self.pixel_bins.expand(y.shape[0], -1, -1)
        return y.gather(2, index).sum(1).view(y.shape[0], self.height, self.width)
