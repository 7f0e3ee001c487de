"""Exact re-ranking of the candidates a product-quantised index proposes.

An index that stores product codes instead of the vectors ranks by approximate scores, so some true
neighbours fall just below the cut (at one byte per two dimensions recall@10 stays near 0.9 however
many lists are probed) and every score is a little off. The float32 vectors are still in the store
(the source of truth), so the index is asked for ``k * factor`` candidates and those are scored exactly
(inner product of L2-normalised vectors, the same score an exact index gives) to keep the best ``k``:
only the codes stay in RAM (~0.13-0.17x the raw vectors) and only the candidates' vectors are read,
the way DiskANN-style systems work. The factor is tuned with the index's own search knob
(:func:`mmsearch.vectors.ann.tune`) and stored beside it in the manifest as the ``rerank`` search parameter.
"""

from __future__ import annotations

from typing import Callable, Iterable, Sequence

import numpy as np

from mmsearch.vectors.index import VectorIndex

# ids -> {id: float32 vector}; ids it does not know are left out (e.g. Store.vectors_for)
VectorSource = Callable[[Sequence[int]], dict[int, np.ndarray]]

PARAM = "rerank"  # the search-parameter key holding the candidate factor
FACTORS = (1, 2, 3, 4, 6, 8, 12, 16)  # candidate factors tuning tries, smallest first
# Factory parts whose codes are coarse enough that re-ranking changes which items come back. 8-bit scalar
# codes (SQ8) are not among them: at the same nprobe their recall@10 is the same with or without
# re-ranking (bench/README.md), so they are not worth a read of the stored vectors per query.
RERANKED_CODES = ("PQ", "RQ", "LSQ", "LSH")


def needs_rerank(factory: str) -> bool:
    """True when the index ranks by codes that lose neighbours, so it is searched with re-ranking."""
    return any(part.startswith(RERANKED_CODES) for part in factory.replace("_", ",").split(","))


def factor_of(params: dict | None) -> int:
    """The tuned candidate factor in a search-parameter dict, 0 when the index is not re-ranked."""
    return int((params or {}).get(PARAM, 0))


def rerank(queries: np.ndarray, candidates: np.ndarray, vectors_for: VectorSource, k: int) -> tuple[np.ndarray, np.ndarray]:
    """-> (scores [q, k], ids [q, k]): each row's candidates (-1 = none) scored exactly against its query,
    best first, ties by id; rows with fewer than k known candidates are padded with id -1, score -inf.
    The vectors of all rows are read in one call."""
    queries = np.atleast_2d(np.asarray(queries, dtype=np.float32))
    wanted = np.unique(candidates[candidates >= 0])
    vectors = vectors_for(wanted.tolist()) if len(wanted) else {}
    scores = np.full((len(queries), k), -np.inf, dtype=np.float32)
    ids = np.full((len(queries), k), -1, dtype=np.int64)
    for row, (query, found) in enumerate(zip(queries, candidates)):
        known = np.array([i for i in dict.fromkeys(found.tolist()) if i in vectors], dtype=np.int64)
        if not len(known):
            continue
        exact = np.stack([vectors[i] for i in known.tolist()]).astype(np.float32, copy=False) @ query
        best = np.lexsort((known, -exact))[:k]
        scores[row, : len(best)], ids[row, : len(best)] = exact[best], known[best]
    return scores, ids


def search(index: VectorIndex, queries: np.ndarray, k: int, factor: int, vectors_for: VectorSource,
           subset: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """``index.search`` (or ``search_subset`` among ``subset``), re-ranked over ``k * factor`` candidates
    when ``factor`` > 0; the plain search when it is 0 (an index of exact vectors)."""
    depth = k * factor if factor > 0 else k
    if subset is None:
        scores, found = index.search(queries, depth)
    else:
        scores, found = index.search_subset(queries, depth, subset)
    if factor <= 0:
        return scores, found
    return rerank(queries, found, vectors_for, min(k, found.shape[1]))


def array_source(ids: np.ndarray, vectors: np.ndarray) -> VectorSource:
    """A vector source over an in-memory (or memory-mapped) array whose rows belong to ``ids``."""
    order = np.argsort(ids)
    sorted_ids = np.asarray(ids)[order]

    def vectors_for(wanted: Sequence[int]) -> dict[int, np.ndarray]:
        wanted = np.asarray(wanted, dtype=np.int64)
        at = np.clip(np.searchsorted(sorted_ids, wanted), 0, max(len(sorted_ids) - 1, 0))
        hit = sorted_ids[at] == wanted if len(sorted_ids) else np.zeros(len(wanted), bool)
        rows = order[at[hit]]
        return dict(zip(wanted[hit].tolist(), np.asarray(vectors[rows], dtype=np.float32)))

    return vectors_for


def batches_source(batches: Callable[[], Iterable[tuple[np.ndarray, np.ndarray]]]) -> VectorSource:
    """A vector source that finds the ids in one streaming pass over ``batches`` per call (for tuning
    without random access to the vectors; the store's ``vectors_for`` is much cheaper when at hand)."""

    def vectors_for(wanted: Sequence[int]) -> dict[int, np.ndarray]:
        wanted = np.asarray(wanted, dtype=np.int64)
        out: dict[int, np.ndarray] = {}
        for ids, vecs in batches():
            mask = np.isin(ids, wanted)
            out.update(zip(np.asarray(ids)[mask].tolist(), np.asarray(vecs, dtype=np.float32)[mask]))
        return out

    return vectors_for
