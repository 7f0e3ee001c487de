"""Build the clip-art part from Debian's openclipart-png (pictures) and openclipart-svg (metadata)."""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

from clipart_meta import clipart_captions, collection_titles, parse_metadata
from fetch import fetch_deb
from manifests import summarize, write_jsonl
from raster import write_picture
from splits import SPLIT_SALT, stable_fraction

log = logging.getLogger(__name__)

PNG_PACKAGE = "openclipart-png"
SVG_PACKAGE = "openclipart-svg"
LICENSE = "public-domain"  # openclipart's terms; Debian's copyright file says the same for the package
# Backgrounds, gradients and patterns (special/) and ~1,400 generated star polygons (shapes/stars/):
# nothing a caption can tell apart.
SKIPPED_FOLDERS = ("special", "shapes/stars")


@dataclass(frozen=True)
class ClipartOptions:
    out: Path
    cache: Path
    size: int = 224
    limit: int = 0  # 0 = all files
    test_fraction: float = 0.15
    force: bool = False  # re-render images that exist from an earlier run


def clipart_split(concept: str, test_fraction: float) -> str:
    """'train' or 'test' for a clip-art item; its own salt so it is independent of the emoji split."""
    return "test" if stable_fraction(concept, SPLIT_SALT + ":clipart") < test_fraction else "train"


def _skipped(rel: Path) -> bool:
    folder = rel.parent.as_posix()
    return any(folder == s or folder.startswith(s + "/") for s in SKIPPED_FOLDERS)


def build_clipart(opts: ClipartOptions) -> dict:
    """Write images/clipart/**.png and manifests/{train,test}_clipart.jsonl; returns the stats section."""
    t0 = time.monotonic()
    png_pkg = fetch_deb(PNG_PACKAGE, opts.cache)
    svg_pkg = fetch_deb(SVG_PACKAGE, opts.cache)
    png_root = png_pkg.root / "usr" / "share" / "openclipart" / "png"
    svg_root = svg_pkg.root / "usr" / "share" / "openclipart" / "svg"
    files = [p for p in sorted(png_root.rglob("*.png")) if not _skipped(p.relative_to(png_root))]
    if opts.limit:
        files = files[: opts.limit]
    rows: dict[str, list[dict]] = {"train": [], "test": []}
    seen: set[str] = set()
    counts = {"files": len(files), "no_caption": 0, "render_failures": 0, "duplicates_dropped": 0}
    metas = [parse_metadata(svg_root / p.relative_to(png_root).with_suffix(".svg")) for p in files]
    common = collection_titles(metas)
    log.info("clipart: %d files, %d collection titles treated as boilerplate (%.0f s)", len(files), len(common), time.monotonic() - t0)
    for i, (png, meta) in enumerate(zip(files, metas), 1):
        rel = png.relative_to(png_root)
        svg = svg_root / rel.with_suffix(".svg")
        captions = clipart_captions(meta, rel.stem, list(rel.parent.parts), common)
        if captions is None:
            counts["no_caption"] += 1
            continue
        out_rel = Path("images") / "clipart" / rel
        if not write_picture(png, svg, opts.size, opts.out / out_rel, seen, opts.force, counts):
            continue
        concept = f"clipart:{rel.with_suffix('').as_posix()}"
        rows[clipart_split(concept, opts.test_fraction)].append(
            {
                "image": str(Path("..") / out_rel),
                "text": captions[0],
                "texts": captions[1],
                "concept": concept,
                "style": "openclipart",
                "source": f"deb:{PNG_PACKAGE}@{png_pkg.version}",
                "license": LICENSE,
                "category": "/".join(rel.parent.parts),
            }
        )
        if i % 500 == 0:
            log.info("clipart %d/%d files (%.0f s)", i, len(files), time.monotonic() - t0)
    manifest_dir = opts.out / "manifests"
    write_jsonl(manifest_dir / "train_clipart.jsonl", rows["train"])
    write_jsonl(manifest_dir / "test_clipart.jsonl", rows["test"])
    return {
        "splits": {f"{k}_clipart": summarize(v) for k, v in rows.items()},
        **counts,
        "sources": [png_pkg.source, svg_pkg.source],
        "seconds": round(time.monotonic() - t0, 1),
    }
