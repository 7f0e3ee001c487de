"""The pairs of close vectors in one collection, without comparing all pairs: a self-join over coarse lists.

Why: near-duplicate search needs, for each of N vectors, the others above a cosine floor. One k-NN search
per vector through an IVF index scans lists one query at a time (~500 queries/s at 1M x 768 on 2 cores:
35 min), and all pairs is N^2 (3.6 h at 1M). Here every vector joins the lists of its ``m`` nearest k-means
centroids, and the members of each list are compared with each other exactly, a block of rows at a time as
one matrix product (BLAS): 183 s at 1M x 768 on the same cores (bench/README.md). Two close vectors almost
always share one of their ``m`` nearest lists; ``m`` is the smallest for which a sample of rows compared
with every vector shows, with 95 % confidence, ``target`` of its pairs above the floor sharing a list.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import faiss
import numpy as np

log = logging.getLogger(__name__)

MAX_ASSIGN = 8  # lists per vector at most
SAMPLE_ROWS = 1000  # rows compared with every vector to choose the lists per vector
ROW_BLOCK = 1024  # rows of a list multiplied at once: ROW_BLOCK x list size scores in memory
TRAIN_POINTS_PER_LIST = 20  # coarse lists need no fine centroids (40 points and 8 rounds: a third of the time at 100k)


@dataclass
class SelfJoin:
    pairs: dict[tuple[int, int], float]  # {(a, b): cosine, a < b}
    lists: int  # coarse lists (k-means centroids)
    assign: int  # lists each vector joined
    sample_recall: float  # share of the sample's pairs above the floor that share a list (1.0 if none)
    sample_pairs: int  # pairs above the floor among the sample rows, the recall's base


def list_count(n: int) -> int:
    """Coarse lists for ``n`` vectors: ~4 sqrt(n) balances assigning vectors (n x lists) and comparing
    within lists (n^2 / lists)."""
    return max(1, min(n // TRAIN_POINTS_PER_LIST, int(round(4 * math.sqrt(n)))))


def close_pairs(ids: np.ndarray, vectors: np.ndarray, floor: float, *, max_per_row: int = 256,
                target: float = 0.99, seed: int = 0) -> SelfJoin:
    """Pairs of ``vectors`` (L2-normalised rows, ids ``ids``) whose cosine is at least ``floor``; each
    vector keeps at most ``max_per_row`` of its closest (a group larger than that stays connected
    through its members). Scores are exact cosines."""
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    ids = np.asarray(ids, dtype=np.int64)
    n = len(vectors)
    if n < 2:
        return SelfJoin({}, 0, 0, 1.0, 0)
    lists = list_count(n)
    nearest = _nearest_lists(vectors, lists, min(MAX_ASSIGN, lists), seed)
    assign, recall, sampled = _choose_assign(vectors, nearest, floor, target, seed)
    log.debug("self-join of %d vectors: %d lists, %d per vector (sample recall %.3f of %d pairs)",
              n, lists, assign, recall, sampled)
    lows, highs, values = [], [], []
    for members in _list_members(nearest[:, :assign], lists):
        for a, b, value in _pairs_within(vectors, members, floor, max_per_row):
            lows.append(np.minimum(ids[a], ids[b]))
            highs.append(np.maximum(ids[a], ids[b]))
            values.append(value)
    return SelfJoin(best_per_pair(lows, highs, values), lists, assign, recall, sampled)


def best_per_pair(lows: list[np.ndarray], highs: list[np.ndarray], values: list[np.ndarray]) -> dict[tuple[int, int], float]:
    """{(low, high): the highest score found for it}, from parallel arrays (``low < high``)."""
    if not lows:
        return {}
    low, high, value = np.concatenate(lows), np.concatenate(highs), np.concatenate(values).astype(np.float64)
    if not len(low):
        return {}
    order = np.lexsort((-value, high, low))  # by pair, best score first
    low, high, value = low[order], high[order], value[order]
    first = np.ones(len(low), dtype=bool)
    first[1:] = (low[1:] != low[:-1]) | (high[1:] != high[:-1])
    return dict(zip(zip(low[first].tolist(), high[first].tolist()), value[first].tolist()))


def _nearest_lists(vectors: np.ndarray, lists: int, width: int, seed: int) -> np.ndarray:
    """[n, width] the ``width`` nearest centroids of each vector, nearest first (spherical k-means)."""
    n, dim = vectors.shape
    if lists == 1:
        return np.zeros((n, 1), dtype=np.int64)
    kmeans = faiss.Kmeans(dim, lists, niter=6, seed=seed, spherical=True, max_points_per_centroid=TRAIN_POINTS_PER_LIST,
                          min_points_per_centroid=1, verbose=False)
    rng = np.random.default_rng(seed)
    train = vectors[rng.choice(n, min(n, lists * TRAIN_POINTS_PER_LIST), replace=False)]
    kmeans.train(train)
    centroids = faiss.IndexFlatIP(dim)
    centroids.add(kmeans.centroids)
    _, nearest = centroids.search(vectors, width)
    return nearest.astype(np.int64)


def _choose_assign(vectors: np.ndarray, nearest: np.ndarray, floor: float, target: float, seed: int) -> tuple[int, float, int]:
    """(lists per vector, sample recall, sample pairs): the smallest count whose shared lists hold, with
    95 % confidence, ``target`` of the pairs above ``floor`` found by comparing sample rows with every vector."""
    n, width = nearest.shape
    rng = np.random.default_rng(seed + 1)
    rows = rng.choice(n, min(n, SAMPLE_ROWS), replace=False)
    mine, theirs = [], []
    for start in range(0, len(rows), 64):  # 64 x N scores at a time (256 MB at 1M)
        block = rows[start : start + 64]
        scores = vectors[block] @ vectors.T
        r, c = np.nonzero(scores >= floor)
        keep = block[r] != c
        mine.append(block[r][keep])
        theirs.append(c[keep])
    a, b = np.concatenate(mine), np.concatenate(theirs)
    if not len(a):
        return min(2, width), 1.0, 0
    recall = 0.0
    for m in range(1, width + 1):
        shared = (nearest[a, :m, None] == nearest[b, None, :m]).any(axis=(1, 2))
        recall = float(shared.mean())
        if _lower_bound(recall, len(a)) >= target:
            return m, recall, len(a)
    return width, recall, len(a)


def _lower_bound(share: float, count: int, z: float = 1.645) -> float:
    """One-sided 95 % lower bound (Wilson) of a share measured on ``count`` pairs: a sample of a few dozen
    pairs, all found, does not prove 99 % (at 20k vectors, 41 of 41 found at 2 lists, then 96 % overall)."""
    spread = z * math.sqrt(share * (1 - share) / count + z * z / (4 * count * count))
    return (share + z * z / (2 * count) - spread) / (1 + z * z / count)


def _list_members(assigned: np.ndarray, lists: int):
    """Row indices of each list's members, list by list (each row in ``assigned.shape[1]`` lists)."""
    n, m = assigned.shape
    flat = assigned.ravel()
    rows = np.repeat(np.arange(n, dtype=np.int64), m)
    order = np.argsort(flat, kind="stable")
    bounds = np.searchsorted(flat[order], np.arange(lists + 1))
    for list_id in range(lists):
        members = rows[order[bounds[list_id] : bounds[list_id + 1]]]
        if len(members) > 1:
            yield members


def _pairs_within(vectors: np.ndarray, members: np.ndarray, floor: float, max_per_row: int):
    """(rows, other rows, scores) of the members' pairs at or above ``floor``, at most
    ``max_per_row`` closest per member, a block of rows at a time."""
    block = vectors[members]
    for start in range(0, len(members), ROW_BLOCK):
        scores = block[start : start + ROW_BLOCK] @ block.T
        scores[np.arange(len(scores)), np.arange(start, start + len(scores))] = -np.inf  # not itself
        if scores.shape[1] > max_per_row:
            cut = np.partition(scores, scores.shape[1] - max_per_row, axis=1)[:, scores.shape[1] - max_per_row]
            scores[scores < cut[:, None]] = -np.inf  # each row keeps its closest max_per_row (ties may add a few)
        r, c = np.nonzero(scores >= floor)
        if not len(r):
            continue
        yield members[start + r], members[c], scores[r, c]
