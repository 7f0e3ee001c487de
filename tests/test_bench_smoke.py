"""Each benchmark runs end to end at smoke size and its headline comparison holds."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from bench.common import REPO

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def smoke(tmp_path_factory) -> dict:
    """One run of the single command that runs every benchmark (`python -m bench`), at smoke size."""
    tmp = tmp_path_factory.mktemp("bench")
    out = tmp / "all.json"
    cmd = [sys.executable, "-m", "bench", "--size", "smoke", "--clients", "4", "--work-dir", str(tmp / "work"), "--json", str(out)]
    done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=2400)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "summary (smoke" in done.stdout
    return json.loads(out.read_text())


def test_one_command_summarises_every_benchmark_beside_its_baseline(smoke):
    figures = [row["figure"] for row in smoke["summary"]]
    assert figures[0] == "index images/s" and any(f.startswith("ann auto:") for f in figures)
    assert any(f.startswith("serve 10000 items") for f in figures)
    assert all(row["baseline"] not in (None, "") and "met" in row for row in smoke["summary"])


def test_index_throughput_bench(smoke):
    result = smoke["results"]["index_throughput"]
    # At smoke size the end-to-end figure is dominated by process start-up and model load, which the plain
    # loop does not pay, so only the full-size run compares speed (bench/README.md). What smoke size can
    # check: the run indexes every photo, reports both figures, and memory does not grow with the folder.
    assert result["index"]["images"] == 64 and "64 added" in result["index"]["output"]
    assert "192 added" in result["index_big"]["output"]
    assert result["plain_loop"]["images_per_s"] > 0 and result["speedup_vs_plain_loop"] > 0
    assert result["rss_growth_big_vs_n"] < 1.3


def test_ann_bench(smoke):
    result = smoke["results"]["ann"]
    rows = result["results"]
    tuned = next(r for name, r in rows.items() if name.startswith("auto:"))
    assert tuned["recall@10"] >= 0.9
    assert tuned["p50_ms"] < rows["faiss Flat (exact)"]["p50_ms"]


def test_serve_load_bench(smoke):
    result = smoke["results"]["serve_load"]
    load = result["load_4_clients"]
    assert load["errors"] == 0 and load["requests"] == 160
    assert load["server_cpu_ms_per_request"] > 0 and load["client_cpu_ms_per_request"] > 0  # the CPU budget is reported
    assert result["baseline_1_client"]["errors"] == 0


def test_ocr_bench(smoke):
    result = smoke["results"]["ocr"]
    assert result["engine"]["images"] == 8 and result["engine"]["recall"] >= 0.8
    index = result["index"]
    assert index["plain"]["images"] == index["ocr"]["images"] == 8
    assert index["ocr"]["images_per_s"] > 0 and index["ocr_cost_x"] > 0  # both runs of the same folder, same run


def test_duplicates_bench(smoke):
    result = smoke["results"]["duplicates"]
    quality = result["quality"]
    assert quality["recall"] >= 0.95 and quality["false_share"] <= 0.01 and quality["best_copy_is_original"] == 1.0
    assert quality["embeddings_alone"]["recall_at_1pct_false"] < quality["recall"]  # the baseline is beside it
    scale = result["scale"][0]
    assert scale["lists"] > 1 and scale["planted_recall"] >= 0.95 and scale["all_pairs_s_extrapolated"] > 0
    assert scale["ivf_knn_index"].startswith("IVF") and scale["ivf_knn_s"] > 0  # the first version, beside it


def test_video_index_bench(smoke):
    result = smoke["results"]["video_index"]
    # smoke size: a 20 s clip, so the figure is model load and start-up; full size measures speed (bench/README.md)
    assert "0 failed" in result["index"]["output"] and result["index"]["x_real_time"] > 0
    assert result["sampling_only"]["frames"] >= 2  # the cut between the two scenes is found
    assert result["baseline_decode_every_frame"]["frames"] == 240
    assert any(row["figure"].startswith("video index x real time") for row in smoke["summary"])
