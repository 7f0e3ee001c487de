"""Search hits from videos and PDFs, grouped per file with their best moments.

A video is indexed as one image item per sampled frame and a PDF as an image and a text item per page
(see indexer.units); each of those items carries ``unit`` (the file's key) in its metadata. A query
must not answer with ten frames of the same film: results are grouped per file, the file's
best-ranked item stands for it, and its ``moments`` list the best frames (``timestamp``, seconds) or
pages (``page``), best first.
"""

from __future__ import annotations

from typing import Callable, Iterable, TypeVar

MAX_MOMENTS = 5  # moments listed per grouped hit
OVERFETCH = 4  # a grouped search looks this many times deeper than k, so k files come back

T = TypeVar("T")


def unit_of(meta: dict | None, key: str) -> str | None:
    """The video or PDF an item belongs to, or None for an item that stands alone. The item's key must
    extend the unit's, so a manifest column that happens to be called ``unit`` is never taken for one."""
    unit = meta.get("unit") if isinstance(meta, dict) else None
    return unit if isinstance(unit, str) and key.startswith(unit + "#") else None


def collapse(ranked: Iterable[T], unit: Callable[[T], str | None]) -> list[tuple[T, list[T]]]:
    """Rank order kept, one entry per unit: (its best item, its best MAX_MOMENTS items in order).
    Items outside any unit stand alone with no moments."""
    out: list[tuple[T, list[T]]] = []
    groups: dict[str, list[T]] = {}
    for entry in ranked:
        key = unit(entry)
        if key is None:
            out.append((entry, []))
        elif key in groups:
            if len(groups[key]) < MAX_MOMENTS:
                groups[key].append(entry)
        else:
            groups[key] = [entry]
            out.append((entry, groups[key]))
    return out


def moment(item_id: int, score: float, modality: str, meta: dict) -> dict:
    """One moment of a grouped hit: the item, its score, and where it is in its file."""
    out: dict = {"id": item_id, "score": score, "modality": modality}
    for field in ("timestamp", "page"):
        if field in meta:
            out[field] = meta[field]
    return out


def format_time(seconds: float) -> str:
    """12.5 -> '0:12', 3725 -> '1:02:05' (how players show a position)."""
    total = int(seconds)
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def describe(moments: list[dict]) -> str:
    """The moments of a hit in one line: 'at 0:04 (0.312), 1:22 (0.297)' or 'pages 3 (0.41), 7 (0.38)'."""
    if not moments:
        return ""
    if "timestamp" in moments[0]:
        return "at " + ", ".join(f"{format_time(m['timestamp'])} ({m['score']:.3f})" for m in moments)
    pages = list(dict.fromkeys(m.get("page") for m in moments))
    best = {p: max(m["score"] for m in moments if m.get("page") == p) for p in pages}
    return "pages " + ", ".join(f"{p} ({best[p]:.3f})" for p in pages)
