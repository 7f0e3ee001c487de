"""Crash safety: `mmsearch index` killed with SIGKILL at random moments, and readers during re-index runs.

After every kill the index must open, every FAISS id must have its metadata row and every row its
vector, searches must work, and a final uninterrupted run must leave exactly the files on disk
indexed once each. A reader querying in a loop while index runs swap in new versions must never
fail and never join a vector to another item's metadata.
"""

from __future__ import annotations

import os
import random
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from conftest import REPO, pattern_image
from mmsearch.hashing import sha256_file
from mmsearch.storage.indexdir import IndexDir
from mmsearch.search import Searcher
from mmsearch.storage.store import MODALITIES
from mmsearch.verify import verify_index

KILLS_WANTED = 20
MAX_ATTEMPTS = 60
RUN_TIMEOUT = 120
CHILD_ENV = {**os.environ, "MMSEARCH_THREADS": "1", "OMP_NUM_THREADS": "1"}
# Problems that a kill may legitimately leave for the next run (or a reader) to resolve.
AFTER_KILL_OK = {"stale-vectors", "stray-file"}


class Corpus:
    """A folder that changes between runs: new images and texts, deletions, renames, rewrites."""

    def __init__(self, root: Path, seed: int) -> None:
        self.root = root
        self.rng = random.Random(seed)
        self.serial = 0
        root.mkdir(parents=True, exist_ok=True)
        (root / "texts").mkdir(exist_ok=True)

    def files(self) -> list[Path]:
        return sorted(p for p in self.root.rglob("*") if p.is_file())

    def add(self, images: int, texts: int) -> None:
        for _ in range(images):
            self.serial += 1
            pattern_image(10_000 + self.serial, (48, 40)).save(self.root / f"img{self.serial:05d}.png")
        for _ in range(texts):
            self.serial += 1
            (self.root / "texts" / f"note{self.serial:05d}.txt").write_text(
                f"note number {self.serial} about {self.rng.choice(['ships', 'bread', 'trains', 'rain', 'owls'])}", encoding="utf-8")

    def mutate(self, *, rewrite: bool) -> None:
        files = self.files()
        newest = max(files, key=lambda p: p.name)
        for path in {newest, *self.rng.sample(files, min(4, len(files)))}:  # the newest too: tempts id reuse
            path.unlink()
        for path in self.rng.sample(self.files(), 4):
            path.rename(path.with_name("moved_" + path.name))
        if rewrite:
            for path in self.rng.sample([p for p in self.files() if p.suffix == ".png"], 3):
                self.serial += 1
                pattern_image(10_000 + self.serial, (48, 40)).save(path)

    def expected_keys(self) -> set[str]:
        return {str(p.resolve()) for p in self.files()}


def start_index(corpus: Corpus, index_dir: Path, workers: int = 0) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "mmsearch", "index", str(corpus.root), "--index-dir", str(index_dir),
         "--model", "mmsearch-tiny-random", "--workers", str(workers), "--batch-size", "2"],
        cwd=REPO, env=CHILD_ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        start_new_session=True,  # its own process group: the kill reaches every process it started
    )


def latest_run(index_dir: Path) -> tuple[int, float | None]:
    """(id, finished_at) of the newest run row, read without disturbing the writer (WAL)."""
    db = index_dir / "items.sqlite"
    if not db.exists():
        return 0, None
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
    try:
        row = conn.execute("SELECT id, finished_at, started_at FROM runs ORDER BY id DESC LIMIT 1").fetchone()
    except sqlite3.OperationalError:  # the schema is not there yet
        return 0, None
    finally:
        conn.close()
    return (row[0], row[1]) if row else (0, None)


