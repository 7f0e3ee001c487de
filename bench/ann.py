"""Approximate nearest-neighbour search vs exact search, single queries, same run, same vectors.

    python -m bench.ann --size smoke|full [--types auto,hnsw,ivfpq,sq8] [--sqlite] [--json out.json]

Vectors: a clustered, anisotropic Gaussian mixture with a decaying spectrum (bench/vectors.py) at the
default model's embedding width. Queries are fresh draws from the same mixture (never indexed, never
used for tuning). For each index type: build, tune to the recall target the way an index run does,
then time queries one at a time (one FAISS thread, as a server request runs them; builds use all cores) and measure
recall@10 against exact search. Baselines from the same run: exact FAISS Flat and plain numpy brute
force (matrix-vector product + argpartition).

Indexes of product codes (ivfpq) are tuned and searched as mmsearch does, re-ranking ``k * factor``
candidates on the float32 vectors (mmsearch.vectors.rerank); here the vectors come from the in-memory array (a
stand-in for the store), and a "codes only" row shows the same index and nprobe without re-ranking.
``--sqlite`` also writes the vectors into a real SQLite store (the writer's tables) and times the
re-rank reading them with ``Store.vectors_for``: the read alone for ``k * factor`` and for a query
window's ``1000 * factor`` random ids, and search + re-rank end to end.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import faiss
import numpy as np

from bench.common import emit_json, machine, print_table
from bench.synthetic_index import bulk_insert
from bench.vectors import Mixture, default_model_dim
from mmsearch.vectors import ann, rerank
from mmsearch.vectors.index import VectorIndex
from mmsearch.storage.indexdir import IndexDir
from mmsearch.query import WINDOW

SIZES = {"smoke": {"n": 20_000, "queries": 200, "brute_queries": 50}, "full": {"n": 1_000_000, "queries": 1000, "brute_queries": 50}}
TARGETS = {"auto": 0.95, "ivf": 0.95, "hnsw": 0.95, "sq8": 0.95, "ivfpq": 0.95}
K = 10


def _percentiles(ms: list[float]) -> dict:
    a = np.asarray(ms)
    return {"p50_ms": round(float(np.percentile(a, 50)), 3), "p99_ms": round(float(np.percentile(a, 99)), 3),
            "mean_ms": round(float(a.mean()), 3)}


def time_single_queries(search, queries: np.ndarray) -> tuple[dict, np.ndarray]:
    """Run each query alone; -> (latency percentiles, ids [q, K])."""
    ms, found = [], []
    threads = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)  # a server request searches on one thread (mmsearch.threads)
    search(queries[:1])  # warm caches
    for q in queries:
        started = time.perf_counter()
        ids = search(q[None, :])
        ms.append(1000 * (time.perf_counter() - started))
        found.append(ids[0])
    faiss.omp_set_num_threads(threads)  # building and tuning use every core, as an index run does
    return _percentiles(ms), np.array(found)


def numpy_brute_force(vectors: np.ndarray, ids: np.ndarray):
    def search(q: np.ndarray) -> np.ndarray:
        scores = vectors @ q[0]
        top = np.argpartition(-scores, K)[:K]
        return ids[top[np.argsort(-scores[top])]][None, :]

    return search


def run(size: str, types: list[str], n_override: int | None = None, sqlite: bool = False) -> dict:
    spec = SIZES[size]
    n, dim = n_override or spec["n"], default_model_dim()
    mixture = Mixture(dim, clusters=min(1024, max(64, n // 1000)), seed=7)
    started = time.monotonic()
    parts = list(mixture.batches(n, seed=1))
    ids = np.concatenate([p[0] for p in parts])
    vectors = np.concatenate([p[1] for p in parts])
    del parts
    queries = mixture.sample(spec["queries"], seed=424242)
    print(f"generated {n} x {dim} vectors in {time.monotonic() - started:.1f}s", file=sys.stderr)
    batches = ann.array_batches(ids, vectors)
    in_memory = rerank.array_source(ids, vectors)

    flat = VectorIndex(dim, "Flat")
    flat.add(ids, vectors)
    flat_lat, truth = time_single_queries(lambda q: flat.search(q, K)[1], queries)
    brute_lat, brute_found = time_single_queries(numpy_brute_force(vectors, ids), queries[: spec["brute_queries"]])
    raw = ann.raw_bytes(n, dim)
    rows = {
        "numpy brute force": {**brute_lat, "recall@10": round(ann.recall_at_k(brute_found, truth[: len(brute_found)]), 4),
                              "memory_x_raw": 1.0},
        "faiss Flat (exact)": {**flat_lat, "recall@10": 1.0, "memory_x_raw": round(ann.index_bytes(flat) / raw, 3)},
    }
    del flat
    sqlite_rows: dict[str, dict] = {}
    for kind in types:
        factory = ann.choose_factory(kind, n, dim, flat_threshold=0)
        started = time.monotonic()
        index = ann.build_index(dim, factory, batches, n)
        built = time.monotonic() - started
        started = time.monotonic()
        tuning = ann.tune_index(index, batches, TARGETS.get(kind, 0.95), vectors_for=in_memory)
        tuned = time.monotonic() - started
        factor = rerank.factor_of(tuning.params)
        common = {"memory_x_raw": round(ann.index_bytes(index) / raw, 3), "target": tuning.target, "params": tuning.params,
                  "tuned_recall": round(tuning.recall, 4), "build_s": round(built, 1), "tune_s": round(tuned, 1)}
        if factor:
            lat, found = time_single_queries(lambda q: index.search(q, K)[1], queries)
            rows[f"{kind}: {factory} (codes only)"] = {**lat, "recall@10": round(ann.recall_at_k(found, truth), 4), **common}
            if sqlite:
                sqlite_rows.update(sqlite_rerank(index, ids, vectors, queries, truth, factor, f"{kind}: {factory}"))
        lat, found = time_single_queries(lambda q: rerank.search(index, q, K, factor, in_memory)[1], queries)
        rows[f"{kind}: {factory}" + (" + re-rank (in memory)" if factor else "")] = {
            **lat, "recall@10": round(ann.recall_at_k(found, truth), 4), **common,
            "speedup_vs_numpy_p50": round(brute_lat["p50_ms"] / max(lat["p50_ms"], 1e-6), 1),
            "speedup_vs_flat_p50": round(flat_lat["p50_ms"] / max(lat["p50_ms"], 1e-6), 1),
        }
        del index
    rows.update(sqlite_rows)
    result = {"benchmark": "ann", "size": size, "n": n, "dim": dim, "k": K, "queries": len(queries), "machine": machine(),
              "raw_float32_mb": round(raw / 2**20, 1), "results": rows}
    print_table(
        f"single-query search over {n} x {dim} vectors ({size}; load {result['machine']['loadavg_1_5_15']})",
        [(name, r["p50_ms"], r["p99_ms"], r.get("recall@10", ""), r.get("memory_x_raw", ""), r.get("speedup_vs_numpy_p50", ""),
          r.get("params", "")) for name, r in rows.items()],
        ("index", "p50 ms", "p99 ms", "recall@10", "mem x raw", "x numpy p50", "tuned"),
    )
    return result


def sqlite_rerank(index: VectorIndex, ids: np.ndarray, vectors: np.ndarray, queries: np.ndarray, truth: np.ndarray,
                  factor: int, name: str) -> dict[str, dict]:
    """Re-rank reading the vectors from a real SQLite store holding the same items (written the way the
    index writer writes them): the read alone, and search + re-rank per query."""
    with tempfile.TemporaryDirectory(prefix="mmsearch-bench-ann-") as tmp:
        idx = IndexDir(Path(tmp) / "idx")
        idx.create("synthetic", "synthetic", vectors.shape[1])
        started = time.monotonic()
        bulk_insert(idx, ann.array_batches(ids, vectors)())
        print(f"wrote {len(ids)} items to SQLite in {time.monotonic() - started:.1f}s", file=sys.stderr)
        store = idx.open_store()
        try:
            rng = np.random.default_rng(5)
            rows = {}
            for count in (K * factor, WINDOW * factor):
                picks = [rng.choice(ids, count, replace=False).tolist() for _ in range(len(queries))]
                read = iter(picks)
                lat, _ = time_single_queries(lambda q: np.array([list(store.vectors_for(next(read, picks[0])))[:K]]), queries)
                rows[f"Store.vectors_for, {count} random ids (SQLite)"] = lat
            lat, found = time_single_queries(lambda q: rerank.search(index, q, K, factor, store.vectors_for)[1], queries)
            rows[f"{name} + re-rank (SQLite)"] = {**lat, "recall@10": round(ann.recall_at_k(found, truth), 4)}
            return rows
        finally:
            store.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", choices=sorted(SIZES), default="smoke")
    parser.add_argument("--types", default="auto,hnsw,ivfpq,sq8", help="Comma-separated index types to compare.")
    parser.add_argument("--n", type=int, default=None, help="Override the number of vectors of --size.")
    parser.add_argument("--sqlite", action="store_true", help="Also time re-ranking from vectors in a real SQLite store.")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    emit_json(run(args.size, [t.strip() for t in args.types.split(",") if t.strip()], args.n, args.sqlite), args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
