"""Point matching and detection scores.

One-to-one matching of predicted to true points within a radius, maximising the number of
matches and, among those, minimising the total distance (Hungarian algorithm, scipy
``linear_sum_assignment``). Conventions for empty sets: nothing predicted while there is
something to find gives precision 0 (scikit-learn's and StarDist's zero_division = 0, not 1),
a prediction where there is nothing to find gives recall 0; F1 = 2TP/(2TP+FP+FN). Only when
both are empty (an empty well, nothing found) are precision, recall and F1 all 1.

Seed: cnncs-cell-detection-compressed-sensing.txt Sec. 4.2 (a detection within ρ of an unmatched
ground-truth centroid is a TP); spotnet-fluorospot-learned-iterations.txt Sec. 4 (F1).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class MatchResult:
    tp: int
    fp: int
    fn: int
    pairs: np.ndarray = field(repr=False)  # (TP, 2) indices (pred, truth)

    @property
    def precision(self) -> float:
        return self.tp / (self.tp + self.fp) if self.tp + self.fp else float(self.fn == 0)

    @property
    def recall(self) -> float:
        return self.tp / (self.tp + self.fn) if self.tp + self.fn else float(self.fp == 0)

    @property
    def f1(self) -> float:
        denom = 2 * self.tp + self.fp + self.fn
        return 2 * self.tp / denom if denom else 1.0

    def as_dict(self) -> dict[str, float]:
        return {
            "tp": self.tp,
            "fp": self.fp,
            "fn": self.fn,
            "precision": self.precision,
            "recall": self.recall,
            "f1": self.f1,
        }


def pool_matches(results) -> MatchResult:
    """Counts summed over images (pooled P/R/F1: every detection weighs the same)."""
    results = list(results)
    return MatchResult(
        sum(r.tp for r in results), sum(r.fp for r in results), sum(r.fn for r in results),
        np.zeros((0, 2), dtype=int),
    )


def match_points(pred: np.ndarray, truth: np.ndarray, radius: float) -> MatchResult:
    """Match predicted (P, 2) to true (T, 2) points one-to-one within ``radius`` (pixels)."""
    from scipy.optimize import linear_sum_assignment
    from scipy.spatial.distance import cdist

    pred = np.asarray(pred, dtype=float).reshape(-1, 2)
    truth = np.asarray(truth, dtype=float).reshape(-1, 2)
    if len(pred) == 0 or len(truth) == 0:
        return MatchResult(0, len(pred), len(truth), np.zeros((0, 2), dtype=int))
    dist = cdist(pred, truth)
    within = dist <= radius
    # Cost: a match within the radius is always worth more than any total distance saved,
    # so the assignment first maximises the number of matches, then minimises the distance.
    big = 1.0 + within.sum() * (radius + 1.0)
    cost = np.where(within, dist - big, 0.0)
    rows, cols = linear_sum_assignment(cost)
    keep = within[rows, cols]
    pairs = np.stack([rows[keep], cols[keep]], axis=1)
    tp = len(pairs)
    return MatchResult(tp, len(pred) - tp, len(truth) - tp, pairs)


def _pairs_graph(pred: np.ndarray, truth: np.ndarray, radius: float):
    """Sparse (P, T) CSR adjacency: prediction i and true point j lie within ``radius``."""
    from scipy.sparse import csr_matrix
    from scipy.spatial import cKDTree

    if len(pred) == 0 or len(truth) == 0:
        return csr_matrix((len(pred), len(truth)))
    near = cKDTree(pred).sparse_distance_matrix(cKDTree(truth), radius, output_type="coo_matrix")
    return csr_matrix((np.ones(near.nnz), (near.row, near.col)), shape=(len(pred), len(truth)))


def _true_positives(graph, n: int) -> int:
    """TP of the first ``n`` predictions: the size of a maximum bipartite matching (the number
    of matches :func:`match_points` finds, without computing the pairs)."""
    from scipy.sparse.csgraph import maximum_bipartite_matching

    sub = graph[:n]
    if n == 0 or sub.nnz == 0:
        return 0
    return int((maximum_bipartite_matching(sub, perm_type="column") >= 0).sum())


def _best_count(f1, total: int) -> int:
    """argmax over n in [0, total] of ``f1(n)``: a geometric grid of 96 counts, then every count
    between the best one's grid neighbours (at most 400 more)."""
    grid = np.unique(np.concatenate([[0], np.geomspace(1, max(total, 1), 96).round()])).astype(int)
    coarse = max(grid, key=f1)
    i = int(np.searchsorted(grid, coarse))
    lo, hi = grid[max(i - 1, 0)], grid[min(i + 1, len(grid) - 1)]
    return max(np.unique(np.linspace(lo, hi, min(hi - lo + 1, 400)).round()).astype(int), key=f1)


