"""Write, validate and summarise the JSONL manifests."""
from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Iterable
from pathlib import Path

from splits import TEST_CONCEPTS, TRAIN, VAL


class ManifestError(RuntimeError):
    """A manifest set violates an invariant the training and evaluation code relies on."""


def write_jsonl(path: Path, rows: Iterable[dict]) -> int:
    """Write rows atomically (tmp file + rename) so a reader never sees a half-written manifest."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    n = 0
    with tmp.open("w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False, sort_keys=False) + "\n")
            n += 1
    os.replace(tmp, path)
    return n


def read_jsonl(path: Path) -> list[dict]:
    with path.open(encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def write_json(path: Path, obj: dict) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2, ensure_ascii=False, sort_keys=True) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def validate_emoji_splits(manifest_dir: Path, splits: dict[str, list[dict]], heldout_style: str) -> None:
    """Images exist, required fields are set, no concept is shared by train and val/test_concepts,
    and the held-out style appears only in test_style."""
    required = ("image", "text", "texts", "concept", "style", "source", "license")
    for name, rows in splits.items():
        for row in rows:
            missing = [k for k in required if k not in row or (k != "texts" and not row[k])]
            if missing:
                raise ManifestError(f"{name}: row {row.get('image')} lacks {missing}")
            if not (manifest_dir / row["image"]).is_file():
                raise ManifestError(f"{name}: missing image {row['image']}")
    concepts = {name: {r["concept"] for r in rows} for name, rows in splits.items()}
    for a, b in ((TRAIN, VAL), (TRAIN, TEST_CONCEPTS), (VAL, TEST_CONCEPTS)):
        shared = concepts.get(a, set()) & concepts.get(b, set())
        if shared:
            raise ManifestError(f"{len(shared)} concepts in both {a} and {b}, e.g. {sorted(shared)[:3]}")
    for name, rows in splits.items():
        styles = {r["style"] for r in rows}
        if name == "test_style" and styles - {heldout_style}:
            raise ManifestError(f"test_style holds other styles: {sorted(styles - {heldout_style})}")
        if name != "test_style" and heldout_style in styles:
            raise ManifestError(f"held-out style {heldout_style} leaked into {name}")


def summarize(rows: list[dict]) -> dict:
    return {
        "images": len(rows),
        "concepts": len({r["concept"] for r in rows}),
        "by_style": dict(sorted(Counter(r["style"] for r in rows).items())),
        "by_source": dict(sorted(Counter(r["source"] for r in rows).items())),
    }
