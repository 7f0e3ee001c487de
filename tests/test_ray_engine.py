"""`mmsearch index --engine ray`: shards embedded by Ray actors of a local cluster the tests start.

The index a Ray run builds must be the one a local run builds: same items under the same ids, the same
vectors, the same failures; and a second run must be incremental."""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import sys

import numpy as np
import pytest
from click.testing import CliRunner

from conftest import REPO, make_corpus, run_index
from indexer.pipeline import index_source
from indexer.ray_engine import RayEngine, plan_actors, shard_bounds
from mmsearch.cli import main
from mmsearch.encoders import TEST_MODEL
from mmsearch.errors import EngineError
from mmsearch.storage.indexdir import IndexDir

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")


@pytest.fixture(scope="module")
def ray_cluster():
    """A 2-CPU Ray cluster started by this process (its workers see this checkout's code); -> its address."""
    import ray

    ray.init(num_cpus=2, include_dashboard=False, object_store_memory=256 * 2**20, logging_level=logging.WARNING,
             log_to_driver=False)
    try:
        yield ray.get_runtime_context().gcs_address
    finally:
        ray.shutdown()


def _corpus_with_broken_image(root):
    files = make_corpus(root)
    (root / "broken.jpg").write_bytes(b"not an image at all")
    return files


def _stored(index_dir) -> dict[str, tuple[int, np.ndarray]]:
    """key -> (id, vector) as the store holds them."""
    store = IndexDir(index_dir).open_store()
    try:
        records = store.all_items()
        vectors = store.vectors_for([r.id for r in records])
        return {r.key: (r.id, vectors[r.id]) for r in records}
    finally:
        store.close()


def _run_on_ray(source, index_dir, engine: RayEngine):
    return index_source(source, index_dir, engine.load_encoder, embed_stage=engine.embed, model_spec=TEST_MODEL,
                        default_model=TEST_MODEL, batch_size=4, workers=0, progress=False)


@pytest.mark.ray
def test_ray_index_equals_local_index_and_reruns_incrementally(tmp_path, ray_cluster, tiny_encoder):
    root = tmp_path / "corpus"
    files = _corpus_with_broken_image(root)
    local = run_index(root, tmp_path / "local", tiny_encoder)

    engine = RayEngine(device="cpu", batch_size=4)
    report = _run_on_ray(root, tmp_path / "ray", engine)
    assert len(engine.actors) == 2  # one per CPU slot of the 2-CPU cluster
    assert (report.added, report.counts) == (9, {"image": 6, "text": 3})
    assert report.failures == local.failures == [(str(root / "broken.jpg"), "not a readable image (unknown or corrupt format)")]

    by_local, by_ray = _stored(tmp_path / "local"), _stored(tmp_path / "ray")
    assert {k: i for k, (i, _) in by_ray.items()} == {k: i for k, (i, _) in by_local.items()}  # same items, same ids
    for key, (_, vector) in by_ray.items():
        assert float(vector @ by_local[key][1]) > 0.999, key
    store = IndexDir(tmp_path / "ray").open_store()
    try:
        assert store.failures() == IndexDir(tmp_path / "local").open_store().failures()
    finally:
        store.close()

    with engine:  # the same actors, the model already loaded
        again = _run_on_ray(root, tmp_path / "ray", engine)
        assert (again.embedded, again.unchanged, again.removed) == (0, 9, 0)
        assert again.failures == report.failures  # the unreadable file is retried and reported again
        assert {k: i for k, (i, _) in _stored(tmp_path / "ray").items()} == {k: i for k, (i, _) in by_ray.items()}

        files["sea"].write_text("A quiet harbour at dawn.", encoding="utf-8")
        changed = _run_on_ray(root, tmp_path / "ray", engine)
    assert not engine.actors
    assert (changed.added, changed.reembedded, changed.unchanged) == (0, 1, 8)
    sea_id, sea_vector = _stored(tmp_path / "ray")[str(files["sea"])]
    assert sea_id == by_ray[str(files["sea"])][0]  # re-embedded under its old id
    assert float(sea_vector @ tiny_encoder.encode_texts(["A quiet harbour at dawn."])[0]) > 0.999


