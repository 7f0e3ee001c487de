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
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Literal, Sequence

import numpy as np

from mmsearch.calibration import COSINE, STATS_SAMPLE, Calibration, ModalityStats, load_calibration
from mmsearch.vectors import rerank
from mmsearch.encoders.base import Encoder
from mmsearch.errors import InvalidQueryError, ItemNotFoundError, MmsearchError
from mmsearch.moments import OVERFETCH, collapse, moment, unit_of
from mmsearch.vectors.device import GpuPlacer, place_on_device
from mmsearch.vectors.device import resolve as resolve_faiss_device
from mmsearch.vectors.index import VectorIndex
from mmsearch.storage.indexdir import IndexDir, Manifest
from mmsearch.storage.keyword import snippet
from mmsearch.storage.store import IMAGE, MODALITIES, TEXT, ItemRecord, Store

if TYPE_CHECKING:  # annotations only: a text query need not load Pillow
    from PIL import Image

log = logging.getLogger(__name__)

Target = Literal["image", "text", "all"]
TARGETS: tuple[str, ...] = ("image", "text", "all")


@dataclass(frozen=True)
class Hit:
    id: int
    score: float  # on ``scale``: the cosine, or (a list merging modalities) the standardised cosine plus offset
    modality: str
    path: str | None
    text: str | None
    metadata: dict
    snippet: str | None = None  # for a text query: the line of the text read in the image (OCR) matching its words
    cosine: float | None = None  # the raw cosine similarity, whatever the scale
    scale: str = COSINE  # "cosine" or "calibrated" (mmsearch.calibration)
    # a video's or PDF's hit stands for the whole file: its best frames or pages (mmsearch.moments)
    moments: list[dict] = field(default_factory=list)

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
    calibration: Calibration = field(default_factory=Calibration)  # of the index's model (mmsearch.calibration)
    stats: dict[str, ModalityStats | None] = field(default_factory=dict)  # per modality, computed on first merged search


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
        return _Snapshot(manifest, indexes, generation, device, self._calibration_of(manifest))

    def _calibration_of(self, manifest: Manifest) -> Calibration:
        """The score calibration of the index's model, read once per model (a reload keeps the model)."""
        current = getattr(self, "_snapshot", None)
        if current is not None and current.manifest.model_id == manifest.model_id:
            return current.calibration
        return load_calibration(manifest.model_spec, manifest.model_id)

    @property
    def calibration(self) -> Calibration:
        """How scores of different modalities are put on one scale where lists merge (``target="all"``)."""
        return self._snapshot.calibration

    def use_calibration(self, calibration: Calibration) -> None:
        """Replace the model's installed calibration (to compare calibrations, or raw cosines, on one index)."""
        self._snapshot.calibration = calibration

    def merged_scores(self, mix: dict[str, float], modality: str, queries: np.ndarray, cosines: np.ndarray) -> np.ndarray:
        """Cosines [n, k] of ``modality`` items -> scores on the scale lists of both modalities merge on, for
        queries made of ``mix`` (modality -> weight). See mmsearch.calibration."""
        snapshot = self._snapshot
        return snapshot.calibration.scores(mix, modality, queries, cosines, self._stats(snapshot, modality))

    def _stats(self, snapshot: _Snapshot, modality: str) -> ModalityStats | None:
        """Mean and covariance of a modality's stored vectors (an even sample of at most STATS_SAMPLE),
        once per index version; None when the modality is empty."""
        if modality not in snapshot.stats:
            ids = np.sort(snapshot.indexes[modality].ids())
            if len(ids) > STATS_SAMPLE:
                ids = ids[np.linspace(0, len(ids) - 1, STATS_SAMPLE).astype(np.int64)]
            vectors = self.store.vectors_for(ids.tolist())
            rows = [vectors[int(i)] for i in ids if int(i) in vectors]
            snapshot.stats[modality] = ModalityStats.of(np.stack(rows)) if rows else None
        return snapshot.stats[modality]

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
            self._query_batcher.close()
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
        """``search_text`` handed to the batching workers without waiting: -> its future (hits), or None
        when text queries are not batched (then call ``search_text``). For an async server, which can then
        await the answer on its event loop instead of parking a request thread on it."""
        if self._text_batcher is None:
            return None
        _check_text(text)
        _check_target_and_k(target, k)
        from mmsearch.batching import chained  # imported by batch_text_queries already: a dict lookup

        embedded = self._query_batcher.submit_nowait(TEXT, [text])
        return chained(embedded, lambda vectors: self._text_batcher.submit_nowait(target, [(text, k, vectors[0])]))

    def batch_text_queries(self, max_batch: int = 64) -> None:
        """Merge concurrent ``search_text`` calls (a server's requests) into batches, in two stages with a
        worker each: the text tower embeds the queries that arrived together in one call, then one vector
        search per target serves them all (an exact search reads every stored vector once per call,
        however many queries it carries). The stages overlap: while one batch is searched, the next is
        embedded, so the two cores are both at work (one worker doing both left ~0.6 of them idle)."""
        from mmsearch.batching import MicroBatcher

        self._query_batcher = MicroBatcher(self._embed_query_batch, max_batch, name="mmsearch-query-embed")
        self._text_batcher = MicroBatcher(self._search_embedded_batch, max_batch, name="mmsearch-search")

    def _embed_query_batch(self, _kind: str, texts: list[str]) -> np.ndarray:
        return self.encoder.encode_texts(texts)

    def _search_embedded_batch(self, target: Target, jobs: list[tuple[str, int, np.ndarray]]) -> list[list[Hit]]:
        k_max = max(k for _, k, _ in jobs)
        results = self.search_vectors(np.stack([vector for _, _, vector in jobs]), target, k_max, query_modality=TEXT)
        return [with_snippets(hits[:k], text) for hits, (text, k, _) in zip(results, jobs)]

    def search_texts(self, texts: Sequence[str], target: Target = "image", k: int = 10) -> list[list[Hit]]:
        for t in texts:
            _check_text(t)
        results = self.search_vectors(self.encoder.encode_texts(list(texts)), target, k, query_modality=TEXT)
        return [with_snippets(hits, text) for hits, text in zip(results, texts)]

    def search_image(self, image: Image.Image, target: Target = "image", k: int = 10) -> list[Hit]:
        return self.search_vectors(self.encoder.encode_images([image]), target, k, query_modality=IMAGE)[0]

    def search_item(self, item_id: int, target: Target = "image", k: int = 10) -> list[Hit]:
        """'More like this': the item's own stored vector is the query."""
        modality = self.item(item_id).modality
        return self.search_vectors(self.stored_vectors([item_id])[item_id][None, :], target, k, query_modality=modality)[0]

    def stored_vectors(self, item_ids: Sequence[int]) -> dict[int, np.ndarray]:
        """The stored vectors of these items (queries by example); an unknown id is ItemNotFoundError."""
        vectors = self.store.vectors_for(list(item_ids))
        missing = [i for i in item_ids if i not in vectors]
        if missing:
            raise ItemNotFoundError(f"no item with id {missing[0]}")
        return vectors

    def search_vectors(self, queries: np.ndarray, target: Target = "image", k: int = 10,
                       query_modality: str | None = None) -> list[list[Hit]]:
        """The k best items per query vector. With ``target="all"`` the two modalities' lists are merged
        on the calibrated scale of the queries' modality (``query_modality``; None = unknown: raw cosines).
        The frames of one video (pages of one PDF) come back as one hit, with its best moments."""
        _check_target_and_k(target, k)
        self.maybe_reload()
        snapshot = self._snapshot
        modalities = MODALITIES if target == "all" else (target,)
        mix = {query_modality: 1.0} if query_modality else {}
        calibrate = target == "all" and bool(mix)
        scale = snapshot.calibration.scale if calibrate else COSINE
        depth = k * OVERFETCH  # frames of one video collapse into one hit: look deeper to still return k
        per_query: list[list[tuple[float, float, int]]] = [[] for _ in range(len(queries))]
        for modality in modalities:
            cosines, ids = self._search_index(snapshot, modality, queries, depth)
            scores = snapshot.calibration.scores(mix, modality, queries, cosines, self._stats(snapshot, modality)) if calibrate else cosines
            for q in range(len(queries)):
                per_query[q].extend((float(s), float(c), int(i)) for s, c, i in zip(scores[q], cosines[q], ids[q]) if i >= 0)
        ranked = [sorted(triples, key=lambda p: (-p[0], p[2]))[:depth] for triples in per_query]
        records = self._records_needed(ranked, k)
        return [self._grouped([(score, cosine, records[i]) for score, cosine, i in triples if i in records], k, scale) for triples in ranked]

    def _records_needed(self, ranked: list[list[tuple[float, float, int]]], k: int) -> dict[int, ItemRecord]:
        """The rows an answer needs. The first k candidates of each list are the answer unless one of them
        is a video frame or PDF page (its file's other moments, and the files after it, lie deeper) or has
        just been deleted (the next one moves up): only then are the deeper candidates read too. Most
        searches so read k rows per query instead of k * OVERFETCH, with their JSON metadata."""
        head = {i for triples in ranked for _, _, i in triples[:k]}
        records = self.store.get_many(head)
        if len(records) < len(head) or any(unit_of(r.meta, r.key) for r in records.values()):
            records.update(self.store.get_many({i for triples in ranked for _, _, i in triples} - head))
        return records

    @staticmethod
    def _grouped(ranked: list[tuple[float, float, ItemRecord]], k: int, scale: str) -> list[Hit]:
        groups = collapse(ranked, lambda entry: unit_of(entry[2].meta, entry[2].key))[:k]
        return [
            Hit(rec.id, score, rec.modality, rec.path, rec.text, rec.meta, cosine=cosine, scale=scale,
                moments=[moment(r.id, s, r.modality, r.meta) for s, _, r in group])
            for (score, cosine, rec), group in groups
        ]

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
            "score_scale": snapshot.calibration.scale,
        }


__all__ = ["Searcher", "Hit", "TARGETS", "IMAGE", "TEXT"]
