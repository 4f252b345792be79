"""Linear forward models A with ``forward``, ``adjoint`` and ``lipschitz``.

Every operator is an ``nn.Module`` batched over a leading dimension: ``forward`` maps
``(B, *in_shape) -> (B, *out_shape)`` and ``adjoint`` maps back. Operator weights are registered
as ``nn.Parameter`` with ``requires_grad=False``; unrolled networks copy an operator per layer and
switch ``requires_grad`` on (see :mod:`proxscope.layers.unrolled`).
"""

from __future__ import annotations

import numpy as np
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
        n_iter: int = 100,
        tol: float = 1e-6,
        seed: int = 0,
    ) -> float:
        """Largest eigenvalue of A^T A (= ||A||_2^2) by the Lanczos method.

        This is the Lipschitz constant of the gradient of 0.5·||A x − y||², so 1/lipschitz is the
        largest safe constant step of ISTA/FISTA. ``in_shape`` is the input shape without the batch
        dimension (conv operators depend slightly on the image size).

        Lanczos with full re-orthogonalisation from a seeded random start (``seed``: the same
        value on every call): at most ``n_iter`` products with A^T A; stops when the residual
        bound ||A^T A u − θ u|| of the top Ritz pair falls to ``tol``·θ (or the Krylov space is
        invariant). Unlike a Rayleigh-quotient-change test on a power iteration this cannot stop
        early on a slowly converging spectrum (σ = 1, 0.995, 0.995, ...: power iteration creeps
        up from 0.990). The value is a Ritz value, <= the true constant. Cached per (shape,
        n_iter, tol, seed); the cache is dropped when the operator's weights change version.
        """
        key = (tuple(in_shape), n_iter, tol, seed, self._weights_version())
        cache = self.__dict__.setdefault("_lipschitz_cache", {})
        if key not in cache:
            cache[key] = self._lanczos(tuple(in_shape), n_iter, tol, seed)
        return cache[key]

    def _lanczos(self, in_shape: tuple[int, ...], n_iter: int, tol: float, seed: int,
                 max_basis: int = 64) -> float:
        """Top Ritz value of A^T A; restarted from the top Ritz vector every ``max_basis``
        steps (memory and re-orthogonalisation cost stay bounded)."""
        p = next(iter(self.parameters()), None)
        dtype = p.dtype if p is not None else torch.float64
        device = p.device if p is not None else torch.device("cpu")
        gen = torch.Generator(device="cpu").manual_seed(seed)
        v = torch.randn((1, *in_shape), generator=gen, dtype=torch.float64).to(dtype).to(device)
        theta, done = 0.0, 0
        while done < n_iter:
            basis = [v / v.norm()]
            alphas: list[float] = []
            betas: list[float] = []
            while True:
                w = self.normal(basis[-1])
                done += 1
                alphas.append(float((basis[-1] * w).sum()))
                for _ in range(2):  # full re-orthogonalisation, twice (float32 safe)
                    for u in basis:
                        w = w - (u * w).sum() * u
                beta = float(w.norm())
                t = np.diag(alphas) + np.diag(betas, 1) + np.diag(betas, -1)
                evals, evecs = np.linalg.eigh(t)
                theta = float(evals[-1])
                if beta * abs(evecs[-1, -1]) <= tol * abs(theta) or beta <= tol * abs(theta):
                    return theta
                if done >= n_iter or len(basis) >= max_basis:
                    break
                betas.append(beta)
                basis.append(w / beta)
            v = sum(float(c) * u for c, u in zip(evecs[:, -1], basis, strict=True))
        return theta

    def _weights_version(self) -> tuple[int, ...]:
        return tuple(p._version for p in self.parameters())
