"""Live writes: items upserted and deleted by the caller's key (e.g. a SKU) while a server searches the index.

Request threads validate and decode what they were sent, then hand a :class:`WriteOp` to the index's one
:class:`LiveWriter` and wait for its :class:`WriteResult`. The writer thread takes everything queued at that
moment, plans it against the store (unchanged, metadata only, or to embed), embeds what changed with the
server's encoder, commits the whole batch as ONE store transaction through the same
:class:`~mmsearch.writer.IndexWriter` as ``mmsearch index``, publishes a new generation of vector files
(generation-named files, atomic manifest swap) and has the searcher swap it in. Only then are the callers
answered: an acknowledged write is committed (durable) and already visible to searches.

Batches grow by themselves under load (everything queued while one batch is written forms the next), so
the cost of a publish is shared by many writes. The index directory's write lock is taken per batch, so an
``mmsearch index`` run can still update a served index: the writer waits for it, then reloads what it wrote.

An API item ``key`` is stored as up to two items: ``api:<key>/text`` (the text, if any) and
``api:<key>/image`` (the image, captioned by the text), both carrying the metadata plus ``key`` and
``product`` (the key, unless the metadata names a product), so ``group`` shows one hit per key.
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Literal, Sequence

import numpy as np
from PIL import Image

from mmsearch.vectors.ann import AnnOptions
from mmsearch.encoders.base import Encoder
from mmsearch.errors import IndexBusyError, MmsearchError
from mmsearch.hashing import sha256_text
from mmsearch.storage.indexdir import IndexDir
from mmsearch.storage.store import IMAGE, TEXT, ItemRecord, NewItem, Store
from mmsearch.writer import IndexWriter

log = logging.getLogger(__name__)

KEY_PREFIX = "api:"
UPLOADS = "uploads"  # <index-dir>/uploads/<sha[:2]>/<sha>.<ext>: images sent over HTTP (thumbnails, repair)
_EXTENSIONS = {"JPEG": "jpg", "PNG": "png", "WEBP": "webp", "GIF": "gif", "BMP": "bmp", "TIFF": "tiff", "MPO": "jpg"}
_STOP = object()

Status = Literal["created", "updated", "unchanged", "deleted", "not_found"]


def item_key(key: str, modality: str) -> str:
    """The store key of an API item's text or image row."""
    return f"{KEY_PREFIX}{key}/{modality}"


@dataclass(frozen=True)
class ItemImage:
    """An image sent with an item: its encoded bytes as received and the decoded picture."""

    data: bytes
    image: Image.Image
    sha256: str
    format: str  # PIL format name (JPEG, PNG, ...)


@dataclass(frozen=True)
class WriteOp:
    """One upsert (the item's whole new state) or delete, by the caller's key."""

    key: str
    delete: bool = False
    text: str | None = None
    meta: dict = field(default_factory=dict)
    image: ItemImage | None = None


@dataclass(frozen=True)
class WriteResult:
    key: str
    status: Status
    ids: dict[str, int]  # modality -> item id of what is stored now (empty after a delete)
    generation: int


@dataclass
class _Plan:
    """What one batch of ops does to the store; ``outcome`` holds each op's (status, modality -> id or pending)."""

    embed: list[tuple[NewItem, object]] = field(default_factory=list)  # (item, text str or PIL image)
    updates: list[tuple[int, dict]] = field(default_factory=list)
    deletes: list[ItemRecord] = field(default_factory=list)
    blobs: list[ItemImage] = field(default_factory=list)
    outcome: list[tuple[Status, dict[str, int | None]]] = field(default_factory=list)


def _meta(op: WriteOp) -> dict:
    meta = dict(op.meta)
    meta["key"] = op.key
    meta.setdefault("product", op.key)
    return meta


