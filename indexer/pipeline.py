"""reader -> encoder -> writer: index a folder or manifest into an index directory, incrementally.

1. scan the source (hashes reused for files whose size and mtime did not change);
2. plan against what the index already holds: unchanged, changed (re-embed under the same id),
   moved/renamed (same content at a new path: keep id and vector), new, gone (delete);
3. embed texts, then images (decoded in worker processes, which also read the text in each image when the
   index has OCR on), committing a batch at a time;
4. read videos and PDFs (units, see indexer.units) in the worker processes, committing a whole file at a time;
5. publish the vector files and the manifest.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import sys
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Iterator, Protocol, Sequence

import numpy as np
from tqdm import tqdm

from mmsearch.imaging.fastpath import SplitTransform, same_worker_stage, split_transform
from indexer.photos import backfill_photo_fields, carry_photo_fields, merge_photo_fields, needs_backfill
from indexer.loader import DecodedBatch, decode_batches
from indexer.sources import ScanResult, SourceItem, scan
from indexer.units import (
    MediaOptions, UnitAssembler, UnitPart, UnitPlan, decode_units, embed_chunks, group_units, ocr_page_text, plan_units,
    unit_meta,
)
from mmsearch.writer import IndexWriter
from mmsearch.vectors.ann import DEFAULT_FLAT_THRESHOLD, AnnOptions, choose_factory
from mmsearch.encoders.base import Encoder, transform_input_size
from mmsearch.errors import ConfigError, ModelMismatchError
from mmsearch.imaging.ocr import OCR_FIELDS, OcrBudget
from mmsearch.storage.indexdir import IndexDir
from mmsearch.storage.store import ItemRecord, NewItem

log = logging.getLogger(__name__)

DRAFT_SIZE = 512  # JPEGs decode at a reduced scale no smaller than this (models take 224-384 px)


@dataclass
class IndexReport:
    source: str
    index_dir: str
    scanned: int = 0
    added: int = 0
    reembedded: int = 0
    moved: int = 0
    updated: int = 0
    removed: int = 0
    unchanged: int = 0
    failures: list[tuple[str, str]] = field(default_factory=list)
    # items indexed with a remark: OCR stopped at its budget, or could not read the image's text
    notes: list[tuple[str, str]] = field(default_factory=list)
    ocr: bool = False
    seconds: float = 0.0
    counts: dict[str, int] = field(default_factory=dict)

    @property
    def embedded(self) -> int:
        return self.added + self.reembedded

    def summary(self) -> dict:
        return {k: getattr(self, k) for k in ("scanned", "added", "reembedded", "moved", "updated", "removed", "unchanged", "seconds", "counts", "ocr")} | {
            "failed": len(self.failures), "notes": len(self.notes)
        }


@dataclass
class Plan:
    embed: list[tuple[SourceItem, int | None]] = field(default_factory=list)  # (item, id to reuse)
    moves: list[tuple[int, dict]] = field(default_factory=list)
    updates: list[tuple[int, dict]] = field(default_factory=list)
    deletes: list[ItemRecord] = field(default_factory=list)
    unchanged: int = 0
    units: UnitPlan = field(default_factory=UnitPlan)  # videos and PDFs, planned file by file


def _fields(item: SourceItem, record: ItemRecord) -> dict:
    """The new fields of a kept item; the text read in its image (OCR) stays with it."""
    meta = item.meta | _ocr_fields(record.meta)
    return {"key": item.key, "path": item.path, "text": item.text, "meta": meta, "size": item.size, "mtime": item.mtime}


def _ocr_fields(meta: dict) -> dict:
    return {k: v for k, v in meta.items() if k in OCR_FIELDS}


def _source_meta(meta: dict) -> dict:
    """An item's metadata as its source gives it, without what OCR added."""
    return {k: v for k, v in meta.items() if k not in OCR_FIELDS}


def needs_ocr(record: ItemRecord, ocr: bool) -> bool:
    """An image indexed before OCR was on for its index has no text read yet."""
    return ocr and record.modality == "image" and "has_text" not in record.meta


