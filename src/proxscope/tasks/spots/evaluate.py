"""Detection scores: one-to-one matching within a radius (default 3 px), precision / recall /
F1 at a fixed score threshold and the best F1 over thresholds per image (the paper's protocol);
over several images, P/R/F1 of the pooled counts.

The best F1 over thresholds and the pooled validation threshold come from the core
:func:`proxscope.metrics.best_threshold_f1` / :func:`~proxscope.metrics.pooled_best_threshold`.
Seed: spotnet-fluorospot-learned-iterations.txt Sec. 4 (F1 of thresholded local maxima).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ...metrics import MatchResult, best_threshold_f1, match_points, pool_matches

RADIUS = 3.0


def score_image(
    yx: np.ndarray, scores: np.ndarray, truth: np.ndarray, threshold: float, radius: float = RADIUS
) -> dict:
    """P/R/F1 of the detections with score >= threshold, and the best F1 over thresholds."""
    result = match_points(yx[scores >= threshold], truth, radius).as_dict()
    f1, best_threshold = best_threshold_f1(yx, scores, truth, radius)
    return result | {"best_f1": f1, "best_threshold": best_threshold}


def evaluate_files(
    pred_csv: Path, truth_csv: Path, radius: float = RADIUS, threshold: float | None = None
) -> dict:
    """Scores of a predicted cells CSV (y,x[,score]) against a true one (y,x). Without a
    ``score`` column every prediction counts; ``threshold`` filters by score."""
    from ...data.io import read_points

    pred, columns = read_points(pred_csv)
    truth, _ = read_points(truth_csv)
    scores = columns.get("score", np.ones(len(pred)))
    result = score_image(pred, scores, truth, -np.inf if threshold is None else threshold, radius)
    if "score" not in columns:  # no ranking: no best threshold
        result = {k: v for k, v in result.items() if not k.startswith("best_")}
    return result | {"radius": radius, "n_pred": int(len(pred)), "n_truth": int(len(truth))}


def pool_scores(results: dict[str, dict]) -> dict:
    """Scores over images (image name -> :func:`evaluate_files`): P/R/F1 of the summed TP/FP/FN
    (every cell weighs the same), the cell counts, and the mean per-image best F1 when every
    prediction had scores."""
    rows = list(results.values())
    empty = np.zeros((0, 2), dtype=int)
    pooled = pool_matches(MatchResult(r["tp"], r["fp"], r["fn"], empty) for r in rows).as_dict()
    pooled |= {"n_pred": sum(r["n_pred"] for r in rows), "n_truth": sum(r["n_truth"] for r in rows)}
    if all("best_f1" in r for r in rows):
        pooled["mean_best_f1"] = float(np.mean([r["best_f1"] for r in rows]))
    return pooled
