"""The query path stands on its own: serving or running a query never imports the indexer, and a one-shot
text search on the default model's cached compiled graphs imports no torch (the layers are in .importlinter).

Each check runs in a fresh interpreter: the pytest process has long since imported everything."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys

import pytest

from conftest import REPO

needs_openvino = pytest.mark.skipif(importlib.util.find_spec("openvino") is None, reason="openvino is not installed")
HEAVY = ("torch", "torchvision", "timm", "open_clip", "transformers")


def _modules_after(code: str, env: dict | None = None, timeout: float = 300) -> dict:
    """Run ``code`` in a fresh interpreter, then report which heavy and indexer modules it had imported."""
    report = f"""
import json, sys
{code}
print(json.dumps({{"loaded": sorted(m for m in sys.modules if m.split(".")[0] in {HEAVY!r} + ("indexer",) and "." not in m)}}))
"""
    child = subprocess.run([sys.executable, "-c", report], cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)
    assert child.returncode == 0, child.stderr[-3000:]
    return json.loads(child.stdout.strip().splitlines()[-1])


def test_the_query_service_imports_neither_the_indexer_nor_torch():
    loaded = _modules_after("import mmsearch.search, mmsearch.query, mmsearch.api.app, mmsearch.encoders.registry")["loaded"]
    assert loaded == []


@needs_openvino
@pytest.mark.slow
def test_a_one_shot_text_search_on_cached_graphs_imports_neither_torch_nor_the_indexer(tmp_path):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for name in ("food/red-apple.png", "food/watermelon.png", "animals/dog.png", "vehicles/automobile.png"):
        shutil.copy(REPO / "data" / "sample" / name, corpus / name.replace("/", "-"))
    env = dict(os.environ, MMSEARCH_CACHE_DIR=str(tmp_path / "cache"), MMSEARCH_IMAGE_BACKEND="auto", MMSEARCH_TEXT_BACKEND="auto")
    index_dir = tmp_path / "index"
    # the first run builds the model and caches its compiled graphs (and their probe references)
    indexed = subprocess.run([sys.executable, "-m", "mmsearch", "index", str(corpus), "--index-dir", str(index_dir), "--workers", "0"],
                             cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    assert indexed.returncode == 0, indexed.stderr[-3000:]
    facts = _modules_after(f"""
from click.testing import CliRunner
from mmsearch.cli import main
result = CliRunner().invoke(main, ["search", "a red apple", "--index-dir", {str(index_dir)!r}, "-k", "2", "--json"])
assert result.exit_code == 0, result.output
print(result.output)
""", env=env)
    assert facts["loaded"] == []
    search = subprocess.run([sys.executable, "-m", "mmsearch", "search", "a red apple", "--index-dir", str(index_dir), "-k", "1", "--json"],
                            cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert json.loads(search.stdout)["hits"][0]["path"].endswith("red-apple.png")
