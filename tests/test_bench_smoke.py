"""Each benchmark runs end to end at smoke size and its headline comparison holds."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from bench.common import REPO

pytestmark = pytest.mark.slow


def run_bench(module: str, tmp_path, *args: str) -> dict:
    out = tmp_path / f"{module}.json"
    cmd = [sys.executable, "-m", f"bench.{module}", "--size", "smoke", "--json", str(out), *args]
    done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=1800)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(out.read_text())


def test_index_throughput_bench(tmp_path):
    result = run_bench("index_throughput", tmp_path, "--work-dir", str(tmp_path / "work"))
    # At smoke size the end-to-end figure is dominated by process start-up and model load, which the plain
    # loop does not pay, so only the full-size run compares speed (bench/README.md). What smoke size can
    # check: the run indexes every photo, reports both figures, and memory does not grow with the folder.
    assert result["index"]["images"] == 64 and "64 added" in result["index"]["output"]
    assert "192 added" in result["index_big"]["output"]
    assert result["plain_loop"]["images_per_s"] > 0 and result["speedup_vs_plain_loop"] > 0
    assert result["rss_growth_big_vs_n"] < 1.3


def test_ann_bench(tmp_path):
    result = run_bench("ann", tmp_path, "--types", "auto,hnsw")
    rows = result["results"]
    tuned = next(r for name, r in rows.items() if name.startswith("auto:"))
    assert tuned["recall@10"] >= 0.9
    assert tuned["p50_ms"] < rows["faiss Flat (exact)"]["p50_ms"]


def test_serve_load_bench(tmp_path):
    result = run_bench("serve_load", tmp_path, "--work-dir", str(tmp_path / "work"), "--clients", "4")
    load = result["load_4_clients"]
    assert load["errors"] == 0 and load["requests"] == 160
    assert result["baseline_1_client"]["errors"] == 0