def make_plan(result: ScanResult, existing: dict[str, ItemRecord], ocr: bool = False) -> Plan:
    """What a run must do. With ``ocr``, images whose text was never read are read (and re-embedded with
    their id: decoding is what it takes anyway) even when the file is unchanged. Videos and PDFs are
    planned file by file (indexer.units.plan_units)."""
    groups = group_units(existing.values())
    in_units = {r.key for records in groups.values() for r in records}
    units = [item for item in result.items if item.modality not in ("image", "text")]
    result = ScanResult([item for item in result.items if item.modality in ("image", "text")], result.failures, result.scope)
    existing = {key: r for key, r in existing.items() if key not in in_units}
    plan = Plan(units=plan_units(units, groups, result.scope))
    plan.unchanged += plan.units.unchanged
    seen: set[str] = set()
    fresh: list[SourceItem] = []
    same: list[tuple[SourceItem, ItemRecord]] = []  # content unchanged: metadata may still differ
    for item in result.items:
        record = existing.get(item.key)
        if record is None or record.modality != item.modality:
            fresh.append(item)
            continue
        seen.add(item.key)
        if record.sha256 != item.sha256 or needs_ocr(record, ocr):
            plan.embed.append((item, record.id))
        else:
            same.append((item, record))
    # photo fields of files not decoded again: carried over, or read from the headers of items stored before them
    stored_without = [needs_backfill(record.meta, item) for item, record in same]
    backfill_photo_fields([item for (item, _), old in zip(same, stored_without) if old])
    for (item, record), old in zip(same, stored_without):
        if not old:
            item.meta = carry_photo_fields(record.meta, item)
        if (record.path, record.text, _source_meta(record.meta), record.size, record.mtime) != (item.path, item.text, item.meta, item.size, item.mtime):
            plan.updates.append((record.id, _fields(item, record)))
        else:
            plan.unchanged += 1
    vanished: dict[tuple[str, str], list[ItemRecord]] = defaultdict(list)
    for key, record in existing.items():
        if key.startswith(result.scope) and key not in seen:
            vanished[(record.modality, record.sha256)].append(record)
    for item in fresh:
        pool = vanished.get((item.modality, item.sha256))
        if pool:  # same content under a new name: a move or rename keeps its id and vector
            record = pool.pop()
            item.meta = carry_photo_fields(record.meta, item)
            if needs_ocr(record, ocr):
                plan.embed.append((item, record.id))
            else:
                plan.moves.append((record.id, _fields(item, record)))
        else:
            plan.embed.append((item, None))
    plan.deletes = [r for pool in vanished.values() for r in pool]
    return plan


@dataclass
class EmbeddedBatch:
    """Vectors for some of the items handed to an embed stage, and the items that could not be embedded."""

    positions: list[int]  # positions (in the item list given to the stage) of the rows of ``vectors``
    vectors: np.ndarray  # float32 [len(positions), dim], rows L2-normalised
    failures: list[tuple[int, str]] = field(default_factory=list)  # (position, reason)
    meta: dict[int, dict] = field(default_factory=dict)  # position -> metadata fields to add (the text read by OCR)
    notes: list[tuple[int, str]] = field(default_factory=list)  # (position, remark): indexed, with a caveat
    photo: list[dict] = field(default_factory=list)  # images: photo fields read while decoding, one per position


class EmbedStage(Protocol):
    """Embeds a run's items and yields them batch by batch, in order of position; the caller writes them.

    The default runs in this process (:func:`embed_batches`); indexer.ray_engine spreads the work over a
    Ray cluster. Either way one writer assigns ids, so ids and metadata do not depend on the engine."""

    def __call__(self, encoder: Encoder, items: Sequence[SourceItem], *, batch_size: int, workers: int,
                 max_pixels: int) -> Iterable[EmbeddedBatch]: ...


@dataclass
class EarlyDecode:
    """Image decoding started before the model loaded, with the preprocessing the model was announced
    to use (see ``preprocess_for`` in :func:`index_source`)."""

    stages: SplitTransform
    target_size: int
    batches: Iterator[DecodedBatch]
    ocr: OcrBudget | None = None


