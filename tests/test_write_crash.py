"""A server killed with SIGKILL in the middle of bulk writes loses no acknowledged write and leaves no torn
index: after each kill the index verifies (at most stale vector files, which the restart republishes), the
restarted server serves every acknowledged item, and `mmsearch verify` then finds nothing wrong."""

from __future__ import annotations

import base64
import io
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time

import httpx
import pytest
from click.testing import CliRunner

from conftest import REPO, pattern_image, run_index
from mmsearch.cli import main
from mmsearch.client import Client
from mmsearch.storage.indexdir import IndexDir
from mmsearch.verify import verify_index

pytestmark = pytest.mark.slow
KILLS = 1  # each cycle restarts the server (seconds on an idle machine, far more on a loaded one)
AFTER_KILL_OK = {"stale-vectors", "stray-file"}
CHILD_ENV = {**os.environ, "MMSEARCH_THREADS": "1", "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO),
             "MMSEARCH_IMAGE_BACKEND": "torch", "MMSEARCH_TEXT_BACKEND": "torch"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start_server(index_dir, port: int) -> subprocess.Popen:
    log = open(index_dir.parent / f"server-{port}.log", "wb")  # a file, not a pipe nobody drains
    proc = subprocess.Popen([sys.executable, "-m", "mmsearch", "serve", "--index-dir", str(index_dir), "--port", str(port)],
                            env=CHILD_ENV, cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
    log.close()
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            tail = (index_dir.parent / f"server-{port}.log").read_text(errors="replace")[-2000:]
            raise RuntimeError(f"the server exited: {tail}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            time.sleep(0.2)
    proc.kill()
    raise RuntimeError("the server did not start within 180 s")


def _png(seed: int) -> str:
    buf = io.BytesIO()
    pattern_image(seed, (32, 32)).save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()


class BulkWriter(threading.Thread):
    """Sends bulk requests of new keys until the server goes away; records every acknowledged row."""

    def __init__(self, url: str, prefix: str, acked: set[str]) -> None:
        super().__init__(daemon=True)
        self.url, self.prefix, self.acked = url, prefix, acked
        self.sent = 0

    def run(self) -> None:
        with Client(self.url, timeout=30) as api:
            while True:
                rows = []
                for _ in range(25):
                    self.sent += 1
                    row = {"key": f"{self.prefix}-{self.sent}", "text": f"item {self.prefix} {self.sent}", "metadata": {"n": self.sent}}
                    if self.sent % 5 == 0:
                        row["image_b64"] = _png(self.sent)
                    rows.append(row)
                try:
                    result = api.bulk(rows)
                except (httpx.HTTPError, OSError):
                    return  # killed
                for row in result.rows:
                    if row["status"] in ("created", "updated", "unchanged"):
                        self.acked.add(row["key"])


def test_sigkill_during_bulk_writes_loses_no_acknowledged_write(tmp_path, corpus, tiny_encoder):
    root, _ = corpus
    index_dir = tmp_path / "index"
    run_index(root, index_dir, tiny_encoder)
    rng = random.Random(16)
    acked: set[str] = set()
    for kill in range(KILLS):
        port = _free_port()
        server = _start_server(index_dir, port)
        writers = [BulkWriter(f"http://127.0.0.1:{port}", f"k{kill}w{n}", acked) for n in range(2)]
        before = len(acked)
        for w in writers:
            w.start()
        deadline = time.monotonic() + 60
        while len(acked) < before + 50 and time.monotonic() < deadline:  # well into the writing
            time.sleep(0.05)
        time.sleep(rng.uniform(0.0, 1.0))
        os.kill(server.pid, signal.SIGKILL)
        server.wait(30)
        for w in writers:
            w.join(30)
        assert len(acked) > before, "no write was acknowledged before the kill"

        report = verify_index(index_dir)  # torn? at most vectors older than the database
        assert {p.kind for p in report.problems} <= AFTER_KILL_OK, report.to_dict()
        store = IndexDir(index_dir).open_store()
        try:
            stored = store.get_by_keys(f"api:{key}/text" for key in acked)
        finally:
            store.close()
        assert len(stored) == len(acked), f"{len(acked) - len(stored)} acknowledged writes lost"

    port = _free_port()
    server = _start_server(index_dir, port)  # the restart publishes what the killed writer had committed
    try:
        with Client(f"http://127.0.0.1:{port}") as api:
            for key in rng.sample(sorted(acked), 20):
                n = int(key.rsplit("-", 1)[1])
                assert api.get(key)["items"][0]["metadata"]["n"] == n
            probe = sorted(acked)[0]
            assert api.search(f"item {probe.rsplit('-', 1)[0]} {probe.rsplit('-', 1)[1]}", target="text", k=1)[0]["metadata"]["key"] == probe
    finally:
        server.terminate()
        server.wait(30)
    result = CliRunner().invoke(main, ["verify", "--index-dir", str(index_dir)])
    assert result.exit_code == 0, result.output
