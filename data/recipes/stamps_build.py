"""Build the out-of-domain stamps part from Debian's tuxpaint-stamps-default.

Tux Paint's stamps are photographic cut-outs and drawings of animals, food, vehicles, clothes,
household objects, plants, buildings and more, each with an English description: pictures of the
everyday things users index, in none of the training styles. The whole set is the out-of-domain
test set `test_stamps.jsonl`; a hash split by concept (`concept_split`) also writes
`train_stamps.jsonl` / `test_stamps_heldout.jsonl`, so a model that trains on some stamps can still
be tested on stamp concepts it never saw.

A second, independent hash split by concept (`eval_split`, its own salt) writes `val_stamps.jsonl` /
`test_stamps_split.jsonl` for choosing a training-free or lightly trained model on photo-like pictures:
everything is chosen on the validation half and the test half is reported once, at the end. Its salt
differs from the train/heldout split's because `test_stamps_heldout` was looked at while earlier models
were chosen.
"""
from __future__ import annotations

import logging
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from fetch import fetch_deb
from manifests import summarize, write_jsonl
from splits import SPLIT_SALT, stable_fraction
from stamps_meta import read_english_description, stamp_captions
from textclean import caption_key

log = logging.getLogger(__name__)

PACKAGE = "tuxpaint-stamps-default"
STYLE = "tuxpaint-stamps"
LICENSE = "GPL-2.0-or-later"  # the package's debian/copyright: GPL-2, "or (at your option) any later version"
STAMPS_DIR = Path("usr") / "share" / "tuxpaint" / "stamps"
# Letters in four alphabets (filled/outlined, upper/lower case) and sign-language hand shapes: glyphs
# whose captions differ by one letter, not the everyday pictures this set is meant to measure.
SKIPPED_FOLDERS = ("symbols/alphabets",)
# Tux Paint's alternative artwork for a mirrored stamp: the same picture flipped.
MIRROR_SUFFIX = "_mirror"


@dataclass(frozen=True)
class StampsOptions:
    out: Path
    cache: Path
    size: int = 224
    test_fraction: float = 0.5  # of concepts, for the train_stamps / test_stamps_heldout split
    eval_test_fraction: float = 0.5  # of concepts, for the val_stamps / test_stamps_split split
    force: bool = False  # re-render images that exist from an earlier run


def stamps_split(concept: str, test_fraction: float) -> str:
    """'train' or 'test' for a stamp concept; its own salt, independent of the other splits."""
    return "test" if stable_fraction(concept, SPLIT_SALT + ":stamps") < test_fraction else "train"


def stamps_eval_split(concept: str, test_fraction: float) -> str:
    """'val' or 'test' for a stamp concept: the validation/test split for choosing models on stamps."""
    return "test" if stable_fraction(concept, SPLIT_SALT + ":stamps-eval") < test_fraction else "val"


def _skipped(rel: Path) -> bool:
    folder = rel.parent.as_posix()
    return rel.name.endswith(MIRROR_SUFFIX) or any(folder == s or folder.startswith(s + "/") for s in SKIPPED_FOLDERS)


def find_stamps(root: Path) -> list[Path]:
    """Stamp paths without suffix (one per picture, PNG and/or SVG present), sorted."""
    stems = {p.relative_to(root).with_suffix("") for p in root.rglob("*") if p.suffix.lower() in (".png", ".svg")}
    return sorted(s for s in stems if not _skipped(s))


def _picture_file(stamp: Path, suffix: str) -> Path | None:
    path = stamp.with_suffix(suffix)
    return path if path.is_file() else None


def build_stamps(opts: StampsOptions) -> dict:
    """Write images/stamps/**.png and manifests/{test_stamps,train_stamps,test_stamps_heldout}.jsonl;
    returns the stats section (with per-category counts)."""
    from raster import write_picture  # cairosvg (the data extra) only where pictures are written; the splits need none

    t0 = time.monotonic()
    pkg = fetch_deb(PACKAGE, opts.cache)
    root = pkg.root / STAMPS_DIR
    stamps = find_stamps(root)
    rows: list[dict] = []
    seen: set[str] = set()
    counts = {"stamps": len(stamps), "no_caption": 0, "render_failures": 0, "duplicates_dropped": 0}
    for rel in stamps:
        stamp = root / rel
        captions = stamp_captions(read_english_description(stamp.with_suffix(".txt")), rel.name, list(rel.parent.parts))
        if captions is None:
            counts["no_caption"] += 1
            continue
        # The PNG when there is one (photographic stamps are PNG), else the SVG; over-large or
        # unreadable files are counted as render failures and skipped.
        png, svg = _picture_file(stamp, ".png"), _picture_file(stamp, ".svg")
        out_rel = Path("images") / "stamps" / rel.with_suffix(".png")
        if not write_picture(png, svg, opts.size, opts.out / out_rel, seen, opts.force, counts):
            continue
        concept = f"stamps:{caption_key(captions[0])}"
        rows.append(
            {
                "image": str(Path("..") / out_rel),
                "text": captions[0],
                "texts": captions[1],
                "concept": concept,
                "style": STYLE,
                "source": pkg.source,
                "license": LICENSE,
                "category": rel.parts[0],
                "folder": rel.parent.as_posix(),
                "concept_split": stamps_split(concept, opts.test_fraction),
                "eval_split": stamps_eval_split(concept, opts.eval_test_fraction),
            }
        )
    manifest_dir = opts.out / "manifests"
    write_jsonl(manifest_dir / "test_stamps.jsonl", rows)
    write_jsonl(manifest_dir / "train_stamps.jsonl", [r for r in rows if r["concept_split"] == "train"])
    write_jsonl(manifest_dir / "test_stamps_heldout.jsonl", [r for r in rows if r["concept_split"] == "test"])
    write_jsonl(manifest_dir / "val_stamps.jsonl", [r for r in rows if r["eval_split"] == "val"])
    write_jsonl(manifest_dir / "test_stamps_split.jsonl", [r for r in rows if r["eval_split"] == "test"])
    log.info("stamps: %d pictures, %d concepts (%.0f s)", len(rows), len({r["concept"] for r in rows}), time.monotonic() - t0)
    return {
        "splits": {
            "test_stamps": summarize(rows),
            **{f"{name}_stamps": summarize([r for r in rows if r["concept_split"] == part]) for name, part in (("train", "train"), ("test_heldout", "test"))},
            **{name: summarize([r for r in rows if r["eval_split"] == part]) for name, part in (("val_stamps", "val"), ("test_stamps_split", "test"))},
        },
        "by_category": dict(sorted(Counter(r["category"] for r in rows).items())),
        "captions": len({r["text"] for r in rows}),
        **counts,
        "sources": [pkg.source],
        "seconds": round(time.monotonic() - t0, 1),
    }
