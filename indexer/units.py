"""Files that become many items: a video (one image item per sampled frame) and a PDF (an image item and
a text item per page). Such a file is one *unit*:

* the scan lists it once (modality ``video`` or ``document``, key = its path, hash = the file's);
* every item made from it carries ``unit`` (the file's key) in its metadata, and a key that is the
  unit's key plus a part suffix (``#t=12.000``, ``#page=3``, ``#page=3/text``);
* planning treats the unit as a whole (see :func:`plan_units`): unchanged file -> nothing to do, changed
  -> re-read and re-embed (items at the same part keep their ids), moved or renamed -> its items are
  re-keyed in place with their vectors, gone -> all its items are deleted;
* its items are written in one transaction once the whole file has been read, so an interrupted run
  never leaves half a video: the next run finds it absent, or complete.

Decoding runs in the indexer's worker processes like images do (a DataLoader over an iterable of
units): a worker reads one unit at a time and streams it back in chunks of at most ``batch_size``
parts, so memory holds a few chunks of pixels whatever the length of the video. The main process keeps
only the vectors of a unit until it is written (3 KB a frame).
"""

from __future__ import annotations

import logging
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Callable, Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from mmsearch.imaging.decode import DecodeError
from mmsearch.imaging.pdf import PDF_EXTS, PageOcr, PdfReader
from mmsearch.imaging.video import VIDEO_EXTS, VideoSampling, sample_frames
from mmsearch.moments import unit_of

log = logging.getLogger(__name__)

VIDEO = "video"
DOCUMENT = "document"
UNIT_EXTS = {VIDEO: VIDEO_EXTS, DOCUMENT: PDF_EXTS}
DEFAULT_PDF_MAX_PAGES = 1000


def unit_kind(ext: str) -> str | None:
    """``video`` or ``document`` for a file extension (lower case, with the dot) that makes a unit."""
    return next((kind for kind, exts in UNIT_EXTS.items() if ext in exts), None)


@dataclass(frozen=True)
class MediaOptions:
    """How videos and PDFs are read (settings: MMSEARCH_VIDEO_INTERVAL, ..._SCENE_THRESHOLD,
    ..._VIDEO_MAX_FRAMES, ..._PDF_MAX_PAGES; OCR of pages without a text layer when given)."""

    sampling: VideoSampling = VideoSampling()
    pdf_max_pages: int = DEFAULT_PDF_MAX_PAGES
    ocr: PageOcr | None = None


def ocr_page_text(budget, image) -> str:
    """The words on a PDF page without a text layer (a scan), read by the index's OCR within its per-image
    budget (``mmsearch index --ocr``). A module-level function, so worker processes can be handed it."""
    from mmsearch.imaging.ocr import read_text

    return read_text(image, budget).text


# --- decoding, in worker processes ---

@dataclass
class UnitPart:
    suffix: str  # appended to the unit's key
    modality: str  # image | text
    meta: dict  # the part's own fields: timestamp, or page and pages
    text: str | None = None


@dataclass
class UnitChunk:
    """Some parts of one unit, in order. ``pixels`` has a row per image part. The last chunk of a unit has
    ``done``; ``failure`` means the unit as a whole could not be read (nothing of it is indexed);
    ``notice`` is a caveat to report with an indexed unit (a page or frame limit was reached)."""

    position: int
    parts: list[UnitPart] = field(default_factory=list)
    pixels: torch.Tensor | None = None
    done: bool = False
    failure: str | None = None
    notice: str | None = None


