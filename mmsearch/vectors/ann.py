"""Choosing, building and tuning the vector index: exact below a size threshold, approximate above.

* **Choice** (:func:`choose_factory`): ``flat`` (exact) below ``flat_threshold`` vectors; above it an
  IVF index with an HNSW coarse quantizer and full vectors (``IVF{n}_HNSW32,Flat``), which removes ids
  in place, memory-maps and costs ~1.01x the raw float32 vectors. ``hnsw`` (fastest queries, ~1.2x raw,
  cannot remove: a run that deletes or re-embeds rebuilds it from the embeddings table), ``ivfpq``
  (product codes, one byte per two dimensions: ~0.13x raw, for memory-bound collections), ``sq8``
  (8-bit scalar codes, ~0.26x raw) and any FAISS ``index_factory`` string can be forced.
* **Build** (:func:`build_index`): trained on a uniform sample of the vectors, filled in batches, so
  memory stays at the index itself plus one batch.
* **Tuning** (:func:`tune`): the search knob (``efSearch`` for HNSW, ``nprobe`` for IVF) is raised
  until recall@k against exact search reaches the target on held-out queries (stored vectors whose own
  id is left out of both result lists), the way autofaiss does. The chosen value is written into the
  index file itself and recorded, with the recall it reached, in the manifest. Indexes of product codes
  (ivfpq) are searched for ``k * factor`` candidates re-ranked exactly on the stored vectors
  (:mod:`mmsearch.vectors.rerank`); the knob and the factor are tuned together, recall measured after
  re-ranking, and the factor is recorded as the ``rerank`` search parameter.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import asdict, dataclass, field
from typing import Callable, Iterator

import faiss
import numpy as np

from mmsearch.vectors import rerank
from mmsearch.errors import ConfigError
from mmsearch.vectors.index import VectorIndex

log = logging.getLogger(__name__)

INDEX_TYPES = ("auto", "flat", "hnsw", "ivf", "ivfpq", "sq8")
DEFAULT_FLAT_THRESHOLD = 50_000
DEFAULT_RECALL_TARGET = 0.95
TUNE_QUERIES = 200
TUNE_K = 10
TUNE_MARGIN = 0.01  # ~2 standard errors of recall@10 over 200 queries: fresh queries still meet the target
RETUNE_GROWTH = 1.25  # re-tune once the collection grew or shrank by this factor since the last tuning
EF_CANDIDATES = (16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512, 768, 1024)

Batches = Callable[[], Iterator[tuple[np.ndarray, np.ndarray]]]  # a fresh pass of (ids, vectors) batches


def nlist_for(n: int) -> int:
    """IVF list count: ~4*sqrt(n) rounded to a power of two (so small growth keeps the same layout)."""
    return int(2 ** round(math.log2(max(16.0, 4 * math.sqrt(max(n, 1))))))


def _pq_m(dim: int) -> int:
    """PQ sub-quantizers: one byte per 2 dimensions (0.125x raw), which keeps recall@10 near 0.9 on
    embedding-like data where 4 dimensions a byte loses a third of the true neighbours; the largest
    divisor of ``dim`` at most dim/2 when dim is odd."""
    for m in range(max(1, dim // 2), 0, -1):
        if dim % m == 0:
            return m
    return 1


def choose_factory(index_type: str, n: int, dim: int, flat_threshold: int = DEFAULT_FLAT_THRESHOLD) -> str:
    """The FAISS index_factory string for ``n`` vectors of ``dim`` under the requested index type."""
    kind = index_type.lower() if index_type.lower() in INDEX_TYPES else None
    if kind is None:  # a factory string given by the user, checked once here
        try:
            faiss.index_factory(dim, index_type, faiss.METRIC_INNER_PRODUCT)
        except RuntimeError as exc:
            raise ConfigError(
                f"--index-type {index_type!r} is neither one of {', '.join(INDEX_TYPES)} nor a FAISS index_factory string"
            ) from exc
        return index_type
    if kind == "flat" or (kind == "auto" and n < flat_threshold):
        return "Flat"
    nlist = nlist_for(n)
    if kind in ("auto", "ivf"):
        return f"IVF{nlist}_HNSW32,Flat"
    if kind == "hnsw":
        return "HNSW32,Flat"
    if kind == "sq8":
        return f"IVF{nlist}_HNSW32,SQ8"
    return f"IVF{nlist}_HNSW32,PQ{_pq_m(dim)}np"  # np: no polysemous training (minutes, unused here)


def family(factory: str) -> str:
    """'flat', 'hnsw' or 'ivf' - which search knob applies and whether ids can be removed in place."""
    if "IVF" in factory:
        return "ivf"
    if factory.startswith("HNSW") or ",HNSW" in factory:
        return "hnsw"
    return "flat"


def training_size(factory: str) -> int:
    """Vectors needed to train: 40 per IVF list (FAISS's own guidance), 256 per PQ/OPQ centroid set."""
    if "IVF" not in factory and "PQ" not in factory:
        return 0
    nlist = int(factory.split("IVF", 1)[1].split("_", 1)[0].split(",", 1)[0]) if "IVF" in factory else 0
    return max(40 * nlist, 256 * 40 if "PQ" in factory else 0)


# --- search knobs ---
def _base(index: faiss.Index) -> faiss.Index:
    index = faiss.downcast_index(index)
    if isinstance(index, (faiss.IndexIDMap, faiss.IndexIDMap2)):
        index = faiss.downcast_index(index.index)
    if isinstance(index, faiss.IndexPreTransform):
        index = faiss.downcast_index(index.index)
    return index


def set_search_params(vindex: VectorIndex, params: dict[str, int]) -> None:
    """Apply {'efSearch': n} (HNSW) or {'nprobe': n} (IVF) to the index; unknown knobs are ignored."""
    base = _base(vindex.native)
    if "efSearch" in params and hasattr(base, "hnsw"):
        base.hnsw.efSearch = int(params["efSearch"])
    if "nprobe" in params:
        ivf = faiss.extract_index_ivf(base)
        ivf.nprobe = int(params["nprobe"])
        quantizer = faiss.downcast_index(ivf.quantizer)
        if hasattr(quantizer, "hnsw"):  # the coarse search must see at least nprobe good lists
            quantizer.hnsw.efSearch = max(64, 2 * int(params["nprobe"]))


def _candidates(vindex: VectorIndex, factory: str, k: int) -> list[dict[str, int]]:
    kind = family(factory)
    if kind == "hnsw":
        return [{"efSearch": ef} for ef in EF_CANDIDATES if ef >= k]
    if kind == "ivf":
        nlist = faiss.extract_index_ivf(_base(vindex.native)).nlist
        values, v = [], 1
        while v < nlist:
            values.append(v)
            v = v * 2 if v < 8 else int(v * 1.5)
        return [{"nprobe": p} for p in values + [nlist]]
    return []


# --- building ---
def _sample(batches: Batches, n: int, size: int, seed: int = 0) -> np.ndarray:
    """A uniform random sample of about ``size`` vectors in one streaming pass."""
    rng = np.random.default_rng(seed)
    keep = min(1.0, size / max(n, 1))
    parts = [vecs[rng.random(len(vecs)) < keep] for _, vecs in batches()]
    parts = [p for p in parts if len(p)]
    return np.concatenate(parts) if parts else np.zeros((0, 0), np.float32)


def build_index(dim: int, factory: str, batches: Batches, n: int, *, seed: int = 0) -> VectorIndex:
    """A new index of ``factory`` holding every batch, trained first on a sample when it needs it.

    An index that needs more training vectors than exist falls back to exact search: a half-trained
    IVF/PQ index would silently lose results, an exact one only costs time."""
    need = training_size(factory)
    if need and n < max(need // 4, 1):
        log.warning("only %d vectors, too few to train %s: using exact search", n, factory)
        factory = "Flat"
        need = 0
    index = VectorIndex(dim, factory)
    if need:
        sample = _sample(batches, n, need, seed)
        started = time.monotonic()
        index.native.train(np.ascontiguousarray(sample, dtype=np.float32))
        log.info("trained %s on %d vectors in %.1fs", factory, len(sample), time.monotonic() - started)
    for ids, vecs in batches():
        index.add(ids, vecs)
    return index


def array_batches(ids: np.ndarray, vectors: np.ndarray, batch: int = 50_000) -> Batches:
    def passes() -> Iterator[tuple[np.ndarray, np.ndarray]]:
        for start in range(0, len(ids), batch):
            yield ids[start : start + batch], vectors[start : start + batch]

    return passes


# --- tuning ---
@dataclass
class Tuning:
    factory: str
    params: dict[str, int]
    recall: float  # recall@k reached on the held-out queries with ``params``
    target: float
    k: int
    queries: int
    count: int  # vectors in the index when tuned
    met: bool  # False when even the largest setting stayed below the target
    curve: list[dict] = field(default_factory=list)  # every setting tried with its recall and mean ms/query

    def to_dict(self) -> dict:
        return asdict(self)


def held_out_queries(batches: Batches, n: int, count: int = TUNE_QUERIES, seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """``count`` stored vectors (and their ids) picked uniformly at random."""
    rng = np.random.default_rng(seed)
    keep = min(1.0, 2.0 * count / max(n, 1))
    ids_parts, vec_parts = [], []
    for ids, vecs in batches():
        mask = rng.random(len(ids)) < keep
        ids_parts.append(ids[mask])
        vec_parts.append(vecs[mask])
    ids, vecs = np.concatenate(ids_parts), np.concatenate(vec_parts)
    pick = rng.permutation(len(ids))[:count]
    return ids[pick], np.ascontiguousarray(vecs[pick], dtype=np.float32)


def exact_neighbours(queries: np.ndarray, query_ids: np.ndarray, batches: Batches, k: int) -> np.ndarray:
    """Exact top-k ids by inner product, each query's own id left out, streaming over the vectors."""
    best_scores = np.full((len(queries), k + 1), -np.inf, dtype=np.float32)
    best_ids = np.full((len(queries), k + 1), -1, dtype=np.int64)
    for ids, vecs in batches():
        scores = queries @ np.asarray(vecs, dtype=np.float32).T
        scores[query_ids[:, None] == ids[None, :]] = -np.inf
        all_scores = np.concatenate([best_scores, scores], axis=1)
        all_ids = np.concatenate([best_ids, np.broadcast_to(ids, scores.shape)], axis=1)
        top = np.argpartition(-all_scores, k, axis=1)[:, : k + 1]
        best_scores = np.take_along_axis(all_scores, top, axis=1)
        best_ids = np.take_along_axis(all_ids, top, axis=1)
    order = np.argsort(-best_scores, axis=1)[:, :k]
    return np.take_along_axis(best_ids, order, axis=1)


def recall_at_k(found: np.ndarray, truth: np.ndarray) -> float:
    k = truth.shape[1]
    hits = sum(len(set(f[f >= 0][:k]) & set(t[t >= 0])) for f, t in zip(found, truth))
    return hits / float(truth.size)


def search_excluding_self(vindex: VectorIndex, queries: np.ndarray, query_ids: np.ndarray, k: int) -> np.ndarray:
    _, ids = vindex.search(queries, k + 1)
    out = np.full((len(queries), k), -1, dtype=np.int64)
    for row, (found, own) in enumerate(zip(ids, query_ids)):
        kept = found[found != own][:k]
        out[row, : len(kept)] = kept
    return out


def tune(vindex: VectorIndex, factory: str, queries: np.ndarray, query_ids: np.ndarray, truth: np.ndarray,
         target: float = DEFAULT_RECALL_TARGET, vectors_for: rerank.VectorSource | None = None) -> Tuning:
    """Smallest search setting whose recall@k on the held-out queries reaches ``target``. With
    ``vectors_for`` and an index of product codes, each knob value is tried with growing re-rank factors
    (recall measured after re-ranking) until recall stops improving, before the knob is raised: the
    smallest knob, then the smallest factor, that reaches the target."""
    k = truth.shape[1]
    tuning = Tuning(factory, {}, 1.0, target, k, len(queries), len(vindex), True)
    candidates = _candidates(vindex, factory, k)
    if not candidates:  # exact search: nothing to tune
        return tuning
    factors = rerank.FACTORS if vectors_for is not None and rerank.needs_rerank(factory) else (0,)
    for params in candidates:
        set_search_params(vindex, params)
        previous = -1.0
        for factor, recall, ms in _recalls(vindex, queries, query_ids, truth, factors, vectors_for):
            setting = {**params, rerank.PARAM: factor} if factor else params
            tuning.curve.append({**setting, "recall": round(recall, 4), "ms_per_query": round(ms, 3)})
            tuning.params, tuning.recall = setting, recall
            if recall >= min(1.0, target + TUNE_MARGIN):
                return tuning
            if recall <= previous:  # more candidates stopped helping: the lists probed are the limit
                break
            previous = recall
    tuning.met = False
    log.warning("%s reached only recall@%d %.3f (target %.2f) at its largest setting", factory, k, tuning.recall, target)
    return tuning


def _recalls(vindex: VectorIndex, queries: np.ndarray, query_ids: np.ndarray, truth: np.ndarray,
             factors: tuple[int, ...], vectors_for: rerank.VectorSource | None) -> Iterator[tuple[int, float, float]]:
    """(factor, recall@k, mean ms/query) for each factor at the current knob: one search for the largest
    factor's candidates and one read of their vectors, then each factor re-ranks its prefix of them
    (what a search for ``k * factor`` candidates would have returned)."""
    k = truth.shape[1]
    started = time.perf_counter()
    candidates = search_excluding_self(vindex, queries, query_ids, k * max(max(factors), 1))
    search_ms = 1000 * (time.perf_counter() - started) / max(len(queries), 1)
    if factors == (0,):
        yield 0, recall_at_k(candidates, truth), search_ms
        return
    started = time.perf_counter()
    vectors = vectors_for(np.unique(candidates[candidates >= 0]).tolist())
    read_ms = 1000 * (time.perf_counter() - started) / max(len(queries), 1)
    for factor in factors:
        started = time.perf_counter()
        _, found = rerank.rerank(queries, candidates[:, : k * factor], lambda ids: {i: vectors[i] for i in ids if i in vectors}, k)
        share = k * factor / candidates.shape[1]  # the candidates' share of the search and of the vector read
        ms = share * (search_ms + read_ms) + 1000 * (time.perf_counter() - started) / max(len(queries), 1)
        yield factor, recall_at_k(found, truth), ms


def build_and_tune(dim: int, factory: str, batches: Batches, n: int, target: float = DEFAULT_RECALL_TARGET,
                   k: int = TUNE_K, queries: int = TUNE_QUERIES) -> tuple[VectorIndex, Tuning]:
    index = build_index(dim, factory, batches, n)
    return index, tune_index(index, batches, target, k, queries)


def tune_index(index: VectorIndex, batches: Batches, target: float = DEFAULT_RECALL_TARGET, k: int = TUNE_K,
               queries: int = TUNE_QUERIES, vectors_for: rerank.VectorSource | None = None) -> Tuning:
    """Tune ``index`` on held-out stored vectors. An index of product codes is tuned with exact re-ranking,
    reading candidates' vectors from ``vectors_for`` (the store's), else by a pass over ``batches``."""
    n = len(index)
    factory = index.factory
    if family(factory) == "flat" or n <= k + 1:
        return Tuning(factory, {}, 1.0, target, k, 0, n, True)
    query_ids, query_vecs = held_out_queries(batches, n, queries)
    truth = exact_neighbours(query_vecs, query_ids, batches, k)
    if rerank.needs_rerank(factory) and vectors_for is None:
        vectors_for = rerank.batches_source(batches)
    return tune(index, factory, query_vecs, query_ids, truth, target, vectors_for)


def index_bytes(vindex: VectorIndex) -> int:
    """Serialized size of an index: what it costs on disk and, loaded, in memory."""
    return int(faiss.serialize_index(vindex.native).size)


def raw_bytes(n: int, dim: int) -> int:
    return n * dim * 4



# --- keeping an index directory's vector indexes right as the collection changes ---
@dataclass
class AnnOptions:
    index_type: str = "auto"  # auto | flat | hnsw | ivf | ivfpq | sq8 | a FAISS factory string
    recall_target: float = DEFAULT_RECALL_TARGET
    flat_threshold: int = DEFAULT_FLAT_THRESHOLD

    def check(self) -> "AnnOptions":
        if not 0.0 < self.recall_target <= 1.0:
            raise ConfigError(f"recall target must be in (0, 1], not {self.recall_target}")
        if self.flat_threshold < 0:
            raise ConfigError("the exact-search threshold cannot be negative")
        return self


def _nlist(factory: str) -> int | None:
    if "IVF" not in factory:
        return None
    return int(factory.split("IVF", 1)[1].split("_", 1)[0].split(",", 1)[0])


def _layout_fits(current: str, desired: str, n: int, options: AnnOptions) -> bool:
    """Keep the current index when it is what the options ask for, allowing some slack so a collection
    hovering around a boundary is not rebuilt on every run: exact search stays until the count is 25%
    past the threshold and comes back below half of it; IVF keeps its lists until they are 4x off."""
    if current == desired:
        return True
    auto = options.index_type.lower() == "auto"
    if auto and current == "Flat":
        return n < options.flat_threshold * 1.25
    if auto and desired == "Flat":
        return n >= options.flat_threshold // 2
    now, want = _nlist(current), _nlist(desired)
    if now and want and current.replace(f"IVF{now}", "IVF") == desired.replace(f"IVF{want}", "IVF"):
        return 0.25 < now / want < 4
    return False


def maintain(dim: int, vindex: VectorIndex, batches: Batches, options: AnnOptions, previous: dict | None,
             vectors_for: rerank.VectorSource | None = None) -> tuple[VectorIndex, dict | None]:
    """-> (index to publish, tuning record). Rebuilds when the type should change (or the index holds
    removed vectors it cannot drop), re-tunes when rebuilt, when the target changed, when the
    collection grew/shrank by RETUNE_GROWTH since the last tuning, or when an index of product codes was
    tuned without re-ranking (by an older mmsearch). ``vectors_for`` reads stored vectors for tuning
    the re-ranking."""
    n = len(vindex)
    desired = choose_factory(options.index_type, n, dim, options.flat_threshold)
    rebuilt = vindex.needs_rebuild or not _layout_fits(vindex.factory, desired, n, options)
    if rebuilt:
        factory = desired if not _layout_fits(vindex.factory, desired, n, options) else vindex.factory
        started = time.monotonic()
        vindex = build_index(dim, factory, batches, n)
        n = len(vindex)
        log.info("built %s over %d vectors in %.1fs", vindex.factory, n, time.monotonic() - started)
    if family(vindex.factory) == "flat":
        return vindex, None
    stale = previous is None or previous.get("factory") != vindex.factory or previous.get("target") != options.recall_target
    stale = stale or (rerank.needs_rerank(vindex.factory) and not rerank.factor_of(previous.get("params")))
    drift = previous is not None and not (1 / RETUNE_GROWTH <= n / max(previous.get("count", 1), 1) <= RETUNE_GROWTH)
    if not (rebuilt or stale or drift):
        set_search_params(vindex, previous.get("params", {}))
        return vindex, previous
    tuning = tune_index(vindex, batches, options.recall_target, vectors_for=vectors_for)
    log.info("tuned %s: %s gives recall@%d %.3f (target %.2f)", vindex.factory, tuning.params, tuning.k, tuning.recall, tuning.target)
    return vindex, tuning.to_dict()
