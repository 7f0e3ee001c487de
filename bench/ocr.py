"""OCR accuracy and speed on the rendered set of bench/ocr_data.py (fonts, sizes, colours, backgrounds,
rotations), one thread, and the cost of ``mmsearch index --ocr`` against plain indexing in the same run.

    python -m bench.ocr --size smoke|full [--json out.json] [--work-dir DIR] [--tesseract]

* ``engine``: word recall of ``mmsearch.imaging.ocr.read_text`` overall, on upright text, per rotation and
  per background, and seconds per image (one intra-op thread: what an indexing worker uses);
* ``--tesseract``: the same for Tesseract through pytesseract (one pass upright, and the best of four
  rotations), when pytesseract and the tesseract binary are installed (neither is a dependency);
* ``index``: images/s of ``mmsearch index`` on a folder of the rendered images, without and with
  ``--ocr`` (fresh processes, same folder, same run).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import time
from collections import defaultdict
from pathlib import Path

from bench.common import emit_json, machine, print_table, python, run_child
from bench.ocr_data import Sample, render_set, word_recall

SIZES = {"smoke": {"accuracy": 8, "index": 8}, "full": {"accuracy": 192, "index": 96}}


def _score(samples: list[Sample], read) -> dict:
    """Recall overall, upright, per rotation and per background; seconds per image."""
    groups: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    read(samples[0].image)  # the first call loads the engine; not timed
    started = time.perf_counter()
    for sample in samples:
        found, total = word_recall(sample.words, read(sample.image))
        for key in ("all", f"rotation {sample.rotation}", f"background {sample.background}", f"size {sample.size}px"):
            groups[key][0] += found
            groups[key][1] += total
    seconds = time.perf_counter() - started
    recall = {key: round(found / total, 3) for key, (found, total) in sorted(groups.items()) if total}
    return {"images": len(samples), "words": groups["all"][1], "recall": recall["all"], "recall_upright": recall.get("rotation 0"),
            "recall_by": recall, "seconds_per_image": round(seconds / len(samples), 3)}


def engine_accuracy(samples: list[Sample]) -> dict:
    from mmsearch.imaging.ocr import OcrBudget, read_text

    # accuracy alone: no time budget cutting a slow image short on a busy machine
    return _score(samples, lambda image: read_text(image, OcrBudget(seconds=3600)).text)


def tesseract_accuracy(samples: list[Sample]) -> dict | None:
    """Tesseract 5 as the comparison: one upright pass (``psm 3``), and the best of four rotations by
    summed word confidence (what finding turned text costs it). None when it is not installed."""
    try:
        import pytesseract

        pytesseract.get_tesseract_version()
    except Exception:
        return None

    def upright(image) -> str:
        return pytesseract.image_to_string(image)

    def best_rotation(image) -> str:
        best, best_score = "", -1.0
        for angle in (0, 90, 180, 270):
            data = pytesseract.image_to_data(image.rotate(angle, expand=True) if angle else image, output_type=pytesseract.Output.DICT)
            words = [(t, float(c)) for t, c in zip(data["text"], data["conf"]) if t.strip() and float(c) >= 0]
            score = sum(c for _, c in words)
            if score > best_score:
                best, best_score = " ".join(t for t, _ in words), score
        return best

    return {"upright_pass": _score(samples, upright), "four_rotations": _score(samples, best_rotation)}


def index_cost(count: int, work_dir: Path) -> dict:
    """``mmsearch index`` on ``count`` rendered images, without and with --ocr, fresh processes."""
    folder = work_dir / "ocr-images"
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    for sample in render_set(count):
        sample.image.save(folder / f"{sample.name}.png")
    env = dict(os.environ)  # defaults as a user runs it (one decode worker on 2 cores)
    out = {}
    for name, extra in (("plain", []), ("ocr", ["--ocr"])):
        index_dir = work_dir / f"ocr-index-{name}"
        shutil.rmtree(index_dir, ignore_errors=True)
        run = run_child([python(), "-m", "mmsearch", "index", str(folder), "--index-dir", str(index_dir), *extra], env)
        if run.returncode != 0:
            raise RuntimeError(f"mmsearch index {' '.join(extra)} failed: {run.stderr[-2000:]}")
        out[name] = {"images": count, "seconds": round(run.seconds, 2), "images_per_s": round(count / run.seconds, 2),
                     "peak_rss_mb": round(run.peak_rss_mb)}
    out["ocr_cost_x"] = round(out["plain"]["images_per_s"] / out["ocr"]["images_per_s"], 2)
    return out


def run(size: str, work_dir: Path, tesseract: bool = False) -> dict:
    config = SIZES[size]
    samples = render_set(config["accuracy"])
    result = {"size": size, "machine": machine(), "engine": engine_accuracy(samples)}
    if tesseract:
        result["tesseract"] = tesseract_accuracy(samples)
    result["index"] = index_cost(config["index"], work_dir)
    engine, index = result["engine"], result["index"]
    rows = [("rapidocr recall (all / upright)", f"{engine['recall']} / {engine['recall_upright']}", engine["seconds_per_image"])]
    for name, row in (result.get("tesseract") or {}).items():
        rows.append((f"tesseract {name} recall (all / upright)", f"{row['recall']} / {row['recall_upright']}", row["seconds_per_image"]))
    print_table(f"OCR on {engine['images']} rendered images ({engine['words']} words), 1 thread", rows, ("engine", "word recall", "s/image"))
    print_table("indexing cost of --ocr (same run)", [
        ("mmsearch index", index["plain"]["images_per_s"], index["plain"]["peak_rss_mb"]),
        ("mmsearch index --ocr", index["ocr"]["images_per_s"], index["ocr"]["peak_rss_mb"]),
    ], ("run", "images/s", "peak RSS MB"))
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", choices=tuple(SIZES), default="smoke")
    parser.add_argument("--work-dir", type=Path, default=Path(os.environ.get("TMPDIR", "/tmp")) / "mmsearch-bench")
    parser.add_argument("--tesseract", action="store_true", help="Also measure Tesseract (needs pytesseract and tesseract-ocr).")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    args.work_dir.mkdir(parents=True, exist_ok=True)
    emit_json(run(args.size, args.work_dir, args.tesseract), args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
