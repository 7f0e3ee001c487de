"""Indexing throughput: `mmsearch index` end to end vs a plain one-image-at-a-time loop, same run.

    python -m bench.index_throughput --size smoke|full [--json out.json] [--work-dir DIR]

Generates N photo-like 1000x750 JPEGs (and a 10N folder for the memory check; 3N at smoke size), then measures:

* baseline: a plain loop in a fresh process that opens each image and calls the model's public
  ``encode_images`` on it alone (torch fp32, torch defaults), over the first ``baseline_images`` files;
* ``mmsearch index`` as a user runs it (a fresh process: start-up, model load, scan, decode, encode,
  write), images/s = N / wall-clock seconds, and its peak RSS for N and for 10N images.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path

from bench.common import emit_json, machine, print_table, python, run_child
from bench.photos import photo_folder

SIZES = {
    # n: images in the timed folder; big: images in the memory-growth folder; baseline: plain-loop images
    "smoke": {"n": 64, "big": 192, "baseline": 24},
    "full": {"n": 2000, "big": 20000, "baseline": 300},
}


def plain_loop(folder: Path, limit: int) -> dict:
    """The naive way: open, preprocess and embed one image at a time (model load not timed)."""
    from PIL import Image

    from mmsearch.encoders import load_encoder

    encoder = load_encoder("mmsearch-lite", "cpu", batch_size=1, precision="fp32", image_backend="torch")
    paths = sorted(folder.glob("*.jpg"))[:limit]
    encoder.encode_images([Image.open(paths[0]).convert("RGB")])  # first call pays one-off kernel setup
    started = time.perf_counter()
    for path in paths:
        with Image.open(path) as image:
            encoder.encode_images([image.convert("RGB")])
    seconds = time.perf_counter() - started
    return {"images": len(paths), "seconds": round(seconds, 3), "images_per_s": round(len(paths) / seconds, 2)}


def _env(cache_dir: Path) -> dict:
    env = dict(os.environ)
    env["MMSEARCH_CACHE_DIR"] = str(cache_dir)
    env.setdefault("HF_HUB_OFFLINE", "1")
    env.setdefault("TRANSFORMERS_OFFLINE", "1")
    return env


def run_baseline(folder: Path, limit: int, env: dict) -> dict:
    child = run_child([python(), "-m", "bench.index_throughput", "--plain-loop", str(folder), "--limit", str(limit)], env)
    if child.returncode != 0:
        raise RuntimeError(f"plain loop failed:\n{child.stderr[-3000:]}")
    return json.loads(child.stdout.strip().splitlines()[-1])


def warm_caches(env: dict) -> dict:
    """Load the default model once as `mmsearch index` will (default backend), so the timed runs find the
    class-name embeddings and the compiled image graph in the cache like every run after a user's first."""
    code = "from mmsearch.encoders import load_encoder; load_encoder('mmsearch-lite', 'cpu')"
    child = run_child([python(), "-c", code], env)
    if child.returncode != 0:
        raise RuntimeError(f"model load failed:\n{child.stderr[-3000:]}")
    return {"seconds": round(child.seconds, 3)}


def run_index(folder: Path, index_dir: Path, count: int, env: dict) -> dict:
    shutil.rmtree(index_dir, ignore_errors=True)
    child = run_child([python(), "-m", "mmsearch", "-v", "index", str(folder), "--index-dir", str(index_dir)], env)
    if child.returncode != 0:
        raise RuntimeError(f"mmsearch index failed:\n{child.stderr[-3000:]}")
    return {
        "images": count,
        "seconds": round(child.seconds, 3),
        "images_per_s": round(count / child.seconds, 2),
        "peak_rss_mb": round(child.peak_rss_mb, 1),
        "output": child.stdout.strip(),
        "image_tower": _logged_image_tower(child.stderr),
    }


def _logged_image_tower(stderr: str) -> str:
    """What ran the image tower, as `mmsearch -v` logged it (backend, precision, threads, graph cache)."""
    lines = [line.split("image tower: ", 1)[1] for line in stderr.splitlines() if "image tower: " in line]
    return lines[-1] if lines else "unknown"


def run(size: str, work_dir: Path, n: int | None = None, big: int | None = None) -> dict:
    spec = dict(SIZES[size])
    spec.update({k: v for k, v in (("n", n), ("big", big)) if v})
    env = _env(work_dir / "cache")
    small = photo_folder(work_dir / f"photos-{spec['n']}", spec["n"])
    big = photo_folder(work_dir / f"photos-{spec['big']}", spec["big"])
    baseline = run_baseline(small, spec["baseline"], env)
    first_load = warm_caches(env)
    indexed = run_index(small, work_dir / "index-n", spec["n"], env)
    indexed_big = run_index(big, work_dir / "index-big", spec["big"], env)
    result = {
        "benchmark": "index_throughput",
        "size": size,
        "machine": machine(),
        "settings": {k: v for k, v in os.environ.items() if k.startswith("MMSEARCH_")},
        "plain_loop": baseline,
        "first_model_load": first_load,
        "index": indexed,
        "index_big": indexed_big,
        "speedup_vs_plain_loop": round(indexed["images_per_s"] / baseline["images_per_s"], 2),
        "rss_growth_big_vs_n": round(indexed_big["peak_rss_mb"] / indexed["peak_rss_mb"], 3),
    }
    print_table(
        f"indexing throughput ({size}; load {result['machine']['loadavg_1_5_15']})",
        [
            ("images/s", indexed["images_per_s"], baseline["images_per_s"], result["speedup_vs_plain_loop"]),
            (f"peak RSS MB ({spec['big']} vs {spec['n']} images)", indexed_big["peak_rss_mb"], indexed["peak_rss_mb"],
             result["rss_growth_big_vs_n"]),
        ],
        ("figure", "mmsearch index", "baseline", "ratio"),
    )
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", choices=sorted(SIZES), default="smoke")
    parser.add_argument("--work-dir", type=Path, default=Path(os.environ.get("TMPDIR", "/tmp")) / "mmsearch-bench")
    parser.add_argument("--json", type=Path, default=None, help="Also write the JSON result here.")
    parser.add_argument("--n", type=int, default=None, help="Override the timed folder's image count.")
    parser.add_argument("--big", type=int, default=None, help="Override the memory-check folder's image count.")
    parser.add_argument("--plain-loop", type=Path, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--limit", type=int, default=100, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.plain_loop is not None:
        print(json.dumps(plain_loop(args.plain_loop, args.limit)))
        return 0
    emit_json(run(args.size, args.work_dir, args.n, args.big), args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