def _parts(kind: str, path: str, options: MediaOptions, max_pixels: int, min_side: int,
           notices: list[str]) -> Iterator[tuple[UnitPart, object]]:
    """(part, PIL image or None) of one unit file, streamed."""
    if kind == VIDEO:
        count = 0
        for frame in sample_frames(path, options.sampling, max_pixels=max_pixels, min_side=min_side):
            count += 1
            yield UnitPart(f"#t={frame.timestamp:.3f}", "image", {"timestamp": frame.timestamp}), frame.image
        if count >= options.sampling.max_frames:
            notices.append(f"only the first {count} sampled frames are indexed (MMSEARCH_VIDEO_MAX_FRAMES)")
        return
    with PdfReader(path) as reader:
        if len(reader) > options.pdf_max_pages:
            notices.append(f"the PDF has {len(reader):,} pages: only the first {options.pdf_max_pages:,} are indexed "
                           "(MMSEARCH_PDF_MAX_PAGES)")
        read = 0
        for page in reader.pages(options.pdf_max_pages, min_side=min_side, ocr=options.ocr):
            read += 1
            fields = {"page": page.number, "pages": len(reader)}
            if not page.words_only:
                yield UnitPart(f"#page={page.number}", "image", dict(fields)), page.image
            if page.text:
                yield UnitPart(f"#page={page.number}/text", "text", dict(fields, ocr=page.ocr), page.text), None
        if read == 0:
            raise DecodeError("no page of the PDF could be read")


class _UnitFiles(IterableDataset):
    def __init__(self, units: Sequence[tuple[str, str]], transform: Callable, options: MediaOptions, max_pixels: int,
                 min_side: int, chunk: int) -> None:
        self.units, self.transform, self.options = list(units), transform, options
        self.max_pixels, self.min_side, self.chunk = max_pixels, min_side, chunk

    def __iter__(self) -> Iterator[UnitChunk]:
        info = get_worker_info()
        workers, me = (info.num_workers, info.id) if info else (1, 0)
        for position in range(me, len(self.units), workers):
            yield from self._read(position)

    def _read(self, position: int) -> Iterator[UnitChunk]:
        kind, path = self.units[position]
        notices: list[str] = []
        parts: list[UnitPart] = []
        tensors: list[torch.Tensor] = []
        try:
            for part, image in _parts(kind, path, self.options, self.max_pixels, self.min_side, notices):
                parts.append(part)
                if image is not None:
                    tensors.append(self.transform(image))
                if len(parts) >= self.chunk:
                    yield UnitChunk(position, parts, torch.stack(tensors) if tensors else None)
                    parts, tensors = [], []
        except DecodeError as exc:
            yield UnitChunk(position, done=True, failure=str(exc))
            return
        except Exception as exc:  # a decoder library failing in an unforeseen way fails this file, not the run
            log.debug("%s: %s", path, exc, exc_info=True)
            yield UnitChunk(position, done=True, failure=f"cannot read {kind}: {type(exc).__name__}: {exc}")
            return
        yield UnitChunk(position, parts, torch.stack(tensors) if tensors else None, done=True,
                        notice="; ".join(notices) or None)


def decode_units(units: Sequence[tuple[str, str]], transform: Callable, *, chunk: int, workers: int, max_pixels: int,
                 min_side: int, options: MediaOptions) -> Iterator[UnitChunk]:
    """Chunks of the (kind, path) ``units``, read in ``workers`` processes. The chunks of one unit come in
    order; those of units read by different workers interleave."""
    if not units:
        return iter(())
    loader = DataLoader(
        _UnitFiles(units, transform, options, max_pixels, min_side, chunk),
        batch_size=None, num_workers=min(workers, len(units)),
        prefetch_factor=2 if workers else None,
        timeout=600 if workers else 0,
    )
    return iter(loader)


# --- embedding and assembling, in the main process ---

@dataclass
class UnitEmbedded:
    position: int
    parts: list[UnitPart]
    vectors: np.ndarray  # one row per part, in order
    done: bool
    failure: str | None
    notice: str | None