def _image_paths(items: Sequence[SourceItem]) -> list[str]:
    return [item.path for item in items if item.modality == "image"]


def start_early_decode(spec: str, items: Sequence[SourceItem], preprocess_for: Callable[[str], Callable | None], *,
                       batch_size: int, workers: int, max_pixels: int, ocr: OcrBudget | None = None) -> EarlyDecode | None:
    """Fork the decode workers and let them read ahead while the model loads (imports and weights take
    seconds), when the model's preprocessing is known without loading it. Forking now also keeps the
    workers out of a process that has loaded native runtimes such as OpenVINO."""
    paths = _image_paths(items)
    if not paths or workers < 1:
        return None
    try:
        transform = preprocess_for(spec)
    except Exception as exc:  # loading the model reports the real problem, with its own message
        log.debug("no early decoding for %s: %s", spec, exc)
        return None
    if transform is None:
        return None
    stages = split_transform(transform)
    target = _draft_size(transform)
    batches = decode_batches(paths, stages.worker, batch_size=batch_size, workers=workers, max_pixels=max_pixels, target_size=target, ocr=ocr)
    return EarlyDecode(stages, target, batches, ocr)


def embed_batches(encoder: Encoder, items: Sequence[SourceItem], *, batch_size: int, workers: int,
                  max_pixels: int, early: EarlyDecode | None = None, ocr: OcrBudget | None = None) -> Iterator[EmbeddedBatch]:
    """Embed the texts among ``items``, then the images (decoded in ``workers`` processes), a batch at a
    time. An image that cannot be decoded comes back as a failure with its reason, never as a vector.
    ``early`` is decoding already under way; it is used only if the loaded model preprocesses the same way.
    With ``ocr`` the workers also read each image's text, which comes back as metadata fields."""
    texts = [p for p, item in enumerate(items) if item.modality == "text"]
    images = [p for p, item in enumerate(items) if item.modality == "image"]
    for start in range(0, len(texts), batch_size):
        chunk = texts[start : start + batch_size]
        yield EmbeddedBatch(chunk, encoder.encode_texts([items[p].text for p in chunk]))
    if not images:
        return
    stages = split_transform(encoder.image_transform)
    uint8_ok = stages.split and getattr(encoder, "takes_uint8_pixels", False)  # the graph normalises them itself
    target = _draft_size(encoder.image_transform)
    if early is not None and same_worker_stage(early.stages, stages) and early.target_size == target and early.ocr == ocr:
        decoded = early.batches
    else:
        if early is not None:
            log.warning("the model preprocesses images differently than announced; decoding again")
        decoded = decode_batches(
            _image_paths(items), stages.worker,
            batch_size=batch_size, workers=workers, max_pixels=max_pixels, target_size=target,
            pin_memory=getattr(encoder, "device", "cpu") == "cuda", ocr=ocr,
        )
    for batch in decoded:
        pixels = batch.pixels if uint8_ok else stages.finish(batch.pixels)
        vectors = encoder.encode_image_tensors(pixels) if batch.positions else np.zeros((0, encoder.dim), np.float32)
        yield EmbeddedBatch([images[p] for p in batch.positions], vectors, [(images[p], reason) for p, reason in batch.failures],
                            *_ocr_outcome(batch, images, ocr), photo=batch.meta)


def _ocr_outcome(batch: DecodedBatch, images: list[int], ocr: OcrBudget | None) -> tuple[dict[int, dict], list[tuple[int, str]]]:
    """The metadata fields OCR adds to each decoded image (``has_text`` false when it could not read it,
    so a later run does not try again), and the remarks for the run report."""
    if ocr is None:
        return {}, []
    meta = {images[p]: result.to_meta() for p, result in batch.ocr.items()}
    notes = [(images[p], f"text reading stopped: {result.truncated}") for p, result in batch.ocr.items() if result.truncated]
    for p, reason in batch.ocr_failures:
        meta[images[p]] = {"has_text": False}
        notes.append((images[p], reason))
    return meta, notes


