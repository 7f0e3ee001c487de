"""Training examples from a JSONL/CSV manifest or a folder with sidecar captions.

Scanning reuses :func:`indexer.sources.scan`, so a manifest means the same thing to ``mmsearch train``,
``mmsearch eval`` and ``mmsearch index`` (paths relative to the manifest, the same column names).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

from indexer.sources import scan
from mmsearch.errors import SourceError

log = logging.getLogger(__name__)

ALT_TEXT_COLUMNS = ("texts", "captions")
CONCEPT_COLUMNS = ("concept", "label", "class")
LIST_SEPARATOR = "|"  # CSV cells hold alternative captions as "a|b|c"


@dataclass
class Example:
    """One image with everything that may describe it."""

    image_path: str
    sha256: str
    caption: str  # the primary text (the manifest's text column or the sidecar caption)
    texts: list[str] = field(default_factory=list)  # alternative captions, primary first
    concept: str | None = None
    meta: dict = field(default_factory=dict)


def _as_text_list(value) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        stripped = value.strip()
        if stripped.startswith("["):
            try:
                return _as_text_list(json.loads(stripped))
            except json.JSONDecodeError:
                pass
        return [t.strip() for t in stripped.split(LIST_SEPARATOR) if t.strip()]
    if isinstance(value, (list, tuple)):
        return [str(t).strip() for t in value if str(t).strip()]
    return [str(value)]


def _first(meta: dict, names: tuple[str, ...]):
    lowered = {str(k).lower(): k for k in meta}
    for name in names:
        if name in lowered and meta[lowered[name]] not in (None, ""):
            return meta[lowered[name]]
    return None


def load_examples(source: Path) -> list[Example]:
    """Every captioned image of ``source``. Uncaptioned images and text-only rows are skipped (logged)."""
    result = scan(Path(source))
    for key, reason in result.failures:
        log.warning("skipped %s: %s", key, reason)
    examples: list[Example] = []
    uncaptioned = 0
    for item in result.items:
        if item.modality != "image":
            continue
        alternatives = _as_text_list(_first(item.meta, ALT_TEXT_COLUMNS))
        caption = item.text or (alternatives[0] if alternatives else None)
        if not caption:
            uncaptioned += 1
            continue
        texts = [caption] + [t for t in alternatives if t != caption]
        concept = _first(item.meta, CONCEPT_COLUMNS)
        examples.append(Example(item.path, item.sha256, caption, texts, str(concept) if concept is not None else None, item.meta))
    if uncaptioned:
        log.warning("%s: %d images have no caption and were skipped", source, uncaptioned)
    if not examples:
        raise SourceError(f"{source} holds no captioned images (need an image column and a text column, or sidecar .txt captions)")
    return examples


def group_keys(examples: list[Example]) -> list[str]:
    """What counts as 'the same thing': the concept when the data has one, else the image itself."""
    if any(ex.concept for ex in examples):
        return [ex.concept or f"row:{i}" for i, ex in enumerate(examples)]
    return [f"row:{i}" for i in range(len(examples))]


def caption_groups(examples: list[Example], groups: list[str]) -> dict[str, set[str]]:
    """Each unique caption (in first-seen order) -> the groups of the pictures it describes: a text query
    is answered by a picture of any of them."""
    by_caption: dict[str, set[str]] = {}
    for ex, group in zip(examples, groups):
        by_caption.setdefault(ex.caption, set()).add(group)
    return by_caption
