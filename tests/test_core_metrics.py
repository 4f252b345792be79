"""Point matching and scores on hand-made cases."""

import numpy as np
import pytest

from proxscope.metrics import best_threshold_f1, match_points, pooled_best_threshold, psnr


def test_exact_and_within_radius():
    truth = np.array([[10, 10], [20, 20], [30, 30]])
    pred = np.array([[10, 11], [20, 23.5], [50, 50]])
    r = match_points(pred, truth, radius=3)
    assert (r.tp, r.fp, r.fn) == (1, 2, 2)
    r = match_points(pred, truth, radius=3.5)
    assert (r.tp, r.fp, r.fn) == (2, 1, 1)
    assert r.precision == pytest.approx(2 / 3) and r.recall == pytest.approx(2 / 3)
    assert r.f1 == pytest.approx(2 / 3)


def test_one_to_one_duplicates():
    truth = np.array([[5, 5]])
    pred = np.array([[5, 5], [5, 6], [6, 5]])  # three detections of one cell
    r = match_points(pred, truth, radius=2)
    assert (r.tp, r.fp, r.fn) == (1, 2, 0)


def test_assignment_maximises_matches_not_greedy():
    # Greedy nearest matching would pair pred 0 with truth 1 (distance 0.9) and leave truth 0 alone.
    truth = np.array([[0.0, 0.0], [0.0, 2.0]])
    pred = np.array([[0.0, 1.1], [0.0, 3.0]])
    r = match_points(pred, truth, radius=1.2)
    assert r.tp == 2
    assert sorted(map(tuple, r.pairs.tolist())) == [(0, 0), (1, 1)]


def test_ties_are_matched_once():
    truth = np.array([[0.0, 0.0], [0.0, 2.0]])
    pred = np.array([[0.0, 1.0]])  # equidistant from both
    r = match_points(pred, truth, radius=1.0)
    assert (r.tp, r.fp, r.fn) == (1, 0, 1)


def test_empty_sets():
    truth = np.array([[1.0, 1.0]])
    none = np.zeros((0, 2))
    r = match_points(none, truth, 3)  # nothing predicted: precision 0, not 1
    assert (r.tp, r.fp, r.fn, r.precision, r.recall, r.f1) == (0, 0, 1, 0.0, 0.0, 0.0)
    r = match_points(truth, none, 3)  # nothing to find: recall 0 for a false detection
    assert (r.tp, r.fp, r.fn, r.precision, r.recall, r.f1) == (0, 1, 0, 0.0, 0.0, 0.0)
    r = match_points(none, none, 3)
    assert (r.precision, r.recall, r.f1) == (1.0, 1.0, 1.0)


def test_best_threshold_f1():
    truth = np.array([[10, 10], [20, 20]])
    pred = np.array([[10, 10], [20, 21], [40, 40], [60, 60]])
    scores = np.array([0.9, 0.6, 0.5, 0.95])
    f1, threshold = best_threshold_f1(pred, scores, truth, radius=2)
    # threshold 0.6 keeps 3 predictions with 2 TP: F1 = 4/5; any other threshold is worse
    assert f1 == pytest.approx(0.8) and threshold == 0.6


def test_psnr():
    ref = np.zeros((4, 4))
    ref[0, 0] = 1.0
    x = ref + 0.1
    assert psnr(x, ref) == pytest.approx(20.0)
    assert psnr(ref, ref) == float("inf")


def test_best_f1_is_the_maximum_over_all_thresholds():
    rng = np.random.default_rng(0)
    truth = rng.integers(0, 60, size=(40, 2))
    yx = np.concatenate([truth + rng.integers(-2, 3, size=truth.shape),
                         rng.integers(0, 60, size=(300, 2))])
    scores = np.concatenate([rng.uniform(0.3, 1.0, 40), rng.uniform(0.0, 0.8, 300)])
    exhaustive = max(match_points(yx[scores >= t], truth, 3.0).f1 for t in scores)
    f1, threshold = best_threshold_f1(yx, scores, truth, 3.0)
    assert f1 == pytest.approx(exhaustive)
    assert match_points(yx[scores >= threshold], truth, 3.0).f1 == pytest.approx(f1)


def test_pooled_best_threshold_over_images():
    truth = np.array([[10, 10], [20, 20]])
    a = (np.array([[10, 10], [20, 21], [40, 40]]), np.array([0.9, 0.6, 0.5]), truth)
    b = (np.array([[10, 11], [50, 50]]), np.array([0.7, 0.8]), truth)
    threshold, f1 = pooled_best_threshold([a, b], radius=2)
    # >= 0.6 keeps 4 detections with 3 TP of 4 cells: F1 = 6/8, the best of all thresholds
    assert threshold == 0.6 and f1 == pytest.approx(0.75)


def test_per_image_threshold_weighs_a_sparse_well_like_a_crowded_one():
    # crowded: 10 cells found, 5 strong (1.0) and 5 weak (0.3); sparse: 1 cell (1.0), 3 weak
    # false peaks (0.3). Pooled F1 prefers 0.3 (22/25); the mean per-image F1 prefers 1.0
    # ((10/15 + 1) / 2 = 0.833 vs (1 + 2/5) / 2 = 0.7 at 0.3).
    crowded = np.array([[10 * i, 0] for i in range(10)])
    crowded_det = (crowded, np.array([1.0] * 5 + [0.3] * 5), crowded)
    sparse_det = (np.array([[0, 0], [30, 30], [50, 50], [70, 70]]), np.array([1.0, 0.3, 0.3, 0.3]),
                  np.array([[0, 0]]))
    assert pooled_best_threshold([crowded_det, sparse_det], 2) == pytest.approx((0.3, 22 / 25))
    assert pooled_best_threshold([crowded_det, sparse_det], 2, per_image=True) == pytest.approx(
        (1.0, (10 / 15 + 1) / 2))
