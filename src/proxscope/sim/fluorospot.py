"""Physical FluoroSpot/ELISpot image simulator (reaction-diffusion-adsorption-desorption).

Follows the step-by-step model of DESIGN.md's appendix (del Aguila Pla & Jaldén): secretion
pulses per cell, first-adsorption delays of diffusing particles, Poisson rebinding, the mapping
free time -> spatial spread, 30 bins in spread, pixel-integrated Gaussian kernels, optical blur,
normalisation and quantisation-like Gaussian noise. All steps are vectorised over cells, time and
pixels; the large kernels (±3·sigma_max ≈ ±194 px with the default constants) are applied with
FFT convolution (:class:`proxscope.operators.FFTConv`).

The result obeys the convolutional coding model of SpotNet:
    image / 255 = clip(Σ_k (b ⊛ g_k) ⊛ target_k / 255 + noise, 0, 1)
with b the optical blur (Seed: spotnet-fluorospot-learned-iterations.txt eq. (1)).

Units: time in seconds, lengths in metres, spreads sigma in pixels, images in [0, 255].
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy.special import erfcx
from scipy.stats import norm, poisson

HOUR = 3600.0


@dataclass
class FluoroSpotConfig:
    """Physical and numerical constants of the simulator (defaults: the published values).

    noise_level: 0 = noiseless; level L >= 1 adds Gaussian noise of std sqrt(2^(-2b)/12) with
    b = 9 − L bits, so level 3 (the paper's) is b = 6, std ≈ 4.5e-3 of the image maximum.
    """

    size: int = 512
    n_cells: int = 1250
    n_time: int = 1000  # equal intervals of the assay
    n_bins: int = 30  # K, bins in spatial spread sigma
    assay_hours: float = 8.0
    secretion_start_hours: float = 1.0
    secretion_end_hours: float = 6.0
    total_min: float = 500.0  # total secretion per cell ~ U[total_min, total_max] particles
    total_max: float = 1000.0
    diffusion: float = 3e-12  # D, m^2/s
    k_a: float = 6e-9  # adsorption rate, m/s
    k_d: float = 1e-4  # desorption rate, 1/s
    n_rebind: int = 20  # Poisson rebinding terms j = 0..n_rebind−1
    pixel: float = 6.45e-6  # m
    blur_sigma: float = 2.279  # px
    noise_level: int = 3
    quadrature: int = 8  # Gauss-Legendre nodes per sigma bin for the kernels

    @property
    def noise_std(self) -> float:
        if self.noise_level <= 0:
            return 0.0
        bits = 9 - self.noise_level
        return math.sqrt(2.0 ** (-2 * bits) / 12.0)

    @property
    def time_edges(self) -> np.ndarray:
        """t_0..t_n (n_time + 1,), seconds."""
        return np.arange(self.n_time + 1) * (self.assay_hours * HOUR / self.n_time)

    def sigma_of_time(self, t: np.ndarray) -> np.ndarray:
        """Spread sigma = sqrt(2 D t) / pixel, in pixels."""
        return np.sqrt(2.0 * self.diffusion * np.asarray(t)) / self.pixel


@dataclass
class FluoroSpotSample:
    """image (H, W) float32 in [0, 255]; target (K, H, W) float32 (x_k scaled like the image);
    cells_yx (N, 2) int pixel positions; totals (N,) total secretion per cell (particles);
    secretion (N, K) per-cell x_k in target units (sum over colliding cells is in ``target``);
    kernels (K, kh, kw) float32 g_k; blur (bh, bw) float32; scale = 255 / max(clean image)."""

    image: np.ndarray
    target: np.ndarray
    cells_yx: np.ndarray
    totals: np.ndarray
    secretion: np.ndarray
    kernels: np.ndarray
    blur: np.ndarray
    scale: float


def first_adsorption(config: FluoroSpotConfig) -> np.ndarray:
    """phi_i: probability that a released particle first adsorbs during [t_i, t_{i+1}], (n_time,).

    The density k_a/sqrt(pi D tau) − (k_a²/D)·erfcx(k_a sqrt(tau/D)) is −dS/dtau with the
    survival S(tau) = erfcx(k_a sqrt(tau/D)); integrating it per interval gives the closed form
    phi_i = S(t_i) − S(t_{i+1}) (DESIGN.md appendix step 3).
    """
    t = config.time_edges
    survival = erfcx(config.k_a * np.sqrt(t / config.diffusion))
    return survival[:-1] - survival[1:]


def free_time_matrix(config: FluoroSpotConfig) -> np.ndarray:
    """M (n_time, n_time): M[i, e] = P(free time in interval i and bound at the end | released e
    intervals before the end), summing the rebinding terms j = 0..n_rebind−1:
        M[i, e] = Σ_j phi^{*(j+1)}[i] · Poisson(j; k_d·(e − i)·dt),  e >= i, else 0.
    So the per-cell free-time distribution is v = M f_rev (DESIGN.md appendix steps 4-5).
    The discrete self-convolutions put the sum of two interval indices at index i1 + i2
    (a bias of half an interval, 14 s, per rebinding).
    """
    n = config.n_time
    dt = config.assay_hours * HOUR / n
    phi = first_adsorption(config)
    powers = np.empty((config.n_rebind, n))
    powers[0] = phi
    spectrum = np.fft.rfft(phi, 2 * n)
    current = spectrum
    for j in range(1, config.n_rebind):
        current = current * spectrum
        powers[j] = np.fft.irfft(current, 2 * n)[:n]
    powers = np.clip(powers, 0.0, None)
    lag = np.arange(n)[None, :] - np.arange(n)[:, None]  # e − i
    bound = np.clip(lag, 0, None) * dt * config.k_d
    probs = poisson.pmf(np.arange(config.n_rebind)[:, None, None], bound[None])  # (J, n, n)
    matrix = np.einsum("ji,jie->ie", powers, probs)
    return np.where(lag >= 0, matrix, 0.0)


def sigma_bins(config: FluoroSpotConfig) -> tuple[np.ndarray, np.ndarray]:
    """Bin limits: (edge indices into the time grid (K+1,), edge sigmas in px (K+1,)).

    K equal bins in sigma from 0 to sigma(T), each limit snapped to the nearest sigma(t_i)
    (DESIGN.md appendix step 6). Raises ValueError when the time grid is too coarse for K bins.
    """
    grid = config.sigma_of_time(config.time_edges)
    wanted = np.linspace(0.0, grid[-1], config.n_bins + 1)
    idx = np.abs(grid[None, :] - wanted[:, None]).argmin(1)
    if np.any(np.diff(idx) <= 0):
        raise ValueError(
            f"n_time={config.n_time} is too coarse for {config.n_bins} sigma bins; "
            "use more time points or fewer bins"
        )
    return idx, grid[idx]


def bin_matrix(config: FluoroSpotConfig) -> np.ndarray:
    """B (K, n_time): B[k, i] = 1/sqrt(bin width_k) for free-time interval i in bin k, so that
    x_k = Σ_{tau in bin k} v(tau) / sqrt(width_k) = (B v)_k (DESIGN.md appendix step 6)."""
    idx, edges = sigma_bins(config)
    interval = np.arange(config.n_time)
    member = (interval[None, :] >= idx[:-1, None]) & (interval[None, :] < idx[1:, None])
    return member / np.sqrt(np.diff(edges))[:, None]


def pixel_gaussian(offsets: np.ndarray, sigma: np.ndarray) -> np.ndarray:
    """w_sigma(m): Gaussian of std sigma integrated over a source and a detector pixel, i.e. the
    Gaussian convolved with the unit triangle, at integer offsets m. Closed form with
    Psi(u) = u·Phi(u/sigma) + sigma·phi(u/sigma) (an antiderivative of the Gaussian CDF):
        w_sigma(m) = Psi(m + 1) − 2 Psi(m) + Psi(m − 1)   (sigma -> 0: the triangle).
    offsets (P,), sigma (S,) -> (S, P); sums to 1 over all integers."""
    sigma = np.maximum(np.asarray(sigma, dtype=np.float64), 1e-12)[:, None]
    m = np.asarray(offsets, dtype=np.float64)[None, :]

    def psi(u):
        return u * norm.cdf(u / sigma) + sigma * norm.pdf(u / sigma)

    return psi(m + 1) - 2 * psi(m) + psi(m - 1)


def make_kernels(config: FluoroSpotConfig) -> np.ndarray:
    """g_k(m, n) = ∫_{bin k} w_sigma(m) w_sigma(n) dsigma / sqrt(width_k), support ±ceil(3 sigma_max),
    by Gauss-Legendre quadrature in sigma (DESIGN.md appendix step 7). -> (K, 2r+1, 2r+1),
    each summing to ≈ sqrt(width_k)."""
    _, edges = sigma_bins(config)
    radius = int(math.ceil(3 * edges[-1]))
    offsets = np.arange(-radius, radius + 1)
    nodes, weights = np.polynomial.legendre.leggauss(config.quadrature)
    lo, hi = edges[:-1, None], edges[1:, None]
    sigmas = (lo + hi) / 2 + (hi - lo) / 2 * nodes[None, :]  # (K, Q)
    coeff = (hi - lo) / 2 * weights[None, :] / np.sqrt(hi - lo)  # (K, Q)
    profiles = pixel_gaussian(offsets, sigmas.ravel()).reshape(*sigmas.shape, -1)  # (K, Q, P)
    return np.einsum("kq,kqm,kqn->kmn", coeff, profiles, profiles)


def make_blur(config: FluoroSpotConfig) -> np.ndarray:
    """Optical blur: pixel-integrated Gaussian of std blur_sigma, support ±ceil(3 std), (b, b)."""
    radius = int(math.ceil(3 * config.blur_sigma))
    w = pixel_gaussian(np.arange(-radius, radius + 1), np.array([config.blur_sigma]))[0]
    return np.outer(w, w)


def secretion_profiles(config: FluoroSpotConfig, rng: np.random.Generator) -> tuple:
    """Per-cell secretion per release interval f (N, n_time) and totals S (N,): two distinct
    sorted interval indices a < b drawn uniformly in [start, end] hours, S ~ U[min, max] spread
    evenly over intervals a..b−1 (DESIGN.md appendix step 2)."""
    n = config.n_time
    dt_hours = config.assay_hours / n
    first = int(round(config.secretion_start_hours / dt_hours))
    last = int(round(config.secretion_end_hours / dt_hours))
    count = last - first + 1
    a = rng.integers(0, count, size=config.n_cells)
    b = rng.integers(0, count - 1, size=config.n_cells)
    b = b + (b >= a)  # distinct from a, uniform over the other indices
    pairs = first + np.sort(np.stack([a, b], axis=1), axis=1)
    totals = rng.uniform(config.total_min, config.total_max, size=config.n_cells)
    interval = np.arange(n)[None, :]
    active = (interval >= pairs[:, :1]) & (interval < pairs[:, 1:])
    return active * (totals / (pairs[:, 1] - pairs[:, 0]))[:, None], totals


def codes_operator(config: FluoroSpotConfig) -> np.ndarray:
    """B·M (K, n_time): maps a secretion profile indexed by time before the end of the assay to
    the cell's code x (DESIGN.md appendix steps 4-6)."""
    return bin_matrix(config) @ free_time_matrix(config)


def cell_codes(profiles: np.ndarray, operator: np.ndarray) -> np.ndarray:
    """x (N, K) = f_rev B Mᵀ: per-cell binned free-time distribution, where f_rev[e] = f[n−1−e]
    is the secretion e intervals before the end; ``operator`` from :func:`codes_operator`."""
    return profiles[:, ::-1] @ operator.T


def observe(target: np.ndarray, kernels: np.ndarray, blur: np.ndarray) -> np.ndarray:
    """Clean image Σ_k (b ⊛ g_k) ⊛ x_k for x (K, H, W) with FFT convolution (zero padding,
    size preserving), float64. Blurring the combined kernels keeps the light of particles that
    landed outside the field of view. Seed: spotnet-fluorospot-learned-iterations.txt eq. (1)."""
    import torch

    from ..operators import FFTConv

    x = torch.from_numpy(np.ascontiguousarray(target, dtype=np.float64))[None]
    op = FFTConv(torch.from_numpy(observation_kernels(kernels, blur)))
    return op(x)[0, 0].numpy()


def simulate(
    config: FluoroSpotConfig,
    rng: np.random.Generator,
    kernels: np.ndarray | None = None,
    operator: np.ndarray | None = None,
) -> FluoroSpotSample:
    """One image with ground truth (appendix step 8): cells at uniform random pixels (codes add
    up on collisions), s = b ⊛ Σ_k g_k ⊛ x_k, divide by max, add noise, clip to [0, 1], ×255.
    ``kernels`` / ``operator`` (from :func:`make_kernels` / :func:`codes_operator`) may be passed
    to reuse them across images of one configuration."""
    kernels = make_kernels(config) if kernels is None else kernels
    blur = make_blur(config)
    profiles, totals = secretion_profiles(config, rng)
    operator = codes_operator(config) if operator is None else operator
    codes = cell_codes(profiles, operator)
    cells = rng.integers(0, config.size, size=(config.n_cells, 2))
    target = np.zeros((config.n_bins, config.size, config.size))
    np.add.at(target, (slice(None), cells[:, 0], cells[:, 1]), codes.T)
    clean = observe(target, kernels, blur)
    peak = clean.max()
    scale = 255.0 / peak if peak > 0 else 1.0
    noise = rng.normal(0.0, config.noise_std, size=clean.shape)
    image = np.clip(clean * scale / 255.0 + noise, 0.0, 1.0) * 255.0
    return FluoroSpotSample(
        image=image.astype(np.float32),
        target=(target * scale).astype(np.float32),
        cells_yx=cells,
        totals=totals,
        secretion=codes * scale,
        kernels=kernels.astype(np.float32),
        blur=blur.astype(np.float32),
        scale=scale,
    )



def observation_kernels(kernels: np.ndarray, blur: np.ndarray) -> np.ndarray:
    """b ⊛ g_k (K, kh+bh−1, kw+bw−1): the kernels of eq. (1) for a blurred image, so that
    image ≈ Σ_k (b ⊛ g_k) ⊛ target_k (Seed: spotnet-fluorospot-learned-iterations.txt eq. (1))."""
    from scipy.signal import fftconvolve

    return fftconvolve(kernels, blur[None], mode="full", axes=(1, 2))