def _new_item(item: SourceItem, item_id: int | None, extra_meta: dict | None = None) -> NewItem:
    meta = item.meta | extra_meta if extra_meta else item.meta
    return NewItem(item.key, item.modality, item.path, item.sha256, item.size, item.mtime, item.text, meta, item_id)


def embed_units(encoder: Encoder, units: Sequence[SourceItem], *, batch_size: int, workers: int, max_pixels: int,
                media: MediaOptions) -> Iterator:
    """Vectors for the frames of videos and the pages of PDFs, read in ``workers`` processes and
    streamed back a chunk at a time (indexer.units)."""
    stages = split_transform(encoder.image_transform)
    uint8_ok = stages.split and getattr(encoder, "takes_uint8_pixels", False)
    chunks = decode_units([(unit.modality, unit.path) for unit in units], stages.worker, chunk=batch_size, workers=workers,
                          max_pixels=max_pixels, min_side=_draft_size(encoder.image_transform), options=media)
    return embed_chunks(encoder, chunks, None if uint8_ok else stages.finish)


def _write_unit(writer: IndexWriter, report: "IndexReport", unit: SourceItem, old: list[ItemRecord],
                parts: list[UnitPart], vectors: np.ndarray) -> None:
    """All items of one video or PDF in one transaction; a part at the same place as before keeps its id.
    Old items with no part any more go after (a run stopped in between is redone by the next, see
    indexer.units.plan_units)."""
    previous = {r.key: r for r in old}
    items = []
    for part in parts:
        key = unit.key + part.suffix
        reused = previous.pop(key, None)
        items.append(NewItem(key, part.modality, unit.path, unit.sha256, unit.size, unit.mtime, part.text,
                             unit_meta(unit.modality, unit.key, part), reused.id if reused else None))
    writer.add(items, vectors)
    writer.delete(list(previous.values()))
    reused_count = sum(item.id is not None for item in items)
    report.added += len(items) - reused_count
    report.reembedded += reused_count
    report.removed += len(previous)


def _index_units(writer: IndexWriter, report: "IndexReport", encoder, units: list[tuple[SourceItem, list[ItemRecord]]],
                 bar, *, local: bool, batch_size: int, workers: int, max_pixels: int, media: MediaOptions) -> None:
    if not units:
        return
    if not local:
        for unit, _ in units:
            report.failures.append((unit.key, f"{unit.modality} files are read by the local engine only: index them without --engine ray"))
        return
    assembler = UnitAssembler()
    for batch in embed_units(encoder, [unit for unit, _ in units], batch_size=batch_size, workers=workers,
                             max_pixels=max_pixels, media=media):
        complete = assembler.add(batch)
        if complete is None:
            continue
        unit, old = units[batch.position]
        bar.update(1)
        if batch.failure:
            report.failures.append((unit.key, batch.failure))
            writer.delete(old)  # the file changed into something unreadable: its old items are stale
            report.removed += len(old)
            continue
        if batch.notice:
            report.failures.append((unit.key, batch.notice))
        _write_unit(writer, report, unit, old, *complete)


def _progress(total: int, enabled: bool | None) -> tqdm:
    enabled = sys.stderr.isatty() if enabled is None else enabled
    return tqdm(total=total, unit="item", desc="embedding", disable=not enabled or total == 0, dynamic_ncols=True)


