"""Find what to index in a folder or a manifest. Pure Python: no torch, no model.

* image files become image items; a sidecar ``X.txt`` beside ``X.jpg`` is that image's caption;
* other ``.txt``/``.md`` files become text items;
* videos and PDFs are listed once each, as a *unit* (modality ``video`` or ``document``) that the
  pipeline expands into its frames or pages (see indexer.units);
* a JSONL or CSV manifest (an image path column and/or a text column) adds one item per row: a row with
  an image becomes an image item captioned by its text, a row with only text becomes a text item;
  every other column is kept as metadata.

Content hashes are reused from the previous run when a file's size and mtime are unchanged, so an
unchanged folder is scanned without reading its files.
"""

from __future__ import annotations

import csv
import json
import logging
import os
from pathlib import Path
from typing import Iterator

from indexer.items import HashCache, ScanResult, SourceItem, stat_and_hash
from indexer.units import unit_kind
from mmsearch.hashing import sha256_text
from mmsearch.imaging.formats import IMAGE_SUFFIXES
from mmsearch.textfile import read_text_file

log = logging.getLogger(__name__)

IMAGE_EXTS = IMAGE_SUFFIXES  # every format mmsearch.imaging reads (one list, see mmsearch.imaging.formats)
TEXT_EXTS = frozenset({".txt", ".md"})
MANIFEST_EXTS = frozenset({".jsonl", ".csv"})
IMAGE_COLUMNS = ("image", "image_path", "image_file", "filepath", "file", "path", "url")
TEXT_COLUMNS = ("text", "caption", "description", "title")
ID_COLUMNS = ("id", "sku", "key")

def _valid_utf8_name(path: str) -> bool:
    try:
        path.encode("utf-8")
        return True
    except UnicodeEncodeError:  # undecodable bytes surface as lone surrogates
        return False


def scan(source: Path, known: HashCache | None = None, skip_dirs: tuple[Path, ...] = (), catalogue: bool = False) -> ScanResult:
    """Scan a folder (recursively) or a single manifest file. ``catalogue`` reads manifests as product catalogues."""
    from mmsearch.errors import SourceError

    source = Path(source).expanduser().resolve()
    if source.is_file():
        if source.suffix.lower() not in MANIFEST_EXTS:
            raise SourceError(f"{source} is a file but not a JSONL/CSV manifest; give a folder or a manifest")
        result = ScanResult(scope=str(source) + "#")
        _scan_manifest(source, result, known, catalogue)
        return result
    if not source.is_dir():
        raise SourceError(f"{source} does not exist")
    result = ScanResult(scope=str(source) + os.sep)
    skip = {str(p.resolve()) for p in skip_dirs}
    manifests: list[str] = []
    claimed_images: set[str] = set()
    files: list[tuple[str, str]] = []
    for dirpath, dirnames, filenames in os.walk(source, followlinks=False, onerror=lambda e: result.failures.append((e.filename or str(source), f"cannot list folder: {e.strerror}"))):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith(".") and os.path.join(dirpath, d) not in skip)
        names = set(filenames)
        for name in sorted(filenames):
            if name.startswith("."):
                continue
            path = os.path.join(dirpath, name)
            ext = os.path.splitext(name)[1].lower()
            if not _valid_utf8_name(path):
                result.failures.append((path.encode("utf-8", "surrogateescape").decode("utf-8", "replace"), "file name is not valid UTF-8"))
                continue
            if ext in MANIFEST_EXTS:
                manifests.append(path)
            elif ext in IMAGE_EXTS:
                files.append(("image", path))
            elif unit_kind(ext):
                files.append((unit_kind(ext), path))
            elif ext in TEXT_EXTS and not any(os.path.splitext(name)[0] + e in names for e in _case_variants(IMAGE_EXTS)):
                files.append(("text", path))
    for manifest in manifests:
        claimed_images |= _scan_manifest(Path(manifest), result, known, catalogue)
    for modality, path in files:
        if modality == "image" and path in claimed_images:
            continue  # the manifest row describing this image wins over the bare file
        try:
            item = _file_item(modality, path, known)
        except OSError as exc:
            result.failures.append((path, f"cannot read file: {exc.strerror or exc}"))
            continue
        if item is not None:
            result.items.append(item)
        elif modality == "text":
            result.failures.append((path, "empty text file"))
    return result


