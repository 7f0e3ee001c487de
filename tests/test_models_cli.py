"""`mmsearch models` and `mmsearch models import`: open_clip checkpoints found in, and put into, the local
caches exactly where open_clip 3.x reads ARCH:TAG (mmsearch.encoders.openclip_cache), without network."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from conftest import REPO, pattern_image
from mmsearch.cli import main
from mmsearch.encoders import openclip_cache as cache

TAG = "ViT-B-32:laion2b_s34b_b79k"
REPO_ID = "laion/CLIP-ViT-B-32-laion2B-s34B-b79K"


def _fake_safetensors(path: Path) -> Path:
    header = json.dumps({"w": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}).encode()
    path.write_bytes(len(header).to_bytes(8, "little") + header + b"\0\0\0\0")
    return path


def test_open_clip_reads_a_tag_from_its_hub_repo_safetensors_first():
    target = cache.hub_target("ViT-B-32", "laion2b_s34b_b79k")
    assert target.repo_id == REPO_ID
    assert target.filenames == ("open_clip_model.safetensors", "open_clip_pytorch_model.bin")
    with pytest.raises(Exception, match="its tags: .*laion2b_s34b_b79k"):
        cache.hub_target("ViT-B-32", "no_such_tag")


def test_import_writes_the_hub_cache_layout_open_clip_resolves(tmp_path):
    from huggingface_hub import try_to_load_from_cache

    hub = tmp_path / "hub"
    source = _fake_safetensors(tmp_path / "ckpt.safetensors")
    link = cache.import_checkpoint(source, "ViT-B-32", "laion2b_s34b_b79k", cache=hub, check=False)
    repo = hub / "models--laion--CLIP-ViT-B-32-laion2B-s34B-b79K"
    commit = (repo / "refs" / "main").read_text()
    assert link == repo / "snapshots" / commit / "open_clip_model.safetensors" and link.is_symlink()
    assert link.read_bytes() == source.read_bytes() and link.resolve().parent == (repo / "blobs").resolve()
    assert try_to_load_from_cache(REPO_ID, "open_clip_model.safetensors", cache_dir=str(hub)) == str(link)
    assert cache.cached_weights("ViT-B-32", "laion2b_s34b_b79k", hub) == link
    found = {m.spec: m for m in cache.find_cached_models(hub, tmp_path / "no-clip-cache")}
    assert TAG in found and found[TAG].path == link

    again = _fake_safetensors(tmp_path / "other.safetensors")
    again.write_bytes(again.read_bytes() + b"\0")
    with pytest.raises(Exception, match="already cached"):
        cache.import_checkpoint(again, "ViT-B-32", "laion2b_s34b_b79k", cache=hub, check=False)
    torch_file = tmp_path / "ckpt.bin"
    torch_file.write_bytes(b"PK\x03\x04 a torch zip")
    with pytest.raises(Exception, match="prefers it"):  # open_clip would keep loading the safetensors file
        cache.import_checkpoint(torch_file, "ViT-B-32", "laion2b_s34b_b79k", cache=hub, check=False)
    replaced = cache.import_checkpoint(torch_file, "ViT-B-32", "laion2b_s34b_b79k", cache=hub, check=False, force=True)
    assert replaced.name == "open_clip_pytorch_model.bin" and not link.exists()
    assert cache.cached_weights("ViT-B-32", "laion2b_s34b_b79k", hub) == replaced


def test_import_refuses_a_file_that_is_not_that_architecture(tmp_path):
    source = _fake_safetensors(tmp_path / "ckpt.safetensors")
    with pytest.raises(Exception, match="not a checkpoint of RN50"):
        cache.import_checkpoint(source, "RN50", "openai", cache=tmp_path / "hub", check=True)
    assert not (tmp_path / "hub").exists() or not any((tmp_path / "hub").rglob("*.safetensors"))


def test_models_lists_builtin_and_cached_models(tmp_path, monkeypatch):
    monkeypatch.setattr(cache, "hub_cache_dir", lambda: tmp_path / "hub")
    monkeypatch.setattr(cache, "openclip_cache_dir", lambda: tmp_path / "clip")
    runner = CliRunner()
    empty = runner.invoke(main, ["models"], catch_exceptions=False)
    assert empty.exit_code == 0 and "mmsearch-lite" in empty.output and "mmsearch models import" in empty.output
    source = _fake_safetensors(tmp_path / "ckpt.safetensors")
    imported = runner.invoke(main, ["models", "import", str(source), "--as", TAG, "--no-check"], catch_exceptions=False)
    assert imported.exit_code == 0 and f"as {TAG}" in imported.output
    listed = json.loads(runner.invoke(main, ["models", "--json"], catch_exceptions=False).output)
    assert [m["spec"] for m in listed["builtin"]][:2] == ["mmsearch-lite", "mmsearch-lite:bridge"]
    assert listed["builtin"][0]["calibration"] == "fitted"  # the shipped calibration of the shipped weights
    assert [m["spec"] for m in listed["open_clip"]] == [TAG]
    bad = runner.invoke(main, ["models", "import", str(source), "--as", "ViT-B-32"])
    assert bad.exit_code != 0 and "ARCH:TAG" in bad.output


@pytest.mark.slow
def test_a_random_weight_vit_b_32_imported_offline_indexes_and_searches(tmp_path):
    """The real ViT-B-32 architecture with random weights, saved as a checkpoint, imported as
    ViT-B-32:laion2b_s34b_b79k and used by `index` and `search` with HF_HUB_OFFLINE=1 (no network).
    The slowest test of the area (three processes each load a 151M-parameter model): ~2 min on the shared
    2-core machine under load, where the rest of this file takes seconds."""
    import open_clip
    import torch
    from safetensors.torch import save_file

    torch.manual_seed(0)
    model = open_clip.create_model("ViT-B-32", pretrained=None)
    checkpoint = tmp_path / "vit-b-32-random.safetensors"
    save_file({k: v.half().contiguous() for k, v in model.state_dict().items()}, str(checkpoint))  # half: a 300 MB file, not 600
    del model
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for i in range(3):
        pattern_image(i).save(corpus / f"picture{i}.png")
    (corpus / "note.txt").write_text("A red apple on a wooden table.", encoding="utf-8")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(tmp_path / "hub"), "MMSEARCH_CACHE_DIR": str(tmp_path / "cache"),
           "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "MMSEARCH_THREADS": "1"}

    def mmsearch(*args: str) -> str:
        done = subprocess.run([sys.executable, "-m", "mmsearch", *args], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-2000:]
        return done.stdout

    # --no-check: loading it into the architecture is what `index` does next (the check is tested above)
    assert f"as {TAG}" in mmsearch("models", "import", str(checkpoint), "--as", TAG, "--no-check")
    assert [m.spec for m in cache.find_cached_models(tmp_path / "hub", tmp_path / "clip")] == [TAG]
    indexed = mmsearch("index", str(corpus), "--index-dir", "idx", "--model", TAG, "--workers", "0")
    assert "3 images, 1 texts" in indexed
    hits = [json.loads(line) for line in mmsearch("search", "a red apple", "--target", "all", "--index-dir", "idx", "--json").splitlines()]
    assert len(hits[0]["hits"]) == 4 and {h["modality"] for h in hits[0]["hits"]} == {"image", "text"}