class LiveWriter:
    """The single writer of one index directory inside a server. Thread-safe ``submit``."""

    def __init__(self, index_dir: IndexDir, encoder: Callable[[], Encoder], on_publish: Callable[[], None] = lambda: None,
                 *, max_batch: int = 256, lock_wait: float = 20.0) -> None:
        self.index_dir = index_dir
        self._encoder = encoder
        self._on_publish = on_publish
        self.max_batch = max_batch
        self.lock_wait = lock_wait
        self._store: Store | None = None
        self._writer: IndexWriter | None = None
        self._generation = -1  # the store generation our in-memory vectors reflect
        self._queue: queue.Queue = queue.Queue()
        self._thread = threading.Thread(target=self._run, name=f"mmsearch-writer-{index_dir.path.name}", daemon=True)
        self._thread.start()

    # --- public ---
    def submit(self, ops: Sequence[WriteOp]) -> list[Future]:
        """Queue ``ops`` (together: the writer never splits one submission over two batches unless it is
        larger than a batch); each future resolves to its WriteResult once committed and published."""
        if not self._thread.is_alive():
            raise MmsearchError("the index writer has stopped")
        jobs = [(op, Future()) for op in ops]
        if jobs:
            self._queue.put(jobs)
        return [future for _, future in jobs]

    def write(self, ops: Sequence[WriteOp], timeout: float | None = None) -> list[WriteResult]:
        return [f.result(timeout) for f in self.submit(ops)]

    @property
    def queue_depth(self) -> int:
        """Submissions waiting for the writer (each one request's worth of items)."""
        return self._queue.qsize()

    def close(self) -> None:
        self._queue.put(_STOP)
        self._thread.join(timeout=60)
        if self._store is not None:
            self._store.close()

    # --- the writer thread ---
    def _run(self) -> None:
        while True:
            first = self._queue.get()
            if first is _STOP:
                self._fail_queued()
                return
            jobs = list(first)
            while len(jobs) < self.max_batch:
                try:
                    more = self._queue.get_nowait()
                except queue.Empty:
                    break
                if more is _STOP:
                    self._queue.put(_STOP)
                    break
                jobs.extend(more)
            for start in range(0, len(jobs), self.max_batch):
                self._write_jobs(jobs[start : start + self.max_batch])

    def _fail_queued(self) -> None:
        while True:
            try:
                submitted = self._queue.get_nowait()
            except queue.Empty:
                return
            if submitted is not _STOP:
                for _, future in submitted:
                    future.set_exception(MmsearchError("the server is shutting down; the write was not applied"))

    def _write_jobs(self, jobs: list[tuple[WriteOp, Future]]) -> None:
        try:
            with self._locked():
                done = []
                for segment in _segments(jobs):
                    done.append((segment, self._apply(segment)))
                self._publish()
        except Exception as exc:  # every caller of the batch gets the error; the writer lives on
            if not isinstance(exc, MmsearchError):
                log.exception("writing a batch of %d items failed", len(jobs))
            self._writer = None  # the in-memory vectors may disagree with the store: reload them next time
            for _, future in jobs:
                if not future.done():
                    future.set_exception(exc)
            return
        for segment, results in done:
            for (_, future), result in zip(segment, results):
                future.set_result(result)

    @contextlib.contextmanager
    def _locked(self):
        """The index directory's write lock, waited for (an index run may hold it for a while)."""
        deadline = time.monotonic() + self.lock_wait
        while True:
            try:
                with self.index_dir.write_lock():
                    yield
                    return
            except IndexBusyError as exc:
                if time.monotonic() > deadline:
                    raise IndexBusyError(f"the index is being written by another run; try again later ({exc})") from exc
            time.sleep(0.1)

    def _open_store(self) -> Store:
        if self._store is None:
            self._store = self.index_dir.open_store()
        return self._store

    def _load_writer(self, store: Store) -> IndexWriter:
        manifest = self.index_dir.read_manifest()
        self._writer = IndexWriter(self.index_dir, manifest, store, AnnOptions(manifest.index_type, manifest.recall_target))
        self._generation = store.generation()
        return self._writer

    def _current_writer(self) -> IndexWriter:
        """The writer's state, reloaded when someone else (an index run) wrote since our last batch."""
        store = self._open_store()
        if self._writer is None or store.generation() != self._generation:
            self._load_writer(store)
        return self._writer

    def _apply(self, jobs: list[tuple[WriteOp, Future]]) -> list[WriteResult]:
        writer = self._current_writer()
        ops = [op for op, _ in jobs]
        existing = writer.store.get_by_keys(item_key(op.key, m) for op in ops for m in (TEXT, IMAGE))
        plan = _plan(ops, existing, self._blob_path)
        for blob in plan.blobs:
            self._save_blob(blob)
        vectors = self._embed([payload for _, payload in plan.embed])
        ids = writer.apply([item for item, _ in plan.embed], vectors, plan.updates, plan.deletes)
        self._generation = writer.store.generation()
        assigned = {item.key: item_id for (item, _), item_id in zip(plan.embed, ids)}
        results = []
        for op, (status, by_modality) in zip(ops, plan.outcome):
            resolved = {m: assigned.get(item_key(op.key, m), i) for m, i in by_modality.items()}
            results.append(WriteResult(op.key, status, resolved, self._generation))
        self._drop_unused_blobs(writer.store, plan.deletes + [existing[k] for k in existing if k.endswith("/" + IMAGE)])
        return results

    def _embed(self, payloads: list) -> np.ndarray:
        encoder = self._encoder()
        vectors = np.zeros((len(payloads), encoder.dim), dtype=np.float32)
        texts = [i for i, p in enumerate(payloads) if isinstance(p, str)]
        images = [i for i, p in enumerate(payloads) if not isinstance(p, str)]
        if texts:
            vectors[texts] = encoder.encode_texts([payloads[i] for i in texts])
        if images:
            vectors[images] = encoder.encode_images([payloads[i] for i in images])
        return vectors

    def _publish(self) -> None:
        if self._writer is None or self._writer.manifest.generation == self._generation:
            return
        self._writer.publish()
        try:
            self._on_publish()
        except Exception:  # the commit stands; the searcher picks the version up at its next check
            log.exception("the searcher could not swap in generation %s", self._generation)

    # --- uploaded image files ---
    def _blob_path(self, image: ItemImage) -> str:
        ext = _EXTENSIONS.get(image.format, "img")
        return str((self.index_dir.path / UPLOADS / image.sha256[:2] / f"{image.sha256}.{ext}").resolve())

    def _save_blob(self, image: ItemImage) -> None:
        """Written and fsynced before the transaction that refers to it commits (a crash in between
        leaves an unreferenced file, never an item without its file)."""
        path = Path(self._blob_path(image))
        if path.is_file() and path.stat().st_size == len(image.data):
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + f".{os.getpid()}.tmp")
        with open(tmp, "wb") as fh:
            fh.write(image.data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)

    def _drop_unused_blobs(self, store: Store, records: Sequence[ItemRecord]) -> None:
        uploads = str((self.index_dir.path / UPLOADS).resolve())
        for record in records:
            if record.modality != IMAGE or not record.path or not record.path.startswith(uploads + os.sep):
                continue
            if store.count_with_path(record.path) == 0:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(record.path)


