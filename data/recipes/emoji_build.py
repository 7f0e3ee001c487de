"""Build the emoji part: fetch packages, render every selected image, split, write manifests."""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

from emoji_sources import STYLE_SPECS, EmojiStyle, build_catalogue, select_images
from fetch import FetchError, FetchedPackage, fetch_package
from manifests import summarize, validate_emoji_splits, write_jsonl
from raster import RasterError, content_hash, load_raster, normalize, save_png
from splits import TEST_CONCEPTS, TRAIN, VAL, concept_split

log = logging.getLogger(__name__)

TEST_STYLE = "test_style"
SPLIT_FILES = {TRAIN: "train.jsonl", VAL: "val.jsonl", TEST_CONCEPTS: "test_concepts.jsonl", TEST_STYLE: "test_style.jsonl"}


@dataclass(frozen=True)
class EmojiOptions:
    out: Path
    cache: Path
    size: int = 224
    styles: tuple[str, ...] = ("noto", "twemoji", "fluent-flat", "emojione", "openmoji")
    heldout_style: str = "openmoji"
    skin_tones_per_concept: int = 1
    val_fraction: float = 0.05
    test_fraction: float = 0.10
    force: bool = False  # re-render images that exist from an earlier run


def _try_fetch(registry: str, name: str, cache: Path, problems: list[str]) -> FetchedPackage | None:
    try:
        return fetch_package(registry, name, cache)
    except FetchError as exc:
        log.warning("could not fetch %s: %s", name, exc)
        problems.append(f"{registry}:{name}: {exc}")
        return None


def _load_styles(opts: EmojiOptions, problems: list[str]) -> list[EmojiStyle]:
    styles: list[EmojiStyle] = []
    for name in opts.styles:
        registry, package, license_id, find_images = STYLE_SPECS[name]
        pkg = _try_fetch(registry, package, opts.cache, problems)
        if pkg is None and name == "noto":  # same art, lower resolution, different package
            name = "google"
            registry, package, license_id, find_images = STYLE_SPECS[name]
            pkg = _try_fetch(registry, package, opts.cache, problems)
        if pkg is None:
            continue
        styles.append(EmojiStyle(name, pkg, license_id, find_images(pkg.root)))
        log.info("style %s: %d images in %s", name, len(styles[-1].images), pkg.source)
    return styles


def _render(load, path: Path, size: int, force: bool):
    """Normalised image (re-using an earlier run's output file if present, unless `force`)."""
    if path.is_file() and not force:
        return load_raster(path)
    return normalize(load(2 * size), size)


def build_emoji(opts: EmojiOptions) -> dict:
    """Write images/emoji/<style>/*.png and the four emoji manifests; returns the stats section."""
    t0 = time.monotonic()
    problems: list[str] = []
    emojibase = fetch_package("npm", "emojibase-data", opts.cache)
    datasource = _try_fetch("npm", "emoji-datasource-google", opts.cache, problems)
    openmoji = _try_fetch("npm", "openmoji", opts.cache, problems)
    catalogue = build_catalogue(emojibase.root, datasource.root if datasource else None, openmoji.root if openmoji else None)
    log.info("catalogue: %d sequences, %d concepts", len(catalogue), len({e.concept for e in catalogue.values()}))
    styles = _load_styles(opts, problems)
    manifest_dir = opts.out / "manifests"
    splits: dict[str, list[dict]] = {k: [] for k in SPLIT_FILES}
    seen_hashes: dict[str, str] = {}
    duplicates = failures = 0
    for style in styles:
        for entry, image in select_images(style, catalogue, opts.skin_tones_per_concept):
            rel = Path("images") / "emoji" / style.name / f"{entry.hexcode.lower()}.png"
            path = opts.out / rel
            try:
                img = _render(image.load, path, opts.size, opts.force)
            except (RasterError, OSError) as exc:
                failures += 1
                log.debug("skip %s %s: %s", style.name, entry.hexcode, exc)
                continue
            if img is None:
                failures += 1
                continue
            digest = content_hash(img)
            if digest in seen_hashes and seen_hashes[digest] != str(rel):
                duplicates += 1
                continue
            seen_hashes[digest] = str(rel)
            if opts.force or not path.is_file():
                save_png(img, path)
            concept_part = concept_split(entry.concept, opts.val_fraction, opts.test_fraction)
            split = TEST_STYLE if style.name == opts.heldout_style else concept_part
            row = {
                "image": str(Path("..") / rel),
                "text": entry.text,
                "texts": entry.texts,
                "concept": f"emoji:{entry.concept}",
                "style": style.name,
                "source": style.package.source,
                "license": style.license,
                "hexcode": entry.hexcode,
                "concept_split": concept_part,
            }
            splits[split].append(row)
            n = sum(len(v) for v in splits.values())
            if n % 1000 == 0:
                log.info("%d emoji images (%.0f s)", n, time.monotonic() - t0)
    validate_emoji_splits(manifest_dir, splits, opts.heldout_style)
    for split, filename in SPLIT_FILES.items():
        write_jsonl(manifest_dir / filename, splits[split])
    return {
        "splits": {split: summarize(rows) for split, rows in splits.items()},
        "styles": {s.name: {"source": s.package.source, "license": s.license, "available": len(s.images)} for s in styles},
        "heldout_style": opts.heldout_style,
        "catalogue_concepts": len({e.concept for e in catalogue.values()}),
        "duplicates_dropped": duplicates,
        "render_failures": failures,
        "problems": problems,
        "metadata_sources": [p.source for p in (emojibase, datasource, openmoji) if p is not None],
        "seconds": round(time.monotonic() - t0, 1),
        "size": opts.size,
    }