@pytest.mark.ray
@pytest.mark.slow
def test_cli_engine_ray_with_address(tmp_path, ray_cluster):
    """What a user types against a running cluster: a separate driver process connects by address."""
    root = tmp_path / "corpus"
    files = _corpus_with_broken_image(root)
    index_dir = tmp_path / "idx"
    command = [sys.executable, "-m", "mmsearch", "index", str(root), "--index-dir", str(index_dir), "--model", TEST_MODEL,
               "--batch-size", "4", "--engine", "ray", "--address", ray_cluster]
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    assert "9 added" in done.stdout and "1 failed" in done.stdout and "index holds 6 images, 3 texts" in done.stdout
    assert f"skipped {root / 'broken.jpg'}: not a readable image" in done.stderr

    bread = files["bread"].read_text()  # the tiny model is random: only a text's own words find it for sure
    result = CliRunner().invoke(main, ["search", bread, "--target", "text", "-k", "1", "--index-dir", str(index_dir)])
    assert result.exit_code == 0 and "bread.txt" in result.output


@pytest.mark.ray
def test_address_that_points_nowhere_is_one_clear_error(tmp_path):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # free once closed: nothing listens there
    root = tmp_path / "corpus"
    make_corpus(root, n_images=1)
    result = CliRunner().invoke(main, ["index", str(root), "--index-dir", str(tmp_path / "idx"), "--model", TEST_MODEL,
                                       "--engine", "ray", "--address", f"127.0.0.1:{port}"])
    assert result.exit_code == 1
    assert result.output.strip().splitlines() == [
        f"error: no Ray cluster answers at 127.0.0.1:{port} (Connection refused): start one with `ray start --head` or fix --address"
    ]
    with pytest.raises(EngineError, match="not HOST:PORT"):
        RayEngine("nowhere").load_encoder(TEST_MODEL)


def test_address_without_ray_engine_is_a_usage_error(tmp_path):
    result = CliRunner().invoke(main, ["index", str(tmp_path), "--address", "127.0.0.1:6379"])
    assert result.exit_code == 2 and "--address needs --engine ray" in result.output


def test_shards_cover_every_item_once_in_whole_batches():
    for count, actors, batch in [(1, 1, 32), (10, 2, 4), (1000, 3, 32), (100_000, 8, 64), (33, 16, 8)]:
        bounds = shard_bounds(count, actors, batch)
        assert [start for start, _ in bounds] == [0] + [stop for _, stop in bounds[:-1]] and bounds[-1][1] == count
        assert all((stop - start) % batch == 0 for start, stop in bounds[:-1])
        assert max(stop - start for start, stop in bounds) <= 16 * batch
    assert len(shard_bounds(1000, 3, 32)) >= 3 * 4 - 1  # several shards per actor, so fast actors take more


def test_actor_plan_one_per_gpu_else_one_per_cpu_slot():
    assert plan_actors({"CPU": 8.0, "GPU": 2.0}, "auto", workers=3) == plan_actors({"CPU": 8.0, "GPU": 2.0}, "cuda", 3)
    gpu = plan_actors({"CPU": 8.0, "GPU": 2.0}, "auto", workers=3)
    assert (gpu.count, gpu.num_gpus, gpu.num_cpus, gpu.device, gpu.decode_workers) == (2, 1, 4, "cuda", 3)
    cpu = plan_actors({"CPU": 6.0, "GPU": 2.0}, "cpu", workers=3)
    assert (cpu.count, cpu.num_gpus, cpu.num_cpus, cpu.threads, cpu.decode_workers) == (6, 0, 1, 1, 0)
    with pytest.raises(EngineError, match="no free GPU"):
        plan_actors({"CPU": 4.0}, "cuda", workers=1)


NO_RAY_CHECK = """
import sys
from pathlib import Path
from click.testing import CliRunner
sys.path.insert(0, "tests")
from conftest import make_corpus
from mmsearch.cli import main
root = Path(sys.argv[1])
make_corpus(root, n_images=2)
result = CliRunner().invoke(main, ["index", str(root), "--index-dir", str(root / ".idx"), "--model", "mmsearch-tiny-random",
                                   "--workers", "0"])
assert result.exit_code == 0, result.output
print("ray imported" if "ray" in sys.modules else "no ray")
"""


def test_local_engine_stays_the_default_and_never_imports_ray(tmp_path):
    done = subprocess.run([sys.executable, "-c", NO_RAY_CHECK, str(tmp_path / "c")], cwd=REPO, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "no ray"
