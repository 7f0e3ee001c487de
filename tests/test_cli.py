"""The `mmsearch` command as a user types it."""

from __future__ import annotations

import json

from click.testing import CliRunner

from conftest import REPO, make_corpus
from mmsearch.cli import main
from mmsearch.encoders import TEST_MODEL


def invoke(*args, env=None):
    return CliRunner().invoke(main, [str(a) for a in args], env=env, catch_exceptions=False)


def test_index_search_info_roundtrip(tmp_path):
    root = tmp_path / "c"
    files = make_corpus(root)
    (root / "bad.jpg").write_bytes(b"garbage")
    idx = tmp_path / "idx"
    result = invoke("index", root, "--index-dir", idx, "--model", TEST_MODEL, "--workers", "1", "--batch-size", "4")
    assert result.exit_code == 0, result.output
    assert "9 added" in result.output and "1 failed" in result.output
    assert "bad.jpg" in result.output

    queries = tmp_path / "q.txt"
    queries.write_text("the sea\n\nbread\ntrain at night\n")
    result = invoke("search", "--queries-file", queries, "--target", "all", "-k", "4", "--index-dir", idx, "--json")
    assert result.exit_code == 0, result.output
    lines = [json.loads(line) for line in result.output.splitlines()]
    assert [line["query"] for line in lines] == ["the sea", "bread", "train at night"]
    for line in lines:
        assert len(line["hits"]) == 4
        assert set(line["hits"][0]) == {"id", "score", "modality", "path", "text", "metadata", "snippet", "cosine", "scale", "moments"}
        assert {h["scale"] for h in line["hits"]} == {"calibrated"}  # a merged list: one scale for both modalities
        scores = [h["score"] for h in line["hits"]]
        assert scores == sorted(scores, reverse=True)

    result = invoke("search", "--image", files["img1"], "-k", "1", "--index-dir", idx, "--json")
    assert json.loads(result.output)["hits"][0]["path"] == str(files["img1"])

    result = invoke("search", files["sea"].read_text(), "--target", "text", "--index-dir", idx)
    assert result.exit_code == 0 and "sea.txt" in result.output.splitlines()[1]

    result = invoke("info", "--index-dir", idx, "--json")
    facts = json.loads(result.output)
    assert facts["counts"] == {"image": 6, "text": 3} and facts["model"] == TEST_MODEL


def test_index_dir_from_environment(tmp_path):
    root = tmp_path / "c"
    make_corpus(root, n_images=2)
    env = {"MMSEARCH_INDEX_DIR": str(tmp_path / "envidx")}
    assert invoke("index", root, "--model", TEST_MODEL, "--workers", "0", env=env).exit_code == 0
    assert (tmp_path / "envidx" / "manifest.json").is_file()
    assert invoke("info", env=env).exit_code == 0


def test_errors_are_one_line_and_nonzero(tmp_path):
    result = invoke("search", "anything", "--index-dir", tmp_path / "missing")
    assert result.exit_code == 1
    assert result.output.strip().startswith("error: no index at") and len(result.output.strip().splitlines()) == 1

    result = invoke("index", tmp_path / "nowhere", "--index-dir", tmp_path / "i", "--model", TEST_MODEL)
    assert result.exit_code == 1 and "does not exist" in result.output and "Traceback" not in result.output

    result = invoke("index", tmp_path, "--index-dir", tmp_path / "i2", "--model", "no-such-arch")
    assert result.exit_code == 1 and result.output.startswith("error:") and "Traceback" not in result.output


def test_search_needs_exactly_one_query(tmp_path):
    root = tmp_path / "c"
    make_corpus(root, n_images=2)
    idx = tmp_path / "i"
    invoke("index", root, "--index-dir", idx, "--model", TEST_MODEL, "--workers", "0")
    result = invoke("search", "--index-dir", idx)
    assert result.exit_code == 1 and "exactly one" in result.output
    result = invoke("search", "--image", tmp_path / "c" / "notes" / "sea.txt", "--index-dir", idx)
    assert result.exit_code == 1 and "cannot read query image" in result.output


def test_output_piped_into_a_reader_that_leaves_early_is_not_an_error(indexed):
    """`mmsearch info | head -1` must not end in a BrokenPipeError traceback or a failure exit code."""
    import subprocess
    import sys

    _, _, index_dir, _ = indexed
    cli = subprocess.Popen(
        [sys.executable, "-m", "mmsearch", "info", "--index-dir", str(index_dir)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=REPO,
    )
    cli.stdout.close()  # the reader goes away before the command writes anything
    stderr = cli.stderr.read().decode()
    assert cli.wait(timeout=60) == 0, stderr
    assert "Error" not in stderr and "Traceback" not in stderr


def test_the_command_ends_promptly_with_its_output_whole_and_its_exit_code(indexed):
    """The entry point skips the interpreter's teardown after a successful command (~1.3 s with torch
    loaded); the output must still arrive whole, and a failure must still exit non-zero."""
    import json as jsonlib
    import subprocess
    import sys

    _, _, index_dir, _ = indexed
    ok = subprocess.run([sys.executable, "-m", "mmsearch", "info", "--json", "--index-dir", str(index_dir)],
                        capture_output=True, text=True, cwd=REPO, timeout=120)
    assert ok.returncode == 0, ok.stderr
    assert jsonlib.loads(ok.stdout)["counts"]  # the whole JSON document was flushed before the process ended
    missing = subprocess.run([sys.executable, "-m", "mmsearch", "info", "--index-dir", str(index_dir / "nope")],
                             capture_output=True, text=True, cwd=REPO, timeout=120)
    assert missing.returncode == 1 and missing.stderr.startswith("error: ")
