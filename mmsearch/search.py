"""The one Searcher used by the CLI and the HTTP API.

Loads the model an index was built with (or checks that a given encoder is that model), keeps a
snapshot of the vector indexes, and answers queries in either modality against image items, text
items, or both. Results are joined to metadata by id, never by position. A running Searcher notices a
newer index generation written by an index run and swaps in a fresh snapshot between queries.
"""

from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import Future
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Literal, Sequence

import numpy as np
from PIL import Image

from mmsearch.vectors import rerank
from mmsearch.encoders.base import Encoder
from mmsearch.errors import InvalidQueryError, ItemNotFoundError, MmsearchError
from mmsearch.vectors.device import GpuPlacer, place_on_device
from mmsearch.vectors.device import resolve as resolve_faiss_device
from mmsearch.vectors.index import VectorIndex
from mmsearch.storage.indexdir import IndexDir, Manifest
from mmsearch.storage.keyword import snippet
from mmsearch.storage.store import IMAGE, MODALITIES, TEXT, ItemRecord, Store

log = logging.getLogger(__name__)

Target = Literal["image", "text", "all"]
TARGETS: tuple[str, ...] = ("image", "text", "all")


@dataclass(frozen=True)
class Hit:
    id: int
    score: float
    modality: str
    path: str | None
    text: str | None
    metadata: dict
    snippet: str | None = None  # for a text query: the line of the text read in the image (OCR) matching its words

    def to_dict(self) -> dict:
        return asdict(self)


def with_snippets(hits: list[Hit], query: str) -> list[Hit]:
    """``hits`` with the line of their image's text (OCR) that holds the query's words, where there is one."""
    out = []
    for hit in hits:
        line = snippet(hit.metadata.get("ocr_text"), query)
        out.append(replace(hit, snippet=line) if line else hit)
    return out


@dataclass
class _Snapshot:
    manifest: Manifest
    indexes: dict[str, VectorIndex]
    generation: int
    faiss_device: str = "cpu"  # where unfiltered searches of these indexes run


def _check_text(text: str) -> None:
    if not isinstance(text, str) or not text.strip():
        raise InvalidQueryError("text query is empty")


def _check_target_and_k(target: str, k: int) -> None:
    if target not in TARGETS:
        raise InvalidQueryError(f"target must be one of {', '.join(TARGETS)}, not {target!r}")
    if not isinstance(k, int) or k < 1:
        raise InvalidQueryError("k must be a positive integer")


