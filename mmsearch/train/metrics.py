"""Recall@k from similarity scores and group labels (used for validation during training)."""

from __future__ import annotations

from typing import Sequence

import numpy as np


def recall_at_k(scores: np.ndarray, query_groups: Sequence[str], item_groups: Sequence[str], ks: Sequence[int]) -> dict[int, float]:
    """Fraction of queries with at least one item of their own group in the top k (``scores``: [q, n])."""
    item_groups = np.asarray(item_groups)
    kmax = min(max(ks), scores.shape[1])
    top = np.argpartition(-scores, kmax - 1, axis=1)[:, :kmax] if kmax < scores.shape[1] else np.tile(np.arange(scores.shape[1]), (len(scores), 1))
    order = np.take_along_axis(top, np.argsort(-np.take_along_axis(scores, top, axis=1), axis=1), axis=1)
    hits = item_groups[order] == np.asarray(query_groups)[:, None]
    return {k: float(hits[:, :k].any(axis=1).mean()) if len(hits) else 0.0 for k in ks}
