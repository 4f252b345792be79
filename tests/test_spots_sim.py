"""FluoroSpot simulator: physics steps, kernels and the observation model."""

import math

import numpy as np
import pytest
from scipy.integrate import quad
from scipy.special import erfcx

from proxscope.sim import fluorospot as fs

SMALL = fs.FluoroSpotConfig(size=48, n_cells=12, n_time=300, n_bins=10)


def test_first_adsorption_matches_density_integral():
    c = SMALL
    phi = fs.first_adsorption(c)
    t = c.time_edges
    d, ka = c.diffusion, c.k_a

    def density(tau):
        return ka / math.sqrt(math.pi * d * tau) - ka**2 / d * erfcx(ka * math.sqrt(tau / d))

    for i in (0, 1, 57, 299):
        numeric = quad(density, t[i], t[i + 1], limit=200)[0]
        assert phi[i] == pytest.approx(numeric, rel=1e-6)
    assert phi.sum() == pytest.approx(1 - erfcx(ka * math.sqrt(t[-1] / d)), rel=1e-12)


def test_pixel_gaussian_sum_triangle_and_quadrature():
    m = np.arange(-60, 61)
    w = fs.pixel_gaussian(m, np.array([0.0, 0.7, 5.0]))
    np.testing.assert_allclose(w.sum(1), 1.0, atol=1e-9)
    np.testing.assert_allclose(w[0, 59:62], [0.0, 1.0, 0.0], atol=1e-12)
    sigma = 0.7
    for offset in (0, 1, 3):
        numeric = quad(
            lambda u, o=offset: (1 - abs(u)) * np.exp(-((o - u) ** 2) / (2 * sigma**2)),
            -1, 1, points=[0.0],
        )[0] / math.sqrt(2 * math.pi * sigma**2)
        assert w[1, 60 + offset] == pytest.approx(numeric, rel=1e-7)


def test_sigma_bins_equal_width_and_coarse_grid_error():
    idx, edges = fs.sigma_bins(SMALL)
    assert idx[0] == 0 and idx[-1] == SMALL.n_time
    ideal = SMALL.sigma_of_time(SMALL.time_edges[-1]) / SMALL.n_bins
    assert np.abs(np.diff(edges) - ideal).max() < 0.5 * ideal
    with pytest.raises(ValueError, match="too coarse"):
        fs.sigma_bins(fs.FluoroSpotConfig(n_time=20, n_bins=30))


def test_kernels_support_normalisation_symmetry():
    g = fs.make_kernels(SMALL)
    _, edges = fs.sigma_bins(SMALL)
    radius = math.ceil(3 * edges[-1])
    assert g.shape == (SMALL.n_bins, 2 * radius + 1, 2 * radius + 1)
    np.testing.assert_allclose(g.sum((1, 2)), np.sqrt(np.diff(edges)), rtol=5e-3)
    np.testing.assert_allclose(g, g[:, ::-1, :], atol=1e-12 * g.max())
    np.testing.assert_allclose(g, g.transpose(0, 2, 1), atol=1e-12 * g.max())
    # narrow bins are concentrated, the widest bin is spread over the support
    assert g[0, radius, radius] > 100 * g[-1, radius, radius]
    blur = fs.make_blur(SMALL)
    assert blur.shape == (15, 15) and blur.sum() == pytest.approx(1.0, abs=5e-3)


def test_free_time_matrix_without_desorption_is_first_adsorption():
    c = fs.FluoroSpotConfig(n_time=300, n_bins=10, k_d=0.0)
    m = fs.free_time_matrix(c)
    phi = fs.first_adsorption(c)
    upper = np.triu(np.ones_like(m, dtype=bool))
    np.testing.assert_allclose(m[upper], np.broadcast_to(phi[:, None], m.shape)[upper], rtol=1e-12)
    assert np.all(m[~upper] == 0)
    with_rebinding = fs.free_time_matrix(SMALL)
    assert np.all(with_rebinding.sum(0) <= 1 + 1e-9)
    # desorption moves mass to longer free times
    def mean_free_time(col):
        return col @ np.arange(300) / col.sum()

    assert mean_free_time(with_rebinding[:, -1]) > 1.5 * mean_free_time(m[:, -1])


def test_secretion_profiles_totals_and_window():
    rng = np.random.default_rng(3)
    c = fs.FluoroSpotConfig(n_cells=500, n_time=300, n_bins=10)
    f, totals = fs.secretion_profiles(c, rng)
    np.testing.assert_allclose(f.sum(1), totals, rtol=1e-12)
    assert totals.min() >= 500 and totals.max() <= 1000
    active = np.nonzero(f.any(0))[0]
    assert active.min() >= round(1 / 8 * 300) and active.max() < round(6 / 8 * 300)
    assert np.mean(totals) == pytest.approx(750, rel=0.05)


@pytest.mark.parametrize("noise_level", [0, 3])
def test_image_is_blurred_convolved_targets_plus_noise(noise_level):
    c = fs.FluoroSpotConfig(size=48, n_cells=12, n_time=300, n_bins=10, noise_level=noise_level)
    sample = fs.simulate(c, np.random.default_rng(0))
    assert sample.image.shape == (48, 48) and sample.target.shape == (10, 48, 48)
    clean = fs.observe(sample.target.astype(np.float64), sample.kernels.astype(np.float64),
                       sample.blur.astype(np.float64))
    assert clean.max() == pytest.approx(255.0, rel=1e-5)
    residual = sample.image / 255 - clean / 255
    inside = (sample.image > 0) & (sample.image < 255)
    if noise_level == 0:
        np.testing.assert_allclose(sample.image, np.clip(clean, 0, 255), rtol=1e-5, atol=1e-4)
    else:
        assert residual[inside].std() == pytest.approx(c.noise_std, rel=0.1)
        assert abs(residual[inside].mean()) < 3 * c.noise_std / math.sqrt(inside.sum()) + 1e-3
    # per-cell codes add up into the target at the cell pixels
    total = np.zeros((48, 48))
    np.add.at(total, (sample.cells_yx[:, 0], sample.cells_yx[:, 1]), sample.secretion.sum(1))
    np.testing.assert_allclose(sample.target.sum(0), total, rtol=1e-4, atol=1e-3)


def test_observe_is_blur_of_the_unbounded_spot_image():
    """Spots spill over the border and the blur brings light back: observe must equal kernels,
    then blur, on a canvas large enough for nothing to be lost, cropped to the field of view."""
    from scipy.signal import convolve2d

    rng = np.random.default_rng(1)
    g = rng.random((3, 9, 9))
    b = fs.make_blur(SMALL)
    x = rng.random((3, 20, 20))
    spots = sum(convolve2d(x[k], g[k], mode="full") for k in range(3))  # 28x28, offset 4
    blurred = convolve2d(spots, b, mode="full")  # 42x42, offset 4 + 7
    np.testing.assert_allclose(fs.observe(x, g, b), blurred[11:31, 11:31], rtol=1e-10)
