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

    def lipschitz(self, in_shape: tuple[int, ...], *args, bound: bool = False, **kwargs) -> float:
        """||A||² by Lanczos (:meth:`LinearOperator.lipschitz`, same arguments), or with
        ``bound`` the closed form max_k |ĥ_k|² · (Σ|g|)², ĥ the DFT of h over the channels.

        The valid operator is a crop of the circular one on any grid, whose A^T A has the
        eigenvalues |ĥ_k|²·|ĝ(ω)|², and |ĝ(ω)| <= Σ|g|, with equality at ω = 0 for g >= 0. So
        the bound holds for every image size (1/L is a safe step), and for a PSF (g >= 0, sum 1)
        with h = cos²(·π/c) (ĥ_0 = c/2) it is (c/2)², the large-image limit: 81 for c = 18
        and the default 32×32 Airy PSF, where Lanczos gives 79.62 on an 18×127×127 image (the
        norm of that crop; a larger tile needs a value closer to 81, which the bound covers
        without an iteration). Seed: spodnet-lista-spod-microscopy.txt eq. (3)."""
        if not bound:
            return super().lipschitz(in_shape, *args, **kwargs)
        h_hat = torch.fft.fft(self.h.detach().to(torch.float64))
        return float(h_hat.abs().max() ** 2 * self.g.detach().to(torch.float64).abs().sum() ** 2)

    def column_norm(self) -> float:
        """||A e|| for a unit voxel e away from the border: sqrt(Σ_d h[d]²)·||g||."""
        h, g = self.h.detach().to(torch.float64), self.g.detach().to(torch.float64)
        return float(h.pow(2).sum().sqrt() * g.norm())

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


#: λ of eq. (5) for a network set up without one (``SPoDNet.from_solver``); ``proxscope spod``
#: uses :func:`noise_lam` instead. The seed's experiments use λ = 1e-6 (Sec. 5.2).
DEFAULT_LAM = 0.1

#: k of :func:`noise_lam`: λ_core = k·σ·||a_col||. The largest of the ~10⁴-10⁵ (correlated)
#: voxels of A^T n exceeds 3σ·||a_col||: on pure-noise 8×48×48 stacks 3-11 noise voxels got
#: through at k = 3 (0.3-0.7 % of one dot's mass), none at 4; the demo stack's dots and
#: filaments are recovered alike at 3, 4 and 5 (dot F1 1.0).
NOISE_LAM_FACTOR = 4.0


def psf_kernel(psf, convention: str = "convolution"):
    """The correlation kernel φ of eq. (3) for a PSF given in ``convention``: 'convolution'
    (a measured PSF: the image of a point source, as a microscope blurs) -> the PSF flipped in
    both axes; 'correlation' (the seed's φ, eq. 1) -> the PSF itself. Works on numpy arrays and
    tensors (a, b)."""
    if convention == "correlation":
        return psf
    if convention != "convolution":
        raise ValueError(f"PSF convention must be 'convolution' or 'correlation', got {convention!r}")
    return psf.flip((-2, -1)) if isinstance(psf, torch.Tensor) else psf[..., ::-1, ::-1].copy()


def noise_sigma(y: torch.Tensor) -> float:
    """Robust noise standard deviation of stacks y (..., H, W): 1.4826·MAD of the horizontal
    pixel differences / √2 (a smooth signal and a flat background cancel in the differences)."""
    d = (y[..., 1:] - y[..., :-1]).flatten().double()
    if d.numel() == 0:
        return 0.0
    return float(1.4826 * (d - d.median()).abs().median() / math.sqrt(2))


def lam_from_core(lam_core: float, x_shape, channels: int, kernel_shape) -> float:
    """λ of eq. (5) whose core weight (:func:`core_lam`) is ``lam_core``."""
    big_a, big_b = normalisation(x_shape, channels, kernel_shape)
    return lam_core * big_b / big_a


def noise_lam(op: SPoDConv, y: torch.Tensor, sigma: float | None = None,
              factor: float = NOISE_LAM_FACTOR) -> float:
    """λ of eq. (5) scaled to the noise of y (B, c, H, W): λ_core = factor·σ·||a_col||, σ given
    or :func:`noise_sigma` of y, ||a_col|| = :meth:`SPoDConv.column_norm`. A^T n of white noise
    n has standard deviation σ·||a_col|| per voxel, so this threshold keeps noise out of x
    (x = 0 is the solution when λ_core >= max A^T y, :func:`lam_max`)."""
    a, b = op.kernel_shape
    x_shape = (op.channels, y.shape[-2] + a - 1, y.shape[-1] + b - 1)
    sigma = noise_sigma(y) if sigma is None else sigma
    lam_core = factor * sigma * op.column_norm()
    return lam_from_core(lam_core, x_shape, op.channels, (a, b))


def lam_max(op: SPoDConv, y: torch.Tensor) -> float:
    """The smallest λ of eq. (5) for which x = 0 minimises eq. (5) (x >= 0) on y (B, c, H, W):
    λ_core = max(A^T y, 0), the largest over the batch."""
    a, b = op.kernel_shape
    x_shape = (op.channels, y.shape[-2] + a - 1, y.shape[-1] + b - 1)
    with torch.no_grad():
        lam_core = max(float(op.adjoint(y).max()), 0.0)
    return lam_from_core(lam_core, x_shape, op.channels, (a, b))


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
