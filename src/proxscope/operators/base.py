"""Linear forward models A with ``forward``, ``adjoint`` and ``lipschitz``.

Every operator is an ``nn.Module`` batched over a leading dimension: ``forward`` maps
``(B, *in_shape) -> (B, *out_shape)`` and ``adjoint`` maps back. Operator weights are registered
as ``nn.Parameter`` with ``requires_grad=False``; unrolled networks copy an operator per layer and
switch ``requires_grad`` on (see :mod:`proxscope.layers.unrolled`).
"""

from __future__ import annotations

import torch
from torch import nn


class LinearOperator(nn.Module):
    """Base class. Subclasses implement :meth:`forward` and :meth:`adjoint`."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def adjoint(self, y: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def normal(self, x: torch.Tensor) -> torch.Tensor:
        """A^T A x."""
        return self.adjoint(self.forward(x))

    @torch.no_grad()
    def lipschitz(
        self,
        in_shape: tuple[int, ...],
        n_iter: int = 200,
        tol: float = 1e-7,
        seed: int = 0,
    ) -> float:
        """Largest eigenvalue of A^T A (= ||A||_2^2) by power iteration.

        This is the Lipschitz constant of the gradient of 0.5·||A x − y||², so 1/lipschitz is the
        largest safe constant step of ISTA/FISTA. ``in_shape`` is the input shape without the batch
        dimension (conv operators depend slightly on the image size). Cached per shape; the cache
        is dropped when the operator's weights change version.
        """
        key = (tuple(in_shape), self._weights_version())
        cache = self.__dict__.setdefault("_lipschitz_cache", {})
        if key in cache:
            return cache[key]
        p = next(iter(self.parameters()), None)
        dtype = p.dtype if p is not None else torch.float64
        device = p.device if p is not None else torch.device("cpu")
        gen = torch.Generator(device="cpu").manual_seed(seed)
        v = torch.randn((1, *in_shape), generator=gen, dtype=dtype).to(device)
        v = v / v.norm()
        value = 0.0
        for _ in range(n_iter):
            w = self.normal(v)
            new_value = float((v * w).sum())
            norm = w.norm()
            if norm == 0:
                break
            v = w / norm
            if abs(new_value - value) <= tol * abs(new_value):
                value = new_value
                break
            value = new_value
        cache[key] = value
        return value

    def _weights_version(self) -> tuple[int, ...]:
        return tuple(p._version for p in self.parameters())