def wait_for_new_run(proc: subprocess.Popen, index_dir: Path, after: int, limit: float) -> bool:
    """Wait until the child has started a run (scan done, model loaded); False if it exited first."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline and proc.poll() is None:
        if latest_run(index_dir)[0] > after:
            return True
        time.sleep(0.02)
    return False


def run_to_end(corpus: Corpus, index_dir: Path) -> tuple[float, str]:
    started = time.monotonic()
    proc = start_index(corpus, index_dir)
    out, err = proc.communicate(timeout=RUN_TIMEOUT)
    assert proc.returncode == 0, err
    return time.monotonic() - started, out


def assert_index_holds_the_folder(index_dir: Path, corpus: Corpus) -> None:
    """Every file of the corpus is in the index with its current content, once; nothing else is."""
    store = IndexDir(index_dir).open_store()
    try:
        items = store.all_items()
        by_key = {r.key: r for r in items}
        assert set(by_key) == corpus.expected_keys(), "files lost or left over"
        assert len(items) == len(by_key)
        for path in corpus.files():
            assert by_key[str(path.resolve())].sha256 == sha256_file(str(path)), f"{path.name} indexed with stale content"
    finally:
        store.close()


def check_consistent(index_dir: Path, encoder, allowed: set[str]) -> dict:
    """The invariants a reader relies on; -> facts about the state the index is in."""
    idx = IndexDir(index_dir)
    searcher = Searcher(index_dir, encoder, reload_interval=0)
    try:
        items = searcher.store.all_items()
        assert len({r.key for r in items}) == len(items), "two rows for one file"
        for modality in MODALITIES:
            rows = {r.id for r in items if r.modality == modality}
            in_faiss = searcher._snapshot.indexes[modality].ids().tolist()
            assert len(in_faiss) == len(set(in_faiss)), f"{modality}: an id is in FAISS twice"
            assert set(in_faiss) == rows, f"{modality}: FAISS ids and metadata rows differ"
            stored = searcher.store.vectors_for(sorted(rows))
            assert set(stored) == rows, f"{modality}: rows without a stored vector"
        hits = searcher.search_text("a note about trains", "all", k=5)
        assert len(hits) == min(5, len(items)) and all(h.path for h in hits)
        manifest = idx.read_manifest()
        facts = {"items": len(items), "stale": manifest.generation != searcher.store.generation(),
                 "unfinished_run": (searcher.store.last_run() or {}).get("finished_at") is None}
    finally:
        searcher.close()
    problems = verify_index(index_dir).problems
    assert {p.kind for p in problems} <= allowed, [f"{p.kind}: {p.detail}" for p in problems]
    return facts


@pytest.mark.slow
def test_index_survives_repeated_sigkill(tmp_path, tiny_encoder, record_property):
    rng = random.Random(1234)
    corpus = Corpus(tmp_path / "corpus", seed=7)
    index_dir = tmp_path / "index"
    corpus.add(images=30, texts=10)
    startup, _ = run_to_end(corpus, index_dir)
    kills, attempts, landed = 0, 0, Counter()
    while kills < KILLS_WANTED and attempts < MAX_ATTEMPTS:
        attempts += 1
        corpus.add(images=40, texts=8)
        corpus.mutate(rewrite=attempts % 2 == 0)
        before = latest_run(index_dir)[0]
        proc = start_index(corpus, index_dir, workers=int(attempts % 3 == 0))  # some runs decode in a worker process
        if attempts % 2 == 1:  # any moment from launch on: imports, scan, model load, index creation
            time.sleep(rng.uniform(0.1, startup))
        elif wait_for_new_run(proc, index_dir, before, RUN_TIMEOUT):  # a random moment of the run proper
            time.sleep(rng.uniform(0.0, 1.5))
        if proc.poll() is not None:  # finished before the kill: a complete run, fine, but not a kill
            assert proc.wait() == 0, proc.stderr.read()
            proc.stdout.close(), proc.stderr.close()
            continue
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
        proc.stdout.close(), proc.stderr.close()
        kills += 1
        facts = check_consistent(index_dir, tiny_encoder, AFTER_KILL_OK)
        landed["while writing" if facts["stale"] else "mid-run, before writing" if facts["unfinished_run"] else "before the run started"] += 1
    record_property("sigkills", kills)
    print(f"\nSIGKILLs: {kills} in {attempts} runs; landed: {dict(landed)}")
    assert kills >= KILLS_WANTED, f"only {kills} of {attempts} runs were still going when killed"
    assert landed["while writing"] >= 3, landed  # the kills really did hit runs in the middle of writing

    _, out = run_to_end(corpus, index_dir)
    check_consistent(index_dir, tiny_encoder, set())  # complete: no problem at all, not even a stale file
    assert_index_holds_the_folder(index_dir, corpus)
    _, out = run_to_end(corpus, index_dir)
    assert "0 added, 0 re-embedded, 0 moved, 0 updated, 0 removed" in out  # nothing was left to do


@pytest.mark.slow
def test_reader_never_sees_a_torn_index_during_reindex(tmp_path, tiny_encoder, record_property):
    """Index runs add, delete and rename files (content per id never changes) while a reader queries."""
    corpus = Corpus(tmp_path / "corpus", seed=11)
    index_dir = tmp_path / "index"
    corpus.add(images=30, texts=10)
    run_to_end(corpus, index_dir)
    # A server's reload check runs every couple of seconds: stale snapshots are served in between.
    searcher = Searcher(index_dir, tiny_encoder, reload_interval=0.3)
    stop = threading.Event()
    errors: list[str] = []
    stats = Counter()
    content_of: dict[int, str] = {}

    def read_loop() -> None:
        probe = tiny_encoder.encode_texts(["a note about ships", "owls in the rain"])
        while not stop.is_set():
            try:
                generation = searcher._snapshot.generation
                for target in ("image", "text", "all"):
                    for query, hits in zip(probe, searcher.search_vectors(probe, target, k=8)):
                        _check_hits(searcher, query, target, hits, content_of)
                stats["queries"] += 3 * len(probe)
                stats["reloads"] += searcher._snapshot.generation != generation
                stop.wait(0.005)  # leave the cores to the index runs
            except Exception as exc:  # any failure is what this test looks for
                errors.append(f"{type(exc).__name__}: {exc}")
                stats["errors"] += 1

    reader = threading.Thread(target=read_loop, daemon=True)
    reader.start()
    try:
        for _ in range(3):
            corpus.add(images=15, texts=5)
            corpus.mutate(rewrite=False)
            run_to_end(corpus, index_dir)
    finally:
        stop.set()
        reader.join(30)
        searcher.close()
    record_property("reader_queries", stats["queries"])
    print(f"\nreader: {stats['queries']} queries, {stats['reloads']} reloads, {stats['errors']} errors")
    assert not errors, errors[:5]
    assert stats["reloads"] >= 2 and stats["queries"] > 100, stats


def test_item_ids_are_never_reused(tmp_path):
    """A deleted item's id must not come back: a reader's older vectors would join the new item's metadata."""
    from mmsearch.storage.store import NewItem, Store

    store = Store.at(tmp_path / "items.sqlite")
    try:
        def item(key: str) -> NewItem:
            return NewItem(key, "image", key, "0" * 64, 1, 1.0, None, {})

        first = store.write_batch([item("a"), item("b")], np.zeros((2, 4), np.float32))
        store.delete_items([first[1]])  # the newest id goes
        again = store.write_batch([item("c")], np.zeros((1, 4), np.float32))
        assert again[0] not in first
    finally:
        store.close()


def _check_hits(searcher: Searcher, query: np.ndarray, target: str, hits, content_of: dict[int, str]) -> None:
    """Each hit's metadata belongs to the vector that scored it: same modality, and an id that never
    changes content (this test never rewrites a file, so a different sha256 means a reused id)."""
    assert all(a.score >= b.score - 1e-6 for a, b in zip(hits, hits[1:])), "hits out of order"
    for hit in hits:
        assert target in ("all", hit.modality), f"a {hit.modality} item answered a {target} query"
        record = searcher.store.get(hit.id)
        if record is None:
            continue  # deleted since the snapshot: the hit was already dropped or is about to be
        seen = content_of.setdefault(hit.id, record.sha256)
        assert seen == record.sha256, f"id {hit.id} now names other content: an id was reused"
