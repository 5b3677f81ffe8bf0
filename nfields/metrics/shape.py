"""Scores of a reconstructed surface against the reference, all in the normalised [-1, 1]^3 box.

With `a` points sampled on the reconstruction and `b` on the reference, d(p, X) the Euclidean
distance from p to its nearest neighbour in X (scipy cKDTree):

- chamfer_l1 = (mean_a d(a, b) + mean_b d(b, a)) / 2
- chamfer_l2 = (mean_a d(a, b)^2 + mean_b d(b, a)^2) / 2
- normal_consistency = (mean_a |cos(n_a, n_nn(a))| + mean_b |cos(n_b, n_nn(b))|) / 2
  (absolute cosine: the orientation of a reconstruction's triangles is not scored)
- fscore = 2 P R / (P + R) with precision P = share of d(a, b) < tau, recall R = share of d(b, a) < tau,
  tau = FSCORE_THRESHOLD = 0.02, i.e. 1% of the box side (2)
- iou = |pred inside AND true inside| / |pred inside OR true inside| over uniform points in the box
"""

from __future__ import annotations

import numpy as np
from scipy.spatial import cKDTree

FSCORE_THRESHOLD = 0.02


def surface_metrics(points: np.ndarray, normals: np.ndarray, ref_points: np.ndarray,
                    ref_normals: np.ndarray, threshold: float = FSCORE_THRESHOLD) -> dict[str, float]:
    """Chamfer L1/L2, normal consistency and F-score between two oriented point samples (see above)."""
    if len(points) == 0:
        nan = float("nan")
        return {"chamfer_l1": nan, "chamfer_l2": nan, "normal_consistency": nan, "fscore": 0.0}
    d_ab, i_ab = cKDTree(ref_points).query(points, workers=-1)
    d_ba, i_ba = cKDTree(points).query(ref_points, workers=-1)
    cos_ab = np.abs((_unit(normals) * _unit(ref_normals)[i_ab]).sum(1))
    cos_ba = np.abs((_unit(ref_normals) * _unit(normals)[i_ba]).sum(1))
    precision, recall = float((d_ab < threshold).mean()), float((d_ba < threshold).mean())
    return {"chamfer_l1": float(d_ab.mean() + d_ba.mean()) / 2,
            "chamfer_l2": float((d_ab ** 2).mean() + (d_ba ** 2).mean()) / 2,
            "normal_consistency": float(cos_ab.mean() + cos_ba.mean()) / 2,
            "fscore": 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0}


def volume_iou(predicted_inside: np.ndarray, true_inside: np.ndarray) -> float:
    union = np.logical_or(predicted_inside, true_inside).sum()
    return float(np.logical_and(predicted_inside, true_inside).sum() / union) if union else 1.0


def _unit(vectors: np.ndarray) -> np.ndarray:
    return vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