def index_source(
    source: Path,
    index_dir: Path,
    encoder_factory: Callable[[str], Encoder],
    *,
    model_spec: str | None,
    default_model: str,
    batch_size: int = 32,
    workers: int = 1,
    max_pixels: int = 90_000_000,
    progress: bool | None = None,
    catalogue: bool = False,
    index_type: str | None = None,
    recall_target: float | None = None,
    flat_threshold: int | None = None,
    database_url: str | None = None,
    embed_stage: EmbedStage | None = None,
    preprocess_for: Callable[[str], Callable | None] | None = None,
    ocr: bool | None = None,
    ocr_budget: OcrBudget | None = None,
    media: MediaOptions | None = None,
) -> IndexReport:
    """Index ``source`` into ``index_dir``. ``encoder_factory(spec)`` loads the model only if needed.

    ``catalogue`` reads the manifest(s) as product catalogues even without sku + title columns.
    ``index_type``/``recall_target`` change the index's vector index choice (kept for later runs);
    ``flat_threshold`` is the count below which ``auto`` keeps exact search (see mmsearch.vectors.ann);
    ``database_url`` keeps the metadata in that database instead of the directory's items.sqlite;
    ``embed_stage`` replaces in-process embedding (e.g. indexer.ray_engine), with ``encoder_factory``
    then returning whatever that stage needs (the manifest only reads ``model_id`` and ``dim``);
    ``preprocess_for(spec)`` announces the image preprocessing the model will use, without loading it
    (None when unknown), so in-process decoding starts while the model loads;
    ``ocr`` reads the text in every image (None: as the index remembers from its last run, off for a new
    one), each image within ``ocr_budget``; turning it on for an index built without it reads the text of
    the images it already holds.
    ``media`` says how videos and PDFs are read (indexer.units.MediaOptions)."""
    ann_options = AnnOptions(
        index_type or "auto", recall_target or 0.95, DEFAULT_FLAT_THRESHOLD if flat_threshold is None else flat_threshold
    ).check()
    explicit = (index_type is not None, recall_target is not None)
    started = time.monotonic()
    idx = IndexDir(index_dir, database_url)
    with idx.write_lock():
        if idx.exists():
            manifest = idx.read_manifest()
            if model_spec and model_spec != manifest.model_spec:
                raise ModelMismatchError(
                    f"{idx.path} was built with model {manifest.model_spec!r}, not {model_spec!r}; "
                    "use a new --index-dir for another model"
                )
            spec = manifest.model_spec
        else:
            manifest, spec = None, model_spec or default_model
        budget = _ocr_budget(ocr, manifest, ocr_budget, embed_stage)
        store = idx.open_store()
        try:
            media = media or MediaOptions()
            if budget is not None and media.ocr is None:  # OCR on: scanned PDF pages (no text layer) are read too
                media = dataclasses.replace(media, ocr=functools.partial(ocr_page_text, budget))
            return _run(source, idx, manifest, store, spec, encoder_factory, batch_size, workers, max_pixels, progress, started,
                        catalogue, ann_options, explicit, embed_stage, preprocess_for, budget, media)
        finally:
            store.close()


def _ocr_budget(ocr: bool | None, manifest, budget: OcrBudget | None, embed_stage) -> OcrBudget | None:
    """Whether this run reads text (given, else as the index remembers) -> the per-image budget, or None."""
    wanted = ocr if ocr is not None else bool(manifest is not None and manifest.ocr)
    if not wanted:
        return None
    if embed_stage is not None:
        raise ConfigError("OCR runs in the local engine's decode workers: use --engine local (or --no-ocr)")
    from mmsearch.imaging.ocr import check_available

    check_available()
    return budget or OcrBudget()


def _apply_ann_options(manifest, options: AnnOptions, explicit: tuple[bool, bool]) -> AnnOptions:
    """Options given on this run are kept in the manifest; otherwise the manifest's own apply."""
    if explicit[0]:
        choose_factory(options.index_type, 0, manifest.dim)  # an unknown type fails before anything is embedded
        manifest.index_type = options.index_type
    if explicit[1]:
        manifest.recall_target = options.recall_target
    return AnnOptions(manifest.index_type, manifest.recall_target, options.flat_threshold).check()


