"""Build the mmsearch training/evaluation corpora from packages fetched by name.

    python data/recipes/build.py [--out DIR] [--only emoji,clipart,stamps] [--cache DIR]

Writes OUT/images/... and OUT/manifests/{train,val,test_concepts,test_style}.jsonl (+ clip-art and
stamps manifests), OUT/manifests/stats.json, and the marker files DONE (emoji part complete and
validated), CLIPART_DONE and STAMPS_DONE. See data/recipes/README.md.
"""
from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from clipart_build import ClipartOptions, build_clipart  # noqa: E402
from emoji_build import EmojiOptions, build_emoji  # noqa: E402
from stamps_build import StampsOptions, build_stamps  # noqa: E402
from manifests import write_json  # noqa: E402

log = logging.getLogger("recipes")
PARTS = ("emoji", "clipart", "stamps")


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=HERE.parent / "build", help="output directory (default data/build)")
    p.add_argument("--cache", type=Path, default=None, help="package cache (default OUT/cache)")
    p.add_argument("--only", default=",".join(PARTS), help="comma separated parts: emoji,clipart,stamps")
    p.add_argument("--size", type=int, default=224, help="side of the square output images in px")
    p.add_argument("--skin-tones", type=int, default=1, help="skin-tone variants per concept and style")
    p.add_argument("--clipart-limit", type=int, default=0, help="use at most N clip-art files (0 = all)")
    p.add_argument("--force", action="store_true", help="re-render images that exist from an earlier run")
    p.add_argument("-v", "--verbose", action="store_true")
    return p.parse_args(argv)


def _load_stats(path: Path) -> dict:
    import json

    return json.loads(path.read_text()) if path.is_file() else {}


def main(argv: list[str] | None = None) -> int:
    args = _parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    parts = [p.strip() for p in args.only.split(",") if p.strip()]
    unknown = set(parts) - set(PARTS)
    if unknown:
        log.error("unknown part(s): %s (choose from %s)", ", ".join(sorted(unknown)), ", ".join(PARTS))
        return 2
    out: Path = args.out.resolve()
    cache: Path = (args.cache or out / "cache").resolve()
    manifest_dir = out / "manifests"
    manifest_dir.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    if "emoji" in parts:
        _build_part("emoji", "DONE", "emoji manifests complete and validated", manifest_dir, t0, lambda: build_emoji(
            EmojiOptions(out=out, cache=cache, size=args.size, skin_tones_per_concept=args.skin_tones, force=args.force)))
    if "clipart" in parts:
        _build_part("clipart", "CLIPART_DONE", "clip-art manifests complete", manifest_dir, t0, lambda: build_clipart(
            ClipartOptions(out=out, cache=cache, size=args.size, limit=args.clipart_limit, force=args.force)))
    if "stamps" in parts:
        _build_part("stamps", "STAMPS_DONE", "stamps manifests complete", manifest_dir, t0, lambda: build_stamps(
            StampsOptions(out=out, cache=cache, size=args.size, force=args.force)))
    return 0


def _build_part(name: str, marker: str, marker_text: str, manifest_dir: Path, t0: float, build) -> None:
    """Build one corpus, merge its stats into stats.json, and only then write its completion marker
    (removed first), so a reader waiting on the marker never sees half-written manifests."""
    (manifest_dir / marker).unlink(missing_ok=True)
    part_stats = build()
    stats_path = manifest_dir / "stats.json"
    stats = _load_stats(stats_path)
    stats[name] = part_stats
    write_json(stats_path, stats)
    (manifest_dir / marker).write_text(marker_text + "\n")
    log.info("%s done in %.0f s", name, time.monotonic() - t0)


if __name__ == "__main__":
    sys.exit(main())
