"""Point matching and detection scores.

One-to-one matching of predicted to true points within a radius, maximising the number of
matches and, among those, minimising the total distance (Hungarian algorithm, scipy
``linear_sum_assignment``). Conventions for empty sets: precision = 1 when nothing is predicted,
recall = 1 when there is nothing to find, F1 = 2TP/(2TP+FP+FN) and 1 when both are empty.

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
        return self.tp / (self.tp + self.fp) if self.tp + self.fp else 1.0

    @property
    def recall(self) -> float:
        return self.tp / (self.tp + self.fn) if self.tp + self.fn else 1.0

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


def best_threshold_f1(
    pred: np.ndarray,
    scores: np.ndarray,
    truth: np.ndarray,
    radius: float,
    max_thresholds: int = 64,
) -> tuple[float, float]:
    """Best F1 over score thresholds (keep ``scores >= threshold``) -> (f1, threshold).

    The candidate thresholds are the distinct scores (plus +inf: predict nothing); with more than
    ``max_thresholds`` distinct scores, that many evenly spaced score quantiles are tried instead.
    """
    pred = np.asarray(pred, dtype=float).reshape(-1, 2)
    scores = np.asarray(scores, dtype=float).reshape(-1)
    candidates = np.unique(scores)
    if len(candidates) > max_thresholds:
        candidates = np.unique(np.quantile(scores, np.linspace(0, 1, max_thresholds)))
    best_f1, best_threshold = -1.0, float("inf")
    for threshold in [*candidates, np.inf]:
        f1 = match_points(pred[scores >= threshold], truth, radius).f1
        if f1 > best_f1:
            best_f1, best_threshold = f1, float(threshold)
    return best_f1, best_threshold
