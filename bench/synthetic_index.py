"""Write a large index directory straight through the store and the writer, from synthetic vectors.

Encoding a million images to benchmark search would take a day on a laptop; the search side only
needs items and vectors, so they are inserted in bulk (SQLAlchemy Core executemany on the store's own
tables, one transaction per batch, generation bumped as the store does) and the vector index is then
built, switched and tuned by the same code an index run uses (``IndexWriter.publish``).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Iterable

import numpy as np

from mmsearch.writer import IndexWriter
from mmsearch.vectors.ann import AnnOptions
from mmsearch.storage.indexdir import IndexDir
from mmsearch.storage.store import Embedding, Item

WORDS = ("red", "old", "tall", "quiet", "bright", "small", "wooden", "stone", "river", "harbour", "garden", "street",
         "mountain", "kitchen", "market", "bridge", "forest", "window", "train", "boat")


def _caption(i: int) -> str:
    return f"a {WORDS[i % 20]} {WORDS[(i // 20) % 20]} {WORDS[(i // 400) % 20]} #{i}"


def bulk_insert(index_dir: IndexDir, batches: Iterable[tuple[np.ndarray, np.ndarray]], modality: str = "image") -> int:
    store = index_dir.open_store()
    total = 0
    try:
        for ids, vecs in batches:
            now = time.time()
            items = [
                {"id": int(i), "key": f"synthetic/{int(i):09d}.jpg", "modality": modality, "path": f"/synthetic/{int(i):09d}.jpg",
                 "sha256": f"{int(i):064x}", "size": 0, "mtime": 0.0, "text": _caption(int(i)), "meta": {}, "indexed_at": now}
                for i in ids
            ]
            embeddings = [{"item_id": int(i), "vector": np.asarray(v, dtype=np.float32).tobytes()} for i, v in zip(ids, vecs)]
            with store.engine.begin() as conn:
                conn.execute(Item.__table__.insert(), items)
                conn.execute(Embedding.__table__.insert(), embeddings)
            total += len(ids)
        generation = int(store.state_get("generation") or 0) + 1
        store.state_set("generation", str(generation))
    finally:
        store.close()
    return total


def build_synthetic_index(path: Path, dim: int, batches: Iterable[tuple[np.ndarray, np.ndarray]], *, model_spec: str,
                          model_id: str, options: AnnOptions | None = None) -> dict:
    """-> the published manifest as a dict. ``model_spec``/``model_id`` name the model queries will use."""
    idx = IndexDir(path)
    manifest = idx.create(model_spec, model_id, dim)
    started = time.monotonic()
    bulk_insert(idx, batches)
    inserted = time.monotonic() - started
    store = idx.open_store()
    try:
        options = options or AnnOptions()
        manifest.index_type, manifest.recall_target = options.index_type, options.recall_target
        writer = IndexWriter(idx, manifest, store, options)
        manifest = writer.publish()
    finally:
        store.close()
    return {"manifest": manifest.model_dump(), "insert_seconds": round(inserted, 1), "total_seconds": round(time.monotonic() - started, 1)}