def publish_if_stale(index_dir: IndexDir) -> bool:
    """Publish fresh vector files when the database is ahead of them (a writer was killed after a commit,
    before its publish): afterwards ``mmsearch verify`` finds nothing stale and readers load files instead
    of rebuilding. Skipped while another writer holds the lock (it publishes itself). -> whether it did."""
    try:
        with index_dir.write_lock():
            store = index_dir.open_store()
            try:
                manifest = index_dir.read_manifest()
                if manifest.generation == store.generation():
                    return False
                IndexWriter(index_dir, manifest, store).publish()
            finally:
                store.close()
    except MmsearchError as exc:
        log.info("not publishing %s now: %s", index_dir.path, exc)
        return False
    log.info("published the vectors of %s that an interrupted writer had committed but not published", index_dir.path)
    return True


def _segments(jobs: list[tuple[WriteOp, Future]]) -> list[list[tuple[WriteOp, Future]]]:
    """Split a batch so that no key appears twice in one segment: ops on one key apply in order."""
    segments: list[list] = [[]]
    keys: set[str] = set()
    for job in jobs:
        if job[0].key in keys:
            segments.append([])
            keys = set()
        segments[-1].append(job)
        keys.add(job[0].key)
    return segments


def _plan(ops: Sequence[WriteOp], existing: dict[str, ItemRecord], blob_path: Callable[[ItemImage], str]) -> _Plan:
    plan = _Plan()
    for op in ops:
        old = {m: existing.get(item_key(op.key, m)) for m in (TEXT, IMAGE)}
        if op.delete:
            gone = [r for r in old.values() if r is not None]
            plan.deletes.extend(gone)
            plan.outcome.append(("deleted" if gone else "not_found", {}))
            continue
        meta = _meta(op)
        wanted: dict[str, tuple[NewItem, object]] = {}
        if op.text:
            wanted[TEXT] = (NewItem(item_key(op.key, TEXT), TEXT, None, sha256_text(op.text), len(op.text.encode("utf-8")), 0.0,
                                    op.text, meta), op.text)
        if op.image is not None:
            wanted[IMAGE] = (NewItem(item_key(op.key, IMAGE), IMAGE, blob_path(op.image), op.image.sha256, len(op.image.data), 0.0,
                                     op.text or None, meta), op.image.image)
            plan.blobs.append(op.image)
        changed, ids = False, {}
        for modality in (TEXT, IMAGE):
            record = old[modality]
            if modality not in wanted:
                if record is not None:
                    plan.deletes.append(record)
                    changed = True
                continue
            item, payload = wanted[modality]
            if record is None or record.sha256 != item.sha256:
                item.id = record.id if record is not None else None
                plan.embed.append((item, payload))
                ids[modality] = item.id
                changed = True
            else:
                ids[modality] = record.id
                if (record.path, record.text, record.meta, record.size) != (item.path, item.text, item.meta, item.size):
                    plan.updates.append((record.id, {"path": item.path, "text": item.text, "meta": item.meta, "size": item.size}))
                    changed = True
        created = all(r is None for r in old.values())
        plan.outcome.append(("created" if created else "updated" if changed else "unchanged", ids))
    return plan
