"""Run every benchmark (indexing throughput, approximate search, serving under load, OCR, video indexing) and print one summary.

    python -m bench --size smoke|full [--only index,ann,serve,ocr,duplicates,video] [--json all.json] [--clients 16]

Each part prints its own table and JSON as it finishes (see bench/README.md); the summary at the end puts
each headline figure beside its same-run baseline, the ratio, and the target from the speed issue, so one
run shows what holds on this machine and what does not.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from bench import ann, duplicates, index_throughput, ocr, serve_load, video_index
from bench.common import emit_json, machine, print_table

PARTS = ("index", "ann", "serve", "ocr", "duplicates", "video")


def _index_rows(r: dict) -> list[tuple]:
    ips, base = r["index"]["images_per_s"], r["plain_loop"]["images_per_s"]
    return [
        ("index images/s", ips, f"plain loop {base}", r["speedup_vs_plain_loop"], ">= 100/s and >= 5x", ips >= 100 and r["speedup_vs_plain_loop"] >= 5),
        ("index peak RSS MB (10x folder)", r["index_big"]["peak_rss_mb"], f"1x folder {r['index']['peak_rss_mb']}",
         r["rss_growth_big_vs_n"], "flat (< 1.3x)", r["rss_growth_big_vs_n"] < 1.3),
    ]


def _ann_rows(r: dict) -> list[tuple]:
    rows = r["results"]
    numpy_p50 = rows["numpy brute force"]["p50_ms"]
    out = []
    for name, row in rows.items():
        if ":" not in name or "speedup_vs_numpy_p50" not in row:  # baselines, codes-only and SQLite re-rank rows
            continue
        pq = name.startswith("ivfpq")
        target = "recall >= 0.90 at <= 0.25x memory" if pq else "p50 <= 2 ms, recall >= 0.95, <= 1.5x memory, >= 30x numpy"
        met = (row["recall@10"] >= 0.90 and row["memory_x_raw"] <= 0.25) if pq else (
            row["p50_ms"] <= 2 and row["recall@10"] >= 0.95 and row["memory_x_raw"] <= 1.5 and row["speedup_vs_numpy_p50"] >= 30)
        out.append((f"ann {name} p50 ms (recall {row['recall@10']}, mem {row['memory_x_raw']}x)", row["p50_ms"],
                    f"numpy {numpy_p50}", row["speedup_vs_numpy_p50"], target, met))
    return out


def _serve_rows(r: dict, clients: int) -> list[tuple]:
    load, one = r[f"load_{clients}_clients"], r["baseline_1_client"]
    return [(f"serve {r['items']} items, {clients} clients p50/p99 ms", f"{load['p50_ms']}/{load['p99_ms']}",
             f"1 client {one['p50_ms']}/{one['p99_ms']}", r["throughput_ratio"], "p50 <= 20, p99 <= 60",
             load["p50_ms"] <= 20 and load["p99_ms"] <= 60 and load["errors"] == 0)]


def _ocr_rows(r: dict) -> list[tuple]:
    engine, index = r["engine"], r["index"]
    return [
        ("ocr word recall all/upright", f"{engine['recall']}/{engine['recall_upright']}", f"{engine['words']} printed words", "",
         ">= 0.80 / >= 0.90", engine["recall"] >= 0.80 and (engine["recall_upright"] or 0) >= 0.90),
        ("index --ocr images/s", index["ocr"]["images_per_s"], f"without --ocr {index['plain']['images_per_s']}",
         round(1 / index["ocr_cost_x"], 3), "(measured, no target)", True),
    ]


def _duplicates_rows(r: dict) -> list[tuple]:
    q = r["quality"]
    base = q["embeddings_alone"]
    rows = [(f"duplicates recall / false share ({q['photos']} photos)", f"{q['recall']}/{q['false_share']}",
             f"embeddings alone: recall {base['recall_at_1pct_false']} at <= 1 % false", "", "recall >= 0.95, false <= 0.01", q["met"])]
    for row in r["scale"]:
        rows.append((f"duplicates candidate search {row['n']} vectors s (self-join, {row['lists']} lists x {row['lists_per_vector']}, "
                     f"planted recall {row['planted_recall']})",
                     row["self_join_s"], f"all pairs {row['all_pairs_s_extrapolated']} (extrapolated)", row["speedup_vs_all_pairs"],
                     "minutes at 1M, not days", row["planted_recall"] >= 0.95))
    return rows


def _video_rows(r: dict) -> list[tuple]:
    x, base = r["index"]["x_real_time"], r["baseline_decode_every_frame"]
    return [(f"video index x real time ({r['video']['seconds']} s, {r['video']['size'][1]}p)", x,
             f"decode every frame {base['seconds']} s", r["speedup_vs_decoding_every_frame"], f">= {r['target_x_real_time']}x",
             x >= r["target_x_real_time"])]


def run_all(size: str, parts: list[str], work_dir: Path, clients: int) -> dict:
    """Run the chosen parts one after another (never concurrently: they would measure each other)."""
    work_dir.mkdir(parents=True, exist_ok=True)
    results, summary = {}, []
    if "index" in parts:
        results["index_throughput"] = index_throughput.run(size, work_dir)
        summary += _index_rows(results["index_throughput"])
    if "ann" in parts:
        # PQ training is the slow part at smoke size and says little there; full size compares all three
        results["ann"] = ann.run(size, ["auto", "hnsw", "ivfpq"] if size == "full" else ["auto", "hnsw"])
        summary += _ann_rows(results["ann"])
    if "serve" in parts:
        results["serve_load"] = serve_load.run(size, clients, work_dir)
        summary += _serve_rows(results["serve_load"], clients)
    if "ocr" in parts:
        results["ocr"] = ocr.run(size, work_dir)
        summary += _ocr_rows(results["ocr"])
    if "duplicates" in parts:
        results["duplicates"] = duplicates.run(size, ["quality", "scale"], work_dir)
        summary += _duplicates_rows(results["duplicates"])
    if "video" in parts:
        results["video_index"] = video_index.run(size, work_dir)
        summary += _video_rows(results["video_index"])
    print_table(f"summary ({size}; {machine()['cpu']}, {machine()['cores']} cores)",
                [(name, value, base, ratio, target, "yes" if met else "no") for name, value, base, ratio, target, met in summary],
                ("figure", "value", "same-run baseline", "ratio", "target (full size)", "met"))
    return {"size": size, "machine": machine(), "summary": [
        {"figure": s[0], "value": s[1], "baseline": s[2], "ratio": s[3], "target": s[4], "met": bool(s[5])} for s in summary
    ], "results": results}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", choices=("smoke", "full"), default="smoke")
    parser.add_argument("--only", default=",".join(PARTS), help=f"Comma-separated parts to run: {', '.join(PARTS)}.")
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--work-dir", type=Path, default=Path(os.environ.get("TMPDIR", "/tmp")) / "mmsearch-bench")
    parser.add_argument("--json", type=Path, default=None, help="Also write the combined JSON here.")
    args = parser.parse_args(argv)
    parts = [p.strip() for p in args.only.split(",") if p.strip()]
    unknown = sorted(set(parts) - set(PARTS))
    if unknown:
        parser.error(f"unknown part(s) {', '.join(unknown)}: choose from {', '.join(PARTS)}")
    emit_json(run_all(args.size, parts, args.work_dir, args.clients), args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
