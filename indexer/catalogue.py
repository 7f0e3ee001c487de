"""Product catalogues: a CSV or JSONL file with one product per row (sku, title, description, category,
brand, price, currency, image paths, any extra fields).

Each product becomes one text item (title + description) and one image item per image, all carrying
the product's fields as typed metadata plus ``product`` (the SKU) linking them together. Keys are
derived from the catalogue path and the SKU only (``<file>#<sku>/text``, ``<file>#<sku>/image<n>``),
so re-ingesting a changed catalogue updates rows in place, re-embeds what changed and removes the
items of SKUs that are gone, through the ordinary incremental plan.
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path
from typing import Any

from indexer.items import SourceItem, stat_and_hash
from mmsearch.hashing import sha256_text
from mmsearch.errors import SourceError
from mmsearch.scalars import coerce_scalar

log = logging.getLogger(__name__)

SKU_COLUMNS = ("sku", "product_id", "id")
TITLE_COLUMNS = ("title", "name")
DESCRIPTION_COLUMNS = ("description", "desc")
IMAGE_LIST_COLUMNS = ("images", "image_paths")
_IMAGE_COLUMN = re.compile(r"^(image|image_path|img|picture|photo)_?(\d*)$", re.IGNORECASE)
# Fields that are identifiers or prose: never turned into numbers even when they look like one.
KEEP_AS_TEXT = frozenset({"sku", "product_id", "id", "title", "name", "description", "desc", "gtin", "ean", "upc", "barcode"})


def is_catalogue(columns: list[str]) -> bool:
    """A manifest is a catalogue when it has a SKU column and a title column."""
    lowered = {str(c).lower() for c in columns}
    return "sku" in lowered and "title" in lowered


def image_columns(columns: list[str]) -> list[str]:
    """Image columns in order: image, image2, image3..., then any list column (``images``)."""
    singles = []
    for column in columns:
        match = _IMAGE_COLUMN.match(str(column))
        if match:
            singles.append((int(match.group(2) or 1), str(column)))
    lists = [c for c in columns if str(c).lower() in IMAGE_LIST_COLUMNS]
    return [c for _, c in sorted(singles)] + lists


def _first_column(columns: list[str], names: tuple[str, ...]) -> str | None:
    lowered = {str(c).lower(): c for c in columns}
    return next((lowered[n] for n in names if n in lowered), None)


def _image_refs(row: dict, columns: list[str]) -> list[str]:
    refs: list[str] = []
    for column in columns:
        value = row.get(column)
        if value in (None, ""):
            continue
        parts = value if isinstance(value, list) else str(value).split("|")
        refs.extend(str(p).strip() for p in parts if str(p).strip())
    return list(dict.fromkeys(refs))  # the same picture listed twice is one item


def product_fields(row: dict, skip: set[str]) -> dict:
    """The row's fields as typed metadata (numbers become numbers, empty cells are left out)."""
    fields: dict[str, Any] = {}
    for column, value in row.items():
        if column in skip or value is None or value == "":
            continue
        name = str(column)
        fields[name] = value.strip() if name.lower() in KEEP_AS_TEXT and isinstance(value, str) else coerce_scalar(value)
    return fields


def scan_catalogue(path: Path, rows: list[tuple[int, dict]], result, known) -> set[str]:
    """Add the items of every product row to ``result`` (a ScanResult). -> the image paths claimed."""

    columns = list(dict.fromkeys(c for _, row in rows for c in row))
    sku_col = _first_column(columns, SKU_COLUMNS)
    title_col = _first_column(columns, TITLE_COLUMNS)
    if sku_col is None or title_col is None:
        raise SourceError(f"{path} is not a product catalogue: it needs a sku (or product_id/id) column and a title (or name) column")
    desc_col = _first_column(columns, DESCRIPTION_COLUMNS)
    img_cols = image_columns(columns)
    base = path.parent
    claimed: set[str] = set()
    seen: set[str] = set()
    for lineno, row in rows:
        sku = str(row.get(sku_col) or "").strip()
        if not sku:
            result.failures.append((f"{path}#line{lineno}", "product row has no sku"))
            continue
        if sku in seen:
            result.failures.append((f"{path}#{sku}", f"line {lineno}: sku {sku} appears more than once; the first row is kept"))
            continue
        seen.add(sku)
        title = str(row.get(title_col) or "").strip()
        description = str(row.get(desc_col) or "").strip() if desc_col else ""
        meta = product_fields(row, set(img_cols))
        meta["product"] = sku
        meta["manifest"] = str(path)
        prefix = f"{path}#{sku}"
        text = ". ".join(t for t in (title, description) if t)
        if text:
            result.items.append(SourceItem(key=f"{prefix}/text", modality="text", path=None, text=text,
                                           meta=dict(meta, role="text"), sha256=sha256_text(text)))
        for n, ref in enumerate(_image_refs(row, img_cols), 1):
            image_path = ref if os.path.isabs(ref) else str((base / ref).resolve())
            claimed.add(image_path)
            item = SourceItem(key=f"{prefix}/image{n}", modality="image", path=image_path, text=title or None,
                              meta=dict(meta, role="image"))
            try:
                stat_and_hash(item, known)
            except OSError as exc:
                result.failures.append((item.key, f"image {ref}: {exc.strerror or exc}"))
                continue
            result.items.append(item)
    log.info("%s: catalogue of %d products", path, len(seen))
    return claimed