def _run(source, idx, manifest, store, spec, encoder_factory, batch_size, workers, max_pixels, progress, started,
         catalogue, ann_options, explicit, embed_stage=None, preprocess_for=None, ocr: OcrBudget | None = None,
         media: MediaOptions = MediaOptions()) -> IndexReport:
    existing = {r.key: r for r in store.all_items()}
    unit_records = {unit: records[0] for unit, records in group_units(existing.values()).items()}

    def known_hash(key: str, size: int, mtime: float) -> str | None:
        record = existing.get(key) or unit_records.get(key)
        return record.sha256 if record and record.size == size and record.mtime == mtime else None

    result = scan(source, known_hash, skip_dirs=(idx.path,), catalogue=catalogue)
    plan = make_plan(result, existing, ocr is not None)
    report = IndexReport(str(Path(source).resolve()), str(idx.path.resolve()), scanned=len(result.items), unchanged=plan.unchanged,
                         ocr=ocr is not None)
    report.failures.extend(result.failures)

    todo = [(item, item_id) for item, item_id in plan.embed if item.modality == "text"]
    todo += [(item, item_id) for item, item_id in plan.embed if item.modality == "image"]
    embed = embed_stage
    if embed is None:
        early = start_early_decode(spec, [item for item, _ in todo], preprocess_for, batch_size=batch_size, workers=workers,
                                   max_pixels=max_pixels, ocr=ocr) if preprocess_for else None
        embed = functools.partial(embed_batches, early=early, ocr=ocr)
    encoder = encoder_factory(spec) if (plan.embed or plan.units.embed or manifest is None) else None
    if manifest is None:
        manifest = idx.create(spec, encoder.model_id, encoder.dim)
    elif encoder is not None:
        IndexDir.check_model(manifest, encoder.model_id)
    manifest.ocr = ocr is not None  # remembered: later runs read text (or not) the same way
    run_id = store.start_run(report.source)
    writer = IndexWriter(idx, manifest, store, _apply_ann_options(manifest, ann_options, explicit))

    writer.update(plan.moves + plan.units.moves)
    writer.update(plan.updates + plan.units.updates)
    writer.delete(plan.deletes + plan.units.deletes)
    report.moved = len(plan.moves) + len(plan.units.moves)
    report.updated = len(plan.updates) + len(plan.units.updates)
    report.removed = len(plan.deletes) + len(plan.units.deletes)

    broken: list[ItemRecord] = []
    with _progress(len(todo) + len(plan.units.embed), progress) as bar:
        for batch in embed(
            encoder, [item for item, _ in todo], batch_size=batch_size, workers=workers, max_pixels=max_pixels
        ):
            chunk = [todo[p] for p in batch.positions]
            if batch.photo:
                merge_photo_fields([item for item, _ in chunk], batch.photo)
            writer.add([_new_item(item, item_id, batch.meta.get(p)) for p, (item, item_id) in zip(batch.positions, chunk)], batch.vectors)
            _count(report, chunk)
            report.notes.extend((todo[p][0].key, note) for p, note in batch.notes)
            for position, reason in batch.failures:
                item, item_id = todo[position]
                report.failures.append((item.key, reason))
                if item_id is not None:  # the file changed into something unreadable: its old vector is stale
                    broken.append(existing[item.key])
            bar.update(len(batch.positions) + len(batch.failures))
        writer.delete(broken)
        report.removed += len(broken)
        _index_units(writer, report, encoder, plan.units.embed, bar, local=embed_stage is None, batch_size=batch_size,
                     workers=workers, max_pixels=max_pixels, media=media)

    writer.publish()
    store.record_failures(run_id, report.failures)
    report.counts = {m: len(i) for m, i in writer.indexes.items()}
    report.seconds = round(time.monotonic() - started, 3)
    store.finish_run(run_id, report.summary())
    log.info("indexed %s: %s", report.source, report.summary())
    return report


def _draft_size(transform: Callable) -> int:
    """Decode JPEGs at the smallest DCT scale still at least the input size the model's preprocessing
    resizes to (4-8x less work for camera photos); a preprocessing of unknown size gets the
    conservative default."""
    return transform_input_size(transform) or DRAFT_SIZE


def _count(report: IndexReport, chunk: list[tuple[SourceItem, int | None]]) -> None:
    for _, item_id in chunk:
        if item_id is None:
            report.added += 1
        else:
            report.reembedded += 1
