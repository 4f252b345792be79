"""Small shared helpers: device choice and seeding."""

from __future__ import annotations

import os
import random


def resolve_device(name: str | None = None):
    """Return a ``torch.device``: ``name`` if given ('cpu', 'cuda', 'cuda:1'), else CUDA when present."""
    import torch

    from .errors import UserError

    if name in (None, "", "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError):
        raise UserError(f"unknown device '{name}' (use cpu, cuda or cuda:N)") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"device '{name}' requested but CUDA is not available; use --device cpu")
    return device


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (CPU and CUDA) random generators."""
    import numpy as np
    import torch

    random.seed(seed)
    os.environ.setdefault("PYTHONHASHSEED", str(seed))
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