class Searcher:
    """Answer text and image queries against one index directory."""

    def __init__(
        self,
        index_dir: Path,
        encoder: Encoder | None = None,
        *,
        device: str = "auto",
        batch_size: int = 64,
        threads: int = 0,
        reload_interval: float = 2.0,
        mmap: bool = False,
        faiss_device: str = "auto",
        database_url: str | None = None,
    ) -> None:
        self.index_dir = IndexDir(index_dir, database_url)
        self._device, self._batch_size, self._threads = device, batch_size, threads
        self._mmap = mmap
        resolve_faiss_device(faiss_device)  # a GPU asked for but missing is an error before anything opens
        self._faiss_device = faiss_device
        self._gpu_placer = GpuPlacer()
        self._text_batcher = None  # see batch_text_queries
        self._reload_interval = reload_interval
        self._lock = threading.Lock()
        self._last_check = time.monotonic()
        self.index_dir.read_manifest()  # a missing index is one clear error, not an empty new database
        self.store: Store = self.index_dir.open_store()
        self._snapshot = self._load_snapshot()
        self._encoder = encoder
        if encoder is not None:
            IndexDir.check_model(self._snapshot.manifest, encoder.model_id)

    # --- lifecycle ---
    def _load_snapshot(self) -> _Snapshot:
        manifest = self.index_dir.read_manifest()
        for attempt in range(3):
            try:
                return self._snapshot_of(manifest)
            except FileNotFoundError:
                # An index run swapped in newer files between our manifest read and the load: re-read.
                manifest = self.index_dir.read_manifest()
        return self._snapshot_of(manifest)

    def _snapshot_of(self, manifest: Manifest) -> _Snapshot:
        indexes, generation = self.index_dir.load_vectors(manifest, self.store, mmap=self._mmap)
        device = place_on_device(indexes, self._faiss_device, self._gpu_placer)
        return _Snapshot(manifest, indexes, generation, device)

    @property
    def encoder(self) -> Encoder:
        """The model the index was built with, loaded on first use (so `info` never pays for it)."""
        if self._encoder is None:
            with self._lock:
                if self._encoder is None:
                    from mmsearch.encoders import load_encoder

                    manifest = self._snapshot.manifest
                    encoder = load_encoder(manifest.model_spec, self._device, self._batch_size, self._threads)
                    IndexDir.check_model(manifest, encoder.model_id)
                    self._encoder = encoder
        return self._encoder

    @property
    def model_loaded(self) -> bool:
        """Whether the model is in memory (readiness: a query will not wait for a load)."""
        return self._encoder is not None

    def wrap_encoder(self, wrap) -> None:
        """Put ``wrap(encoder)`` in front of the model (e.g. the server's micro-batching front),
        loading the model first if needed."""
        self._encoder = wrap(self.encoder)

    def maybe_reload(self, force: bool = False) -> bool:
        """Swap in a newer index version if an index run wrote one. Cheap: one small SQL read."""
        now = time.monotonic()
        if not force and now - self._last_check < self._reload_interval:
            return False
        self._last_check = now
        if self.store.generation() == self._snapshot.generation:
            return False
        with self._lock:
            try:
                snapshot = self._load_snapshot()
                IndexDir.check_model(snapshot.manifest, self._snapshot.manifest.model_id)
            except (MmsearchError, OSError) as exc:
                # Keep answering from the version already in memory; the next check tries again.
                log.warning("not reloading the index, keeping generation %s: %s", self._snapshot.generation, exc)
                return False
            self._snapshot = snapshot  # one reference assignment: queries see the old or the new, never a mix
        log.info("reloaded index at generation %s", snapshot.generation)
        return True

    def close(self) -> None:
        if self._text_batcher is not None:
            self._text_batcher.close()
        self.store.close()

    def vector_indexes(self) -> dict[str, VectorIndex]:
        """The current snapshot's vector indexes (newer ones swapped in first), for searches that
        restrict or combine vectors beyond ``search_vectors`` (see mmsearch.query)."""
        self.maybe_reload()
        return self._snapshot.indexes

    # --- queries ---
    def search_text(self, text: str, target: Target = "image", k: int = 10) -> list[Hit]:
        future = self.text_search_future(text, target, k)  # a bad query fails its own caller, never a batch
        return self.search_texts([text], target, k)[0] if future is None else future.result()[0]

    def text_search_future(self, text: str, target: Target = "image", k: int = 10) -> Future | None:
        """``search_text`` handed to the batching worker without waiting: -> its future (hits), or None
        when text queries are not batched (then call ``search_text``). For an async server, which can then
        await the answer on its event loop instead of parking a request thread on it."""
        if self._text_batcher is None:
            return None
        _check_text(text)
        _check_target_and_k(target, k)
        return self._text_batcher.submit_nowait(target, [(text, k)])

    def batch_text_queries(self, max_batch: int = 64) -> None:
        """Merge concurrent ``search_text`` calls (a server's request threads) into one ``search_texts``
        call per target: one text-tower call and one vector search for the lot (an exact search reads
        every stored vector once per call, however many queries it carries)."""
        from mmsearch.batching import MicroBatcher

        self._text_batcher = MicroBatcher(self._search_text_batch, max_batch, name="mmsearch-search")

    def _search_text_batch(self, target: Target, jobs: list[tuple[str, int]]) -> list[list[Hit]]:
        k_max = max(k for _, k in jobs)
        results = self.search_texts([text for text, _ in jobs], target, k_max)
        return [hits[:k] for hits, (_, k) in zip(results, jobs)]

    def search_texts(self, texts: Sequence[str], target: Target = "image", k: int = 10) -> list[list[Hit]]:
        for t in texts:
            _check_text(t)
        results = self.search_vectors(self.encoder.encode_texts(list(texts)), target, k)
        return [with_snippets(hits, text) for hits, text in zip(results, texts)]

    def search_image(self, image: Image.Image, target: Target = "image", k: int = 10) -> list[Hit]:
        return self.search_vectors(self.encoder.encode_images([image]), target, k)[0]

    def search_item(self, item_id: int, target: Target = "image", k: int = 10) -> list[Hit]:
        """'More like this': the item's own stored vector is the query."""
        return self.search_vectors(self.stored_vectors([item_id])[item_id][None, :], target, k)[0]

    def stored_vectors(self, item_ids: Sequence[int]) -> dict[int, np.ndarray]:
        """The stored vectors of these items (queries by example); an unknown id is ItemNotFoundError."""
        vectors = self.store.vectors_for(list(item_ids))
        missing = [i for i in item_ids if i not in vectors]
        if missing:
            raise ItemNotFoundError(f"no item with id {missing[0]}")
        return vectors

    def search_vectors(self, queries: np.ndarray, target: Target = "image", k: int = 10) -> list[list[Hit]]:
        _check_target_and_k(target, k)
        self.maybe_reload()
        snapshot = self._snapshot
        modalities = MODALITIES if target == "all" else (target,)
        per_query: list[list[tuple[float, int]]] = [[] for _ in range(len(queries))]
        for modality in modalities:
            scores, ids = self._search_index(snapshot, modality, queries, k)
            for q in range(len(queries)):
                per_query[q].extend((float(s), int(i)) for s, i in zip(scores[q], ids[q]) if i >= 0)
        ranked = [sorted(pairs, key=lambda p: -p[0])[:k] for pairs in per_query]
        records = self.store.get_many({i for pairs in ranked for _, i in pairs})
        return [[self._hit(score, records[i]) for score, i in pairs if i in records] for pairs in ranked]

    def search_modality(self, modality: str, queries: np.ndarray, k: int,
                        subset: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """-> (scores, ids; -1 pads) of one modality's vector index, among the ``subset`` ids when given
        (see mmsearch.query). Like every search here, an index of product codes (ivfpq) re-ranks its
        candidates on the stored vectors, so scores are exact inner products."""
        self.maybe_reload()
        return self._search_index(self._snapshot, modality, queries, k, subset)

    def _search_index(self, snapshot: _Snapshot, modality: str, queries: np.ndarray, k: int,
                      subset: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        factor = rerank.factor_of(snapshot.manifest.ann.get(modality, {}).get("params"))
        return rerank.search(snapshot.indexes[modality], queries, k, factor, self.store.vectors_for, subset)

    @staticmethod
    def _hit(score: float, record: ItemRecord) -> Hit:
        return Hit(record.id, score, record.modality, record.path, record.text, record.meta)

    # --- items ---
    def item(self, item_id: int) -> ItemRecord:
        record = self.store.get(item_id)
        if record is None:
            raise ItemNotFoundError(f"no item with id {item_id}")
        return record

    def info(self) -> dict:
        snapshot = self._snapshot
        return {
            "index_dir": str(self.index_dir.path.resolve()),
            "model": snapshot.manifest.model_spec,
            "model_id": snapshot.manifest.model_id,
            "dim": snapshot.manifest.dim,
            "generation": snapshot.generation,
            "counts": {m: len(snapshot.indexes[m]) for m in MODALITIES},
            "index_factory": snapshot.manifest.index_factory,
            "device": self._encoder.device if self._encoder is not None else None,
            "faiss_device": snapshot.faiss_device,
        }


__all__ = ["Searcher", "Hit", "TARGETS", "IMAGE", "TEXT"]
