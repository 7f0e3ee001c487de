"""Check an index directory for damage and inconsistency, and repair what can be repaired.

The database is the source of truth and the FAISS files are a derived cache, so most repairs are
"make the cache agree with the database again": re-embed items whose stored vector is missing or
malformed (from the item's own source file or text, with the index's own model), drop embeddings
without an item, and rewrite the vector files (with fresh checksums) from the database.

``verify_index`` only reads. ``repair_index`` takes the index's write lock, so it never races an
index run, and re-verifies at the end: what its report lists is what is still wrong.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
from sqlalchemy import delete, select

from mmsearch.storage.checksums import check_file
from mmsearch.encoders.base import Encoder
from mmsearch.errors import MmsearchError
from mmsearch.vectors.index import VectorIndex
from mmsearch.storage.indexdir import IndexDir, Manifest
from mmsearch.storage.store import IMAGE, MODALITIES, TEXT, Embedding, Item, ItemRecord, NewItem, Store, id_chunks

log = logging.getLogger(__name__)

REEMBED_BATCH = 32
DRAFT_SIZE = 512


@dataclass(frozen=True)
class Problem:
    kind: str  # stable short code, e.g. "faiss-orphan"
    detail: str  # one line for a person
    repairable: bool = True


@dataclass
class VerifyReport:
    index_dir: str
    problems: list[Problem] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)
    repaired: list[str] = field(default_factory=list)  # what --repair did, one line per action

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_dict(self) -> dict:
        return {
            "index_dir": self.index_dir,
            "ok": self.ok,
            "counts": self.counts,
            "problems": [{"kind": p.kind, "detail": p.detail, "repairable": p.repairable} for p in self.problems],
            "repaired": self.repaired,
        }


@dataclass
class _DbFacts:
    """What the database holds, read in one pass."""

    items: dict[int, str]  # id -> modality
    vector_sizes: dict[int, int]  # item id -> bytes of its stored vector

    def orphan_embeddings(self) -> list[int]:
        return sorted(set(self.vector_sizes) - set(self.items))

    def missing_embeddings(self) -> list[int]:
        return sorted(set(self.items) - set(self.vector_sizes))

    def malformed_embeddings(self, dim: int) -> list[int]:
        return sorted(i for i, size in self.vector_sizes.items() if i in self.items and size != dim * 4)

    def embedded(self, modality: str) -> set[int]:
        return {i for i, m in self.items.items() if m == modality and i in self.vector_sizes}


def _db_facts(store: Store) -> _DbFacts:
    from sqlalchemy import func

    with store.engine.connect() as conn:
        items = {int(i): m for i, m in conn.execute(select(Item.id, Item.modality))}
        sizes = {int(i): int(n or 0) for i, n in conn.execute(select(Embedding.item_id, func.length(Embedding.vector)))}
    return _DbFacts(items, sizes)


def _sample(ids) -> str:
    ids = sorted(ids)
    shown = ", ".join(str(i) for i in ids[:10])
    return shown + (f", ... ({len(ids)} in all)" if len(ids) > 10 else "")


def verify_index(path: Path, database_url: str | None = None) -> VerifyReport:
    """Read-only check of manifest, database, vector files and their agreement."""
    idx = IndexDir(path, database_url)
    report = VerifyReport(str(idx.path))
    try:
        manifest = idx.read_manifest()
        store = idx.open_store()
    except MmsearchError as exc:
        report.problems.append(Problem("unreadable", str(exc), repairable=False))
        return report
    try:
        _check_database(store, manifest, report)
        if not any(p.kind == "database" for p in report.problems):
            _check_vectors(idx, manifest, store, report)
    finally:
        store.close()
    return report


def _check_database(store: Store, manifest: Manifest, report: VerifyReport) -> None:
    result = store.integrity_check()
    if result != "ok":
        report.problems.append(Problem("database", f"SQLite integrity check failed: {result}", repairable=False))
        return
    facts = _db_facts(store)
    report.counts = {
        "items": len(facts.items),
        "embeddings": len(facts.vector_sizes),
        **{f"{m}_items": sum(1 for v in facts.items.values() if v == m) for m in MODALITIES},
    }
    if ids := facts.missing_embeddings():
        report.problems.append(Problem("missing-embedding", f"{len(ids)} items have no stored vector: ids {_sample(ids)}"))
    if ids := facts.orphan_embeddings():
        report.problems.append(Problem("orphan-embedding", f"{len(ids)} stored vectors belong to no item: ids {_sample(ids)}"))
    if ids := facts.malformed_embeddings(manifest.dim):
        report.problems.append(Problem("malformed-embedding", f"{len(ids)} stored vectors are not {manifest.dim}-d: ids {_sample(ids)}"))


def _check_vectors(idx: IndexDir, manifest: Manifest, store: Store, report: VerifyReport) -> None:
    generation = store.generation()
    if manifest.generation != generation:
        report.problems.append(Problem(
            "stale-vectors",
            f"vector files reflect generation {manifest.generation} but the database is at {generation} "
            "(an index run was interrupted); readers rebuild them in memory until the next run or --repair",
        ))
    facts = _db_facts(store)
    for modality in MODALITIES:
        index = _load_checked(idx, manifest, modality, report)
        if index is None:
            continue
        report.counts[f"{modality}_vectors"] = len(index)
        if manifest.generation != generation:
            continue  # files of an older version are expected to differ from the database
        faiss_ids = index.ids()
        dupes = [i for i, n in Counter(faiss_ids.tolist()).items() if n > 1]
        if dupes:
            report.problems.append(Problem("faiss-duplicate", f"{modality} vectors hold ids more than once: {_sample(dupes)}"))
        in_faiss, embedded = set(faiss_ids.tolist()), facts.embedded(modality)
        rows_of_modality = {i for i, m in facts.items.items() if m == modality}
        if ids := in_faiss - rows_of_modality:
            report.problems.append(Problem("faiss-orphan", f"{len(ids)} {modality} vectors have no {modality} item row: ids {_sample(ids)}"))
        if ids := rows_of_modality - in_faiss:
            report.problems.append(Problem("faiss-missing", f"{len(ids)} {modality} items have no vector in {manifest.vector_files[modality]}: ids {_sample(ids)}"))
        if len(index) != len(embedded):
            report.problems.append(Problem(
                "count-mismatch", f"{manifest.vector_files[modality]} holds {len(index)} vectors, the embeddings table {len(embedded)} {modality} vectors"
            ))
    referenced = set(manifest.vector_files.values())
    stray = sorted(p.name for p in idx.path.glob("*.faiss*") if p.name not in referenced)
    if stray:
        report.problems.append(Problem("stray-file", f"files no manifest refers to: {', '.join(stray)}"))


def _load_checked(idx: IndexDir, manifest: Manifest, modality: str, report: VerifyReport) -> VectorIndex | None:
    name = manifest.vector_files.get(modality)
    if name is None:
        if manifest.generation:
            report.problems.append(Problem("vector-file", f"manifest names no {modality} vector file"))
        return None
    path = idx.path / name
    try:
        check_file(path, manifest.checksums.get(name))
        index = VectorIndex.load(path)
    except FileNotFoundError:
        report.problems.append(Problem("vector-file", f"vector file {path} is missing"))
        return None
    except MmsearchError as exc:
        report.problems.append(Problem("vector-file", str(exc)))
        return None
    if name not in manifest.checksums:
        report.problems.append(Problem("no-checksum", f"manifest records no checksum for {name}"))
    if index.dim != manifest.dim:
        report.problems.append(Problem("vector-file", f"{path} holds {index.dim}-d vectors, the manifest says {manifest.dim}"))
        return None
    return index


# --- repair ---

def repair_index(path: Path, encoder_factory: Callable[[str], Encoder], *, max_pixels: int = 90_000_000,
                 database_url: str | None = None) -> VerifyReport:
    """Fix what ``verify_index`` finds, under the write lock; -> a fresh report of what is still wrong."""
    idx = IndexDir(path, database_url)
    before = verify_index(path, database_url)
    if before.ok or not any(p.repairable for p in before.problems):
        return before
    actions: list[str] = []
    with idx.write_lock():
        manifest = idx.read_manifest()
        store = idx.open_store()
        try:
            facts = _db_facts(store)
            if ids := facts.orphan_embeddings():
                _delete_embeddings(store, ids)
                actions.append(f"dropped {len(ids)} stored vectors that belonged to no item")
            stale = facts.missing_embeddings() + facts.malformed_embeddings(manifest.dim)
            if stale:
                actions.extend(_reembed(store, manifest, sorted(stale), encoder_factory, max_pixels))
            indexes = idx.rebuild_vectors(manifest, store)
            idx.save_vectors(manifest, indexes, store.generation())
            actions.append("rewrote the vector files from the database: " + ", ".join(f"{len(i)} {m}" for m, i in indexes.items()))
        finally:
            store.close()
    after = verify_index(path, database_url)
    after.repaired = actions
    for line in actions:
        log.info("repair: %s", line)
    return after


def _delete_embeddings(store: Store, ids: list[int]) -> None:
    with store.engine.begin() as conn:
        for chunk in id_chunks(ids):
            conn.execute(delete(Embedding).where(Embedding.item_id.in_(chunk)))


def _reembed(store: Store, manifest: Manifest, ids: list[int], encoder_factory: Callable[[str], Encoder], max_pixels: int) -> list[str]:
    encoder = encoder_factory(manifest.model_spec)
    IndexDir.check_model(manifest, encoder.model_id)
    records = store.get_many(ids)
    embedded, dropped = 0, []
    for modality in (TEXT, IMAGE):
        todo = [records[i] for i in ids if i in records and records[i].modality == modality]
        for start in range(0, len(todo), REEMBED_BATCH):
            ok, vectors, gone = _embed_records(encoder, todo[start : start + REEMBED_BATCH], max_pixels)
            if ok:
                store.write_batch([_as_new_item(r) for r in ok], vectors)
                embedded += len(ok)
            dropped.extend(gone)
    if dropped:
        store.delete_items([r.id for r, _ in dropped])
    actions = [f"re-embedded {embedded} items from their source"] if embedded else []
    actions += [f"dropped item {r.id} ({r.key}): {reason}" for r, reason in dropped]
    return actions


def _embed_records(encoder: Encoder, records: list[ItemRecord], max_pixels: int):
    """-> (records embedded, their vectors, [(record, why it could not be)])."""
    from mmsearch.imaging.decode import DecodeError
    from mmsearch.imaging.items import item_picture
    from mmsearch.moments import unit_of
    from mmsearch.textfile import read_text_file

    ok, contents, gone = [], [], []
    for record in records:
        try:
            if record.modality == IMAGE:
                if not record.path:
                    raise DecodeError("image item has no file")
                contents.append(item_picture(record.path, record.meta, max_pixels=max_pixels, size=DRAFT_SIZE))
            else:
                from_file = record.path and Path(record.path).is_file() and unit_of(record.meta, record.key) is None
                text = read_text_file(record.path) if from_file else record.text  # a PDF page's text is stored
                if not text:
                    raise DecodeError("text item has no readable text")
                contents.append(text)
            ok.append(record)
        except (DecodeError, OSError) as exc:
            gone.append((record, f"source is no longer readable ({exc})"))
    if not ok:
        return [], np.zeros((0, encoder.dim), np.float32), gone
    vectors = encoder.encode_images(contents) if ok[0].modality == IMAGE else encoder.encode_texts(contents)
    return ok, vectors, gone


def _as_new_item(r: ItemRecord) -> NewItem:
    return NewItem(r.key, r.modality, r.path, r.sha256, r.size, r.mtime, r.text, r.meta, r.id)
