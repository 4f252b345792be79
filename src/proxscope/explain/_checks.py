"""Input checks and the one-score-per-image convention shared by the heatmap methods."""

from __future__ import annotations

import torch


def check_images(x: torch.Tensor) -> torch.Tensor:
    """x (N, C, H, W) floating, finite, non-empty; returned detached. ValueError otherwise."""
    if not isinstance(x, torch.Tensor) or x.dim() != 4 or not x.is_floating_point():
        shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(f"images must be a float tensor (N, C, H, W), got {shape}")
    if x.numel() == 0:
        raise ValueError(f"images are empty: shape {tuple(x.shape)}")
    if not torch.isfinite(x).all():
        raise ValueError("images contain NaN or Inf")
    return x.detach()


def scores(model, x: torch.Tensor) -> torch.Tensor:
    """model(x) as (N,) (accepts (N,) or (N, 1) outputs); ValueError for anything else."""
    out = model(x)
    if out.dim() == 2 and out.shape[1] == 1:
        out = out[:, 0]
    if tuple(out.shape) != (x.shape[0],):
        raise ValueError(f"model must return one score per image, (N,) or (N, 1), got {tuple(out.shape)}")
    return out