def embed_chunks(encoder, chunks: Iterator[UnitChunk], finish: Callable | None) -> Iterator[UnitEmbedded]:
    """Vectors for every part of every chunk: image parts through the image tower (``finish`` normalises
    worker pixels when the model does not take uint8), text parts through the text tower."""
    for chunk in chunks:
        vectors = np.zeros((len(chunk.parts), encoder.dim), dtype=np.float32)
        images = [n for n, p in enumerate(chunk.parts) if p.modality == "image"]
        texts = [n for n, p in enumerate(chunk.parts) if p.modality == "text"]
        if images:
            pixels = chunk.pixels if finish is None else finish(chunk.pixels)
            vectors[images] = encoder.encode_image_tensors(pixels)
        if texts:
            vectors[texts] = encoder.encode_texts([chunk.parts[n].text for n in texts])
        yield UnitEmbedded(chunk.position, chunk.parts, vectors, chunk.done, chunk.failure, chunk.notice)


class UnitAssembler:
    """Collects the embedded parts of units until each is complete. -> (position, parts, vectors) once."""

    def __init__(self) -> None:
        self.parts: dict[int, list[UnitPart]] = defaultdict(list)
        self.vectors: dict[int, list[np.ndarray]] = defaultdict(list)

    def add(self, batch: UnitEmbedded) -> tuple[list[UnitPart], np.ndarray] | None:
        self.parts[batch.position].extend(batch.parts)
        self.vectors[batch.position].append(batch.vectors)
        if not batch.done:
            return None
        parts = self.parts.pop(batch.position)
        vectors = np.concatenate(self.vectors.pop(batch.position)) if parts else np.zeros((0, batch.vectors.shape[1]), np.float32)
        return parts, vectors


def unit_meta(kind: str, key: str, part: UnitPart) -> dict:
    """An item's metadata: which file (``video`` or ``document``), where in it, and its ``unit``."""
    return {kind: key, **part.meta, "unit": key}


# --- planning ---

@dataclass
class UnitPlan:
    embed: list[tuple[object, list]] = field(default_factory=list)  # (SourceItem, its old ItemRecords)
    moves: list[tuple[int, dict]] = field(default_factory=list)  # (item id, new fields)
    updates: list[tuple[int, dict]] = field(default_factory=list)  # same content, new size/mtime
    deletes: list = field(default_factory=list)  # ItemRecords of units gone from disk
    unchanged: int = 0  # items


def group_units(records) -> dict[str, list]:
    """unit key -> its item records, for every record that belongs to a unit."""
    groups: dict[str, list] = defaultdict(list)
    for record in records:
        unit = unit_of(record.meta, record.key)
        if unit is not None:
            groups[unit].append(record)
    return groups


def _moved_fields(record, old_unit: str, item) -> dict:
    kind = item.modality
    meta = {**record.meta, "unit": item.key, kind: item.key}
    return {"key": item.key + record.key[len(old_unit):], "path": item.path, "meta": meta, "size": item.size, "mtime": item.mtime}


def plan_units(units: Sequence, groups: dict[str, list], scope: str) -> UnitPlan:
    """What to do with each scanned unit against the items already indexed from units (``groups``)."""
    plan = UnitPlan()
    seen: set[str] = set()
    fresh = []
    for item in units:
        records = groups.get(item.key)
        if not records:
            fresh.append(item)
            continue
        seen.add(item.key)
        if any(r.sha256 != item.sha256 or r.modality not in ("image", "text") for r in records):
            plan.embed.append((item, records))  # changed, or a run stopped between writing it and tidying it
        elif any((r.size, r.mtime, r.path) != (item.size, item.mtime, item.path) for r in records):
            plan.updates.extend((r.id, {"size": item.size, "mtime": item.mtime, "path": item.path}) for r in records)
        else:
            plan.unchanged += len(records)
    vanished: dict[str, list[str]] = defaultdict(list)  # sha256 -> unit keys gone from their place
    for unit, records in groups.items():
        if unit.startswith(scope) and unit not in seen:
            vanished[records[0].sha256].append(unit)
    for item in fresh:
        pool = vanished.get(item.sha256)
        if pool:  # the same file under a new name: its items keep their ids and vectors
            old = pool.pop()
            plan.moves.extend((r.id, _moved_fields(r, old, item)) for r in groups[old])
        else:
            plan.embed.append((item, []))
    plan.deletes = [r for units_ in vanished.values() for unit in units_ for r in groups[unit]]
    return plan
