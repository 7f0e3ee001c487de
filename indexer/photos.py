"""Photo fields (mmsearch.imaging.photometa) in the items an index run writes.

The decode workers read each picture's fields while decoding it; this module merges them into the
item's metadata with place names added (one batched lookup), and keeps them across runs: a file whose
content did not change is not decoded again, so its fields are carried over from the stored item (the
album follows a move; an mtime-based capture time follows the new mtime). Items indexed before photo
fields existed get them from their file's header on the next run, without re-embedding.

Catalogue items (those linked to a ``product``) get none: a product photo's EXIF says nothing about the
product, and the shop's filters should not fill with camera fields. Values a manifest gives win over
the file's own.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Sequence

from mmsearch.imaging.photometa import PHOTO_FIELDS, album_of, read_photo_fields
from mmsearch.imaging.places import add_place_names

log = logging.getLogger(__name__)

MARKER = "album"  # every image item indexed with photo fields has it


def wants_photo_fields(modality: str, meta: dict) -> bool:
    return modality == "image" and "product" not in meta


def merge_photo_fields(items: Sequence, fields: Sequence[dict]) -> None:
    """``item.meta`` := the file's photo fields + place names, then the item's own metadata on top."""
    chosen = [(item, dict(f)) for item, f in zip(items, fields) if f and wants_photo_fields(item.modality, item.meta)]
    add_place_names([f for _, f in chosen])
    for item, f in chosen:
        item.meta = {**f, **item.meta}


def carry_photo_fields(stored_meta: dict, item) -> dict:
    """The metadata an unchanged (or moved) file should have: its scanned metadata plus the photo fields
    stored with it, the album and an mtime-based capture time updated to the file's present path and mtime."""
    if not wants_photo_fields(item.modality, item.meta):
        return item.meta
    kept = {k: v for k, v in stored_meta.items() if k in PHOTO_FIELDS and k not in item.meta}
    if not kept:
        return item.meta
    if "album" in kept and item.path:
        kept["album"] = album_of(item.path)
    if kept.get("taken_source") == "mtime" and item.mtime:
        kept["taken"] = datetime.fromtimestamp(item.mtime).astimezone().isoformat(timespec="seconds")
    return {**kept, **item.meta}


def needs_backfill(stored_meta: dict, item) -> bool:
    return wants_photo_fields(item.modality, item.meta) and MARKER not in stored_meta and bool(item.path)


def backfill_photo_fields(items: Sequence) -> None:
    """Read the photo fields of items stored before they existed, from their files' headers."""
    if items:
        log.info("reading photo fields of %d items indexed before them", len(items))
    merge_photo_fields(items, [read_photo_fields(item.path, item.mtime) for item in items])