def _case_variants(exts: frozenset[str]) -> set[str]:
    return set(exts) | {e.upper() for e in exts}


def _file_item(modality: str, path: str, known: HashCache | None) -> SourceItem | None:
    item = SourceItem(key=path, modality=modality, path=path, text=None)
    stat_and_hash(item, known)
    if modality not in ("image", "text"):
        return item  # a video or PDF: its frames or pages are read when it is indexed
    if modality == "image":
        stem = os.path.splitext(path)[0]
        for ext in (".txt", ".TXT"):
            if os.path.isfile(stem + ext):
                item.text = read_text_file(stem + ext) or None
                break
        return item
    item.text = read_text_file(path)
    return item if item.text else None


def _manifest_rows(path: Path) -> Iterator[tuple[int, dict]]:
    if path.suffix.lower() == ".jsonl":
        with open(path, encoding="utf-8", errors="replace") as fh:
            for lineno, line in enumerate(fh, 1):
                line = line.strip()
                if not line:
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise ValueError(f"line {lineno}: not JSON ({exc.msg})") from exc
                if not isinstance(row, dict):
                    raise ValueError(f"line {lineno}: not a JSON object")
                yield lineno, row
    else:
        with open(path, encoding="utf-8", errors="replace", newline="") as fh:
            for lineno, row in enumerate(csv.DictReader(fh), 2):
                yield lineno, {k: v for k, v in row.items() if k is not None}


def _pick(row: dict, names: tuple[str, ...]) -> str | None:
    lowered = {str(k).lower(): k for k in row}
    for name in names:
        if name in lowered:
            value = row[lowered[name]]
            if value not in (None, ""):
                return value if isinstance(value, str) else str(value)
    return None


def _column(row: dict, names: tuple[str, ...]) -> str | None:
    lowered = {str(k).lower(): k for k in row}
    return next((lowered[n] for n in names if n in lowered), None)


def _scan_manifest(path: Path, result: ScanResult, known: HashCache | None, catalogue: bool = False) -> set[str]:
    """Add one item per row (or per product and product image, for a catalogue). -> the image paths claimed."""
    from indexer.catalogue import is_catalogue, scan_catalogue

    claimed: set[str] = set()
    base = path.parent
    try:
        rows = list(_manifest_rows(path))
    except (OSError, ValueError) as exc:
        result.failures.append((str(path), f"cannot read manifest: {exc}"))
        return claimed
    if catalogue or (rows and is_catalogue(list(rows[0][1]))):
        return scan_catalogue(path, rows, result, known)
    if rows and _column(rows[0][1], IMAGE_COLUMNS) is None and _column(rows[0][1], TEXT_COLUMNS) is None:
        log.info("%s has no image or text column; not a manifest, skipped", path)
        return claimed
    seen_keys: set[str] = set()
    for lineno, row in rows:
        image_col, text_col = _column(row, IMAGE_COLUMNS), _column(row, TEXT_COLUMNS)
        image_ref, text = _pick(row, IMAGE_COLUMNS), _pick(row, TEXT_COLUMNS)
        row_id = _pick(row, ID_COLUMNS) or f"line{lineno}"
        key = f"{path}#{row_id}"
        if key in seen_keys:  # a repeated id must not merge two rows into one item
            key = f"{path}#{row_id}@line{lineno}"
        seen_keys.add(key)
        meta = {k: v for k, v in row.items() if k not in (image_col, text_col)}
        meta["manifest"] = str(path)
        if image_ref:
            image_path = str((base / image_ref).resolve()) if not os.path.isabs(image_ref) else image_ref
            claimed.add(image_path)
            item = SourceItem(key=key, modality="image", path=image_path, text=text, meta=meta)
            try:
                stat_and_hash(item, known)
            except OSError as exc:
                result.failures.append((key, f"image {image_ref}: {exc.strerror or exc}"))
                continue
            result.items.append(item)
        elif text:
            result.items.append(SourceItem(key=key, modality="text", path=None, text=text, meta=meta, sha256=sha256_text(text)))
        else:
            result.failures.append((key, "row has neither an image nor a text"))
    return claimed
