"""SPoD polarization forward model and its recovery objective.

Shapes: an image x is (B, c, h, w) (channel k = dipole orientation kπ/c); an observation Y is
(B, c, h−a+1, w−b+1) (channel t = polarization state t); a PSF φ is (a, b).

Both operators here are valid multi-channel cross-correlations (the map of
:class:`proxscope.operators.ValidConv`) computed with real FFTs: a valid correlation of an
h×w image equals the circular correlation of size h×w cropped to its first (h−a+1)×(w−b+1)
pixels, so no padding is needed, and a 32×32 PSF costs no more than a 3×3 one.

- :class:`SPoDConv` is the factorised filter p_t[i,j,k] = g[i,j]·h[(t−k) mod c]: a depthwise
  correlation with g followed by a circulant channel mix with h (a circular convolution over the
  channel axis). ``SPoDConv.from_psf(φ, c)`` is the SPoD forward operator of eq. (3) itself,
  because cos²((t−k)π/c) depends only on (t−k) mod c.
- :class:`FullSPoDConv` holds c² unstructured filters (c, c, a, b): LISTA-Net's p_t.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ..prox import l1_norm, nonneg_l1_norm
from .base import LinearOperator


def cos2_profile(channels: int, dtype=None) -> torch.Tensor:
    """h[d] = cos²(dπ/c) for d = 0..c−1: the polarization modulation of eq. (3) as a function of
    (t − k) mod c. Seed: spodnet-lista-spod-microscopy.txt eq. (3)."""
    d = torch.arange(channels, dtype=torch.float64)
    return torch.cos(d * math.pi / channels).pow(2).to(dtype or torch.get_default_dtype())


def spod_filters(psf: torch.Tensor, channels: int) -> torch.Tensor:
    """Materialised filters a_t[i,j,k] = φ[i,j]·cos²((t−k)π/c) as a (c_out=t, c_in=k, a, b)
    ValidConv weight (for LISTA-Net's initialisation and for tests; the fast path never builds
    it). Seed: spodnet-lista-spod-microscopy.txt eq. (3)."""
    t = torch.arange(channels)
    h = cos2_profile(channels, psf.dtype).to(psf.device)
    mix = h[(t[:, None] - t[None, :]) % channels]  # (t, k)
    return mix[:, :, None, None] * psf[None, None]


def _valid_shape(x_shape, kernel_shape) -> tuple[int, int]:
    (hh, ww), (a, b) = x_shape[-2:], kernel_shape[-2:]
    if hh < a or ww < b:
        raise ValueError(f"image {hh}x{ww} is smaller than the PSF {a}x{b}")
    return hh - a + 1, ww - b + 1


_DIMS = (-3, -2, -1)


def fast_size(n: int) -> int:
    """Smallest 5-smooth integer (2^i·3^j·5^k) >= n: an FFT length that is fast."""
    best = 2 * n
    p2 = 1
    while p2 < best:
        p3 = p2
        while p3 < best:
            p5 = p3
            while p5 < n:
                p5 *= 5
            best = min(best, p5)
            p3 *= 3
        p2 *= 2
    return best


def _fft_shape(hh: int, ww: int) -> tuple[int, int]:
    # Circular correlation of any length >= h has the same valid part, so pad to a fast length.
    return fast_size(hh), fast_size(ww)


def _rfft3(x: torch.Tensor, shape: tuple[int, int]) -> torch.Tensor:
    return torch.fft.rfftn(x, s=(x.shape[-3], *shape), dim=_DIMS)


class SPoDConv(LinearOperator):
    """Factorised SPoD filters p_t[i,j,k] = g[i,j]·h[(t−k) mod c] (ab + c parameters).

    forward: x (B, c, H, W) -> y (B, c, H−a+1, W−b+1),
        y_t = Σ_k h[(t−k) mod c] · (g ∗ x_k)   (depthwise valid correlation, then circulant mix)
    adjoint: y -> (B, c, H, W), the transposed correlation (2) and the transposed mix.

    Seed: spodnet-lista-spod-microscopy.txt eq. (10) (SPoD-Net's depthwise separable filter);
    with g = φ and h = cos²(·π/c) it is the forward model eq. (3).
    """

    def __init__(self, g: torch.Tensor, h: torch.Tensor):
        super().__init__()
        if g.ndim != 2 or h.ndim != 1:
            raise ValueError(f"need g (a, b) and h (c,), got {tuple(g.shape)} and {tuple(h.shape)}")
        self.g = nn.Parameter(g.clone(), requires_grad=False)
        self.h = nn.Parameter(h.clone(), requires_grad=False)

    @classmethod
    def from_psf(cls, psf: torch.Tensor, channels: int) -> SPoDConv:
        """The SPoD forward operator y_t = a_t ∗ x of eq. (3)."""
        return cls(psf, cos2_profile(channels, psf.dtype).to(psf.device))

    @property
    def channels(self) -> int:
        return self.h.shape[0]

    @property
    def kernel_shape(self) -> tuple[int, int]:
        return tuple(self.g.shape)

    def full_weight(self) -> torch.Tensor:
        """The equivalent (c, c, a, b) ValidConv weight (materialised; for tests and LISTA)."""
        t = torch.arange(self.channels, device=self.h.device)
        mix = self.h[(t[:, None] - t[None, :]) % self.channels]
        return mix[:, :, None, None] * self.g[None, None]

    def _spectra(self, hh: int, ww: int) -> tuple[torch.Tensor, torch.Tensor]:
        """DFT of h over channels (c,) and real DFT of g zero padded to H×W (H, W//2+1)."""
        g_hat = torch.fft.rfft2(self.g, s=(hh, ww))
        return torch.fft.fft(self.h.to(g_hat.dtype)), g_hat

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        oh, ow = _valid_shape(x.shape, self.g.shape)
        shape = _fft_shape(*x.shape[-2:])
        h_hat, g_hat = self._spectra(*shape)
        # channel axis: circular convolution with h; spatial axes: correlation with g.
        spec = h_hat[:, None, None] * g_hat.conj()[None]
        full = torch.fft.irfftn(_rfft3(x, shape) * spec, s=(x.shape[-3], *shape), dim=_DIMS)
        return full[..., :oh, :ow]

    def adjoint(self, y: torch.Tensor) -> torch.Tensor:
        a, b = self.g.shape
        hh, ww = y.shape[-2] + a - 1, y.shape[-1] + b - 1
        shape = _fft_shape(hh, ww)
        h_hat, g_hat = self._spectra(*shape)
        spec = h_hat.conj()[:, None, None] * g_hat[None]
        full = torch.fft.irfftn(_rfft3(y, shape) * spec, s=(y.shape[-3], *shape), dim=_DIMS)
        return full[..., :hh, :ww]


class FullSPoDConv(LinearOperator):
    """Unstructured valid multi-channel correlation y_t = Σ_k p_{t,k} ∗ x_k with weight
    (c_out, c_in, a, b) (abc² parameters): the same map as :class:`ValidConv`, via FFT.

    Seed: spodnet-lista-spod-microscopy.txt Sec. 3 (LISTA-Net filters p_t^(m)), eqs. (1)-(2).
    """

    def __init__(self, weight: torch.Tensor):
        super().__init__()
        if weight.ndim != 4:
            raise ValueError(f"weight must be (c_out, c_in, a, b), got {tuple(weight.shape)}")
        self.weight = nn.Parameter(weight.clone(), requires_grad=False)

    @property
    def kernel_shape(self) -> tuple[int, int]:
        return tuple(self.weight.shape[-2:])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        oh, ow = _valid_shape(x.shape, self.weight.shape)
        shape = _fft_shape(*x.shape[-2:])
        w_hat = torch.fft.rfft2(self.weight, s=shape).conj()
        y_hat = torch.einsum("tkhw,bkhw->bthw", w_hat, torch.fft.rfft2(x, s=shape))
        return torch.fft.irfft2(y_hat, s=shape)[..., :oh, :ow]

    def adjoint(self, y: torch.Tensor) -> torch.Tensor:
        a, b = self.weight.shape[-2:]
        hh, ww = y.shape[-2] + a - 1, y.shape[-1] + b - 1
        shape = _fft_shape(hh, ww)
        w_hat = torch.fft.rfft2(self.weight, s=shape)
        x_hat = torch.einsum("tkhw,bthw->bkhw", w_hat, torch.fft.rfft2(y, s=shape))
        return torch.fft.irfft2(x_hat, s=shape)[..., :hh, :ww]


#: λ of eq. (5) wherever none is given: the bundled SPoD-Net's, on stacks normalised to a 99.9th
#: percentile of 1 (``proxscope spod``). The seed's experiments use λ = 1e-6 (Sec. 5.2).
DEFAULT_LAM = 0.1


def normalisation(x_shape, channels: int, kernel_shape) -> tuple[int, int]:
    """(A, B) of eq. (5): A = (h−a+1)(w−b+1)c, B = hwc for an image of size h×w.

    Seed: spodnet-lista-spod-microscopy.txt eq. (5).
    """
    oh, ow = _valid_shape(x_shape, kernel_shape)
    hh, ww = x_shape[-2:]
    return oh * ow * channels, hh * ww * channels


def core_lam(lam: float, x_shape, channels: int, kernel_shape) -> float:
    """The weight lam_core = lam·A/B for which the core lasso objective
    0.5·||A x − y||² + lam_core·||x||_1 equals A · L(Y, x) of eq. (5): minimising one minimises
    the other, and a solver step s on the core objective is the seed's η = A·s in eq. (6)-(7)."""
    big_a, big_b = normalisation(x_shape, channels, kernel_shape)
    return lam * big_a / big_b


def spod_objective(op: LinearOperator, x: torch.Tensor, y: torch.Tensor, lam,
                   relaxed: bool = False) -> torch.Tensor:
    """L(Y, x) = 1/(2A)·Σ_t ||y_t − a_t ∗ x||² + λ/B·||x||_1, +inf where x has a negative entry
    (the constraint x >= 0). x (B, c, h, w), y (B, c, h−a+1, w−b+1) -> (B,).

    ``relaxed=True`` drops the constraint (plain ||x||_1, finite for any x): the objective of an
    LST network's last iterate x^(M) before its post-threshold, which Theorem 1 (eq. 12, δ = 0
    term) bounds L(Y, [x^(M)]_+) with; equal to L for x >= 0.

    Seed: spodnet-lista-spod-microscopy.txt eq. (5) (and the training loss eq. (9)), eq. (12).
    """
    big_a, big_b = normalisation(x.shape, x.shape[-3], op.kernel_shape)
    r = op(x) - y
    penalty = l1_norm(x) if relaxed else nonneg_l1_norm(x)
    return 0.5 / big_a * r.flatten(1).pow(2).sum(1) + lam / big_b * penalty
