"""Convolution operators: multi-channel 'same' convolution, valid cross-correlation, FFT convolution."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .base import LinearOperator


def _check_odd(kernels: torch.Tensor) -> None:
    kh, kw = kernels.shape[-2:]
    if kh % 2 == 0 or kw % 2 == 0:
        raise ValueError(f"'same' convolution needs odd kernel sizes, got {kh}x{kw}")


class MultiConv2d(LinearOperator):
    """Sum of per-channel convolutions, size preserving: A x = Σ_k h_k ⊛ x_k.

    kernels: (K, kh, kw) with odd kh, kw (true convolution, zero padding).
    forward: x (B, K, H, W) -> (B, 1, H, W); adjoint: y (B, 1, H, W) -> (B, K, H, W), i.e.
    correlation with each h_k (the matched filters h̃_k).

    Seed: spotnet-fluorospot-learned-iterations.txt eq. (1)-(2) (convolutional coding model).
    """

    def __init__(self, kernels: torch.Tensor):
        super().__init__()
        if kernels.ndim != 3:
            raise ValueError(f"kernels must be (K, kh, kw), got shape {tuple(kernels.shape)}")
        _check_odd(kernels)
        self.kernels = nn.Parameter(kernels.clone(), requires_grad=False)

    def _weight(self) -> torch.Tensor:
        # conv2d computes a correlation; flipping the kernel gives a true convolution.
        return self.kernels.flip(-2, -1).unsqueeze(0)  # (1, K, kh, kw)

    def _padding(self) -> tuple[int, int]:
        return self.kernels.shape[-2] // 2, self.kernels.shape[-1] // 2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self._weight(), padding=self._padding())

    def adjoint(self, y: torch.Tensor) -> torch.Tensor:
        # Correlation of y with each h_k: a plain conv2d with the (unflipped) kernels as K
        # output channels, about twice as fast on CPU as conv_transpose2d.
        return F.conv2d(y, self.kernels.unsqueeze(1), padding=self._padding())


class ValidConv(LinearOperator):
    """Valid multi-channel cross-correlation: y_t = Σ_k a_{t,k} ⋆ x_k.

    weight: (C_out, C_in, a, b). forward: x (B, C_in, H, W) -> y (B, C_out, H−a+1, W−b+1);
    adjoint: the transposed correlation (full convolution) back to (B, C_in, H, W).

    Seed: spodnet-lista-spod-microscopy.txt eq. (3) (y_t = a_t ∗ x, valid).
    """

    def __init__(self, weight: torch.Tensor):
        super().__init__()
        if weight.ndim != 4:
            raise ValueError(f"weight must be (C_out, C_in, a, b), got shape {tuple(weight.shape)}")
        self.weight = nn.Parameter(weight.clone(), requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.weight)

    def adjoint(self, y: torch.Tensor) -> torch.Tensor:
        return F.conv_transpose2d(y, self.weight)


class FFTConv(MultiConv2d):
    """Same map as :class:`MultiConv2d` (A x = Σ_k h_k ⊛ x_k, zero padding, size preserving),
    computed with real FFTs: use it for kernels larger than ~15 px (e.g. FluoroSpot kernels of
    hundreds of pixels). The signals are zero padded to at least H+kh−1 × W+kw−1 (rounded up to
    a fast FFT length), so nothing wraps around.

    kernels: (K, kh, kw), odd sizes. forward: (B, K, H, W) -> (B, 1, H, W); adjoint back.
    """

    def _spectra(self, h: int, w: int) -> tuple[torch.Tensor, tuple[int, int]]:
        """Kernel spectra for an h×w input, cached per (size, weights version) when the kernels
        do not require grad (iterative solvers call forward/adjoint thousands of times)."""
        from scipy.fft import next_fast_len

        kh, kw = self.kernels.shape[-2:]
        # Any size >= the full convolution avoids wrap-around; round up to a fast FFT length.
        size = (next_fast_len(h + kh - 1, real=True), next_fast_len(w + kw - 1, real=True))
        if self.kernels.requires_grad:
            return torch.fft.rfft2(self.kernels, s=size), size
        key = (size, self.kernels._version, self.kernels.device, self.kernels.dtype)
        cache = self.__dict__.get("_spectra_cache")
        if cache is None or cache[0] != key:
            cache = (key, torch.fft.rfft2(self.kernels, s=size))
            self.__dict__["_spectra_cache"] = cache
        return cache[1], size

    def lipschitz(self, in_shape: tuple[int, ...], *args, bound: bool = False, **kwargs) -> float:
        """||A||² by power iteration (:meth:`LinearOperator.lipschitz`, same arguments), or with
        ``bound`` the spectral upper bound L = max_ω Σ_k |ĥ_k(ω)|² on a frequency grid twice the
        padded size: one FFT instead of hundreds of iterations with kernels of hundreds of pixels,
        and 1/L is a safe constant APG step (the zero-padded convolution is a restriction of the
        circular one on that grid, whose A A^T has eigenvalues Σ_k |ĥ_k(ω)|²). ``in_shape`` =
        (K, H, W). Seed: spotnet-fluorospot-learned-iterations.txt eq. (2) (APG step)."""
        if not bound:
            return super().lipschitz(in_shape, *args, **kwargs)
        (h, w), (kh, kw) = in_shape[-2:], self.kernels.shape[-2:]
        spectra = torch.fft.rfft2(self.kernels.detach(), s=(2 * (h + kh), 2 * (w + kw)))
        return float(spectra.abs().pow(2).sum(0).max())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        kh, kw = self.kernels.shape[-2:]
        spectra, size = self._spectra(h, w)
        full = torch.fft.irfft2((torch.fft.rfft2(x, s=size) * spectra).sum(1, keepdim=True), s=size)
        return full[..., kh // 2 : kh // 2 + h, kw // 2 : kw // 2 + w]

    def adjoint(self, y: torch.Tensor) -> torch.Tensor:
        h, w = y.shape[-2:]
        kh, kw = self.kernels.shape[-2:]
        spectra, size = self._spectra(h, w)
        # Correlation = convolution with the flipped kernel: place y so that the crop matches.
        padded = F.pad(y, (kw // 2, kw - 1 - kw // 2, kh // 2, kh - 1 - kh // 2))
        full = torch.fft.irfft2(torch.fft.rfft2(padded, s=size) * spectra.conj(), s=size)
        return full[..., :h, :w]
