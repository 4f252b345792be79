"""Encode annotated centroids as line labels; decode recovered line codes into detections.

Decoding (seed Sec. 4.3): the recovered projections â (B, L, n) are summed over ±1 bin (a
regressed centroid spreads its count over neighbouring 1-pixel bins; thresholding single bins
loses those cells), thresholded at ``code_threshold`` (clamped to [0, 1], a soft count), and
back-projected into the image plane with the adjoint of
:class:`~proxscope.operators.lines.LineProjection`. Dividing by L gives a vote map: the fraction
of lines whose detections pass through a pixel. Pixels where at least ``vote_threshold`` of the
lines agree are candidate points; scikit-learn's MeanShift with ``bandwidth`` (pixels) clusters
them and each cluster gives one detection at its centre, scored by its highest vote.

Seed: cnncs-cell-detection-compressed-sensing.txt Sec. 3.1 (encoding) and Sec. 4.3 (threshold,
back-projection, mean shift clustering with a bandwidth hyper-parameter, one cell per cluster).
"""

from __future__ import annotations

import numpy as np
import torch

from ...operators.lines import LineProjection


def encode_patches(lines: LineProjection, points: list[np.ndarray]) -> torch.Tensor:
    """Centroids of each patch (list of (N_b, 2) arrays, patch coordinates) -> a (B, L, n)."""
    sizes = [len(p) for p in points]
    yx = torch.as_tensor(np.concatenate([np.reshape(p, (-1, 2)) for p in points]), dtype=torch.float64)
    batch_index = torch.repeat_interleave(torch.arange(len(points)), torch.as_tensor(sizes))
    return lines.encode_points(yx, batch_index, len(points))


def vote_map(lines: LineProjection, a_hat: torch.Tensor, code_threshold: float) -> torch.Tensor:
    """Recovered projections (B, L, n) -> vote map (B, h, w) in [0, 1]."""
    summed = 3 * torch.nn.functional.avg_pool1d(a_hat, 3, stride=1, padding=1)
    soft = torch.where(summed >= code_threshold, summed.clamp(0, 1), torch.zeros_like(summed))
    return lines.adjoint(soft) / lines.n_lines


def cluster_votes(
    votes: np.ndarray, vote_threshold: float, bandwidth: float
) -> tuple[np.ndarray, np.ndarray]:
    """Vote map (h, w) -> detections (K, 2) as (y, x) and scores (K,) by mean shift."""
    from sklearn.cluster import MeanShift
    from threadpoolctl import threadpool_limits

    candidates = np.argwhere(votes >= vote_threshold)
    if len(candidates) == 0:
        return np.zeros((0, 2)), np.zeros(0)
    if len(candidates) == 1:
        return candidates.astype(float), votes[tuple(candidates.T)]
    with threadpool_limits(1):  # tiny problems: OpenMP start-up costs more than it saves
        ms = MeanShift(bandwidth=bandwidth, bin_seeding=True, cluster_all=True).fit(candidates)
    scores = np.zeros(len(ms.cluster_centers_))
    np.maximum.at(scores, ms.labels_, votes[tuple(candidates.T)])
    return ms.cluster_centers_, scores


def decode(
    lines: LineProjection,
    a_hat: torch.Tensor,
    code_threshold: float,
    vote_threshold: float,
    bandwidth: float,
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Recovered projections (B, L, n) -> per patch (detections (K, 2), scores (K,))."""
    votes = vote_map(lines, a_hat, code_threshold).cpu().numpy()
    return [cluster_votes(v, vote_threshold, bandwidth) for v in votes]
