"""Detection scores: one-to-one matching within a radius (default 3 px), precision / recall /
F1 at a fixed score threshold and the best F1 over thresholds per image (the paper's protocol).

The best F1 over thresholds scans the number n of highest-scoring detections kept: the true
positives TP(n) are the size of a maximum bipartite matching (detection, cell within the radius),
which is all F1 = 2 TP / (n + T) depends on. n runs over a geometric grid of 96 values, refined
to every value between the best one's neighbours (at most 400 more), so thousands of candidate
peaks are scored in milliseconds per count.
Seed: spotnet-fluorospot-learned-iterations.txt Sec. 4 (F1 of thresholded local maxima).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ...metrics import match_points

RADIUS = 3.0


def _pairs_graph(yx: np.ndarray, truth: np.ndarray, radius: float):
    """Sparse (N, T) CSR adjacency of detections and true cells within ``radius``."""
    from scipy.sparse import csr_matrix
    from scipy.spatial import cKDTree

    yx = np.asarray(yx, float).reshape(-1, 2)
    truth = np.asarray(truth, float).reshape(-1, 2)
    if len(yx) == 0 or len(truth) == 0:
        return csr_matrix((len(yx), len(truth)))
    near = cKDTree(yx).sparse_distance_matrix(cKDTree(truth), radius, output_type="coo_matrix")
    return csr_matrix((np.ones(near.nnz), (near.row, near.col)), shape=(len(yx), len(truth)))


def _true_positives(graph, n: int) -> int:
    """Maximum matching size between the first ``n`` detections and the true cells."""
    from scipy.sparse.csgraph import maximum_bipartite_matching

    if n == 0 or graph.shape[1] == 0:
        return 0
    sub = graph[:n]
    if sub.nnz == 0:
        return 0
    return int((maximum_bipartite_matching(sub, perm_type="column") >= 0).sum())


def _count_grid(total: int, best=None, grid=None) -> np.ndarray:
    if best is None:
        return np.unique(np.concatenate([[0], np.geomspace(1, max(total, 1), 96).round()])).astype(int)
    i = int(np.searchsorted(grid, best))
    lo, hi = grid[max(i - 1, 0)], grid[min(i + 1, len(grid) - 1)]
    return np.unique(np.linspace(lo, hi, min(hi - lo + 1, 400)).round()).astype(int)


def best_f1(yx: np.ndarray, scores: np.ndarray, truth: np.ndarray, radius: float = RADIUS):
    """Best F1 over score thresholds -> (F1, threshold: keep scores >= threshold)."""
    order = np.argsort(-np.asarray(scores), kind="stable")
    scores = np.asarray(scores)[order]
    graph = _pairs_graph(np.asarray(yx)[order], truth, radius)
    n_truth = len(np.asarray(truth).reshape(-1, 2))

    def f1(n: int) -> float:
        # keep every detection tied with the n-th score
        kept = int(np.searchsorted(-scores, -scores[n - 1], side="right")) if n else 0
        denom = kept + n_truth
        return 2 * _true_positives(graph, kept) / denom if denom else 1.0

    grid = _count_grid(len(scores))
    coarse = max(grid, key=f1)
    n_best = max(_count_grid(len(scores), coarse, grid), key=f1)
    threshold = float(scores[n_best - 1]) if n_best else float("inf")
    return f1(n_best), threshold


def score_image(
    yx: np.ndarray, scores: np.ndarray, truth: np.ndarray, threshold: float, radius: float = RADIUS
) -> dict:
    """P/R/F1 of the detections with score >= threshold, and the best F1 over thresholds."""
    result = match_points(yx[scores >= threshold], truth, radius).as_dict()
    f1, best_threshold = best_f1(yx, scores, truth, radius)
    return result | {"best_f1": f1, "best_threshold": best_threshold}


def pooled_threshold(
    detections: list[tuple[np.ndarray, np.ndarray, np.ndarray]], radius: float = RADIUS
) -> tuple[float, float]:
    """The threshold maximising the pooled F1 over images -> (threshold, pooled F1).

    detections: per image (yx (N, 2), scores (N,), truth (T, 2)). Scans the number of pooled
    detections kept, like :func:`best_f1`."""
    pooled = np.sort(np.concatenate([s for _, s, _ in detections]))[::-1] if detections else []
    if len(pooled) == 0:
        return 0.0, 0.0
    graphs = []
    for yx, scores, truth in detections:
        order = np.argsort(-scores, kind="stable")
        graphs.append((_pairs_graph(yx[order], truth, radius), scores[order], len(truth)))
    n_truth = sum(t for _, _, t in graphs)

    def f1(n: int) -> float:
        threshold = pooled[n - 1] if n else np.inf
        kept = [int((s >= threshold).sum()) for _, s, _ in graphs]
        tp = sum(_true_positives(g, k) for (g, _, _), k in zip(graphs, kept, strict=True))
        return 2 * tp / max(sum(kept) + n_truth, 1)

    grid = _count_grid(len(pooled))
    coarse = max(grid, key=f1)
    n_best = max(_count_grid(len(pooled), coarse, grid), key=f1)
    return (float(pooled[n_best - 1]) if n_best else float("inf")), f1(n_best)


def evaluate_files(
    pred_csv: str | Path, truth_csv: str | Path, radius: float = RADIUS, threshold: float | None = None
) -> dict:
    """Scores of a predicted cells CSV (y,x[,score]) against a true one (y,x). Without a
    ``score`` column every prediction counts; ``threshold`` filters by score."""
    from ...data.io import read_points
    from ...errors import UserError

    if radius <= 0:
        raise UserError(f"--radius must be positive, got {radius}")
    pred, columns = read_points(pred_csv)
    truth, _ = read_points(truth_csv)
    scores = columns.get("score", np.ones(len(pred)))
    if threshold is None:
        result = match_points(pred, truth, radius).as_dict()
        if "score" in columns:
            f1, best_threshold = best_f1(pred, scores, truth, radius)
            result |= {"best_f1": f1, "best_threshold": best_threshold}
    else:
        result = score_image(pred, scores, truth, threshold, radius)
    return result | {"radius": radius, "n_pred": int(len(pred)), "n_truth": int(len(truth))}