def best_threshold_f1(
    pred: np.ndarray, scores: np.ndarray, truth: np.ndarray, radius: float
) -> tuple[float, float]:
    """Best F1 over score thresholds (keep ``scores >= threshold``) -> (f1, threshold).

    Scans the number n of highest-scoring predictions kept (ties with the n-th score are kept
    too): F1 = 2·TP(n)/(n + T) with TP(n) from a maximum bipartite matching on the sparse graph
    of pairs within ``radius``, so thousands of candidates cost milliseconds per count (see
    :func:`_best_count` for the counts tried).
    """
    if np.size(scores) == 0:  # nothing predicted: nothing to threshold
        return (0.0 if len(np.reshape(truth, (-1, 2))) else 1.0), float("inf")
    order = np.argsort(-np.asarray(scores, dtype=float).reshape(-1), kind="stable")
    scores = np.asarray(scores, dtype=float).reshape(-1)[order]
    pred = np.asarray(pred, dtype=float).reshape(-1, 2)[order]
    truth = np.asarray(truth, dtype=float).reshape(-1, 2)
    graph = _pairs_graph(pred, truth, radius)

    def kept(n: int) -> int:
        return int(np.searchsorted(-scores, -scores[n - 1], side="right")) if n else 0

    def f1(n: int) -> float:
        k = kept(n)
        return 2 * _true_positives(graph, k) / (k + len(truth)) if k + len(truth) else 1.0

    n_best = _best_count(f1, len(scores))
    return f1(n_best), (float(scores[n_best - 1]) if n_best else float("inf"))


def pooled_best_threshold(
    detections: list[tuple[np.ndarray, np.ndarray, np.ndarray]], radius: float,
    per_image: bool = False,
) -> tuple[float, float]:
    """One threshold for a set of images: the one maximising the pooled F1 (every detection
    weighs the same) or, with ``per_image``, the mean of the images' F1 (every image weighs the
    same: a sparse well counts as much as a crowded one) -> (threshold, that F1).

    detections: per image (pred (P, 2), scores (P,), truth (T, 2)). Used to fix a detection
    threshold on validation images.
    """
    if not detections or sum(len(s) for _, s, _ in detections) == 0:
        return 0.0, 0.0
    pooled = np.sort(np.concatenate([np.asarray(s, float) for _, s, _ in detections]))[::-1]
    images = []
    for pred, scores, truth in detections:
        order = np.argsort(-np.asarray(scores, float), kind="stable")
        truth = np.asarray(truth, float).reshape(-1, 2)
        graph = _pairs_graph(np.asarray(pred, float).reshape(-1, 2)[order], truth, radius)
        images.append((graph, np.asarray(scores, float)[order], len(truth)))
    n_truth = sum(t for _, _, t in images)

    def f1(n: int) -> float:
        threshold = pooled[n - 1] if n else np.inf
        kept = [int((s >= threshold).sum()) for _, s, _ in images]
        tp = [_true_positives(g, k) for (g, _, _), k in zip(images, kept, strict=True)]
        if per_image:
            return float(np.mean([2 * t / (k + n) if k + n else 1.0
                                  for t, k, (_, _, n) in zip(tp, kept, images, strict=True)]))
        return 2 * sum(tp) / max(sum(kept) + n_truth, 1)

    n_best = _best_count(f1, len(pooled))
    return (float(pooled[n_best - 1]) if n_best else float("inf")), f1(n_best)
