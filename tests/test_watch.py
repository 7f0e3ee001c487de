"""Watch mode: `mmsearch index PATH --watch` keeps the index in step with the folder while it runs.

A real `--watch` child process (tiny model) watches a folder; the test adds, edits, renames and deletes
files and checks, through a Searcher (what `mmsearch serve` uses, reloading on the manifest
generation), that each change is searchable, or gone, within 5 s. The SIGKILL test kills the watcher
at random moments while the folder changes, checks the index after each kill, restarts it, and
checks that in the end every file is indexed exactly once with its current content.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from conftest import REPO, pattern_image
from indexer.watch import ChangeCollector
from mmsearch.storage.indexdir import IndexDir
from mmsearch.search import Searcher

LATENCY_BUDGET = 5.0  # seconds from a change on disk to the index reflecting it
STARTUP_TIMEOUT = 180  # a loaded 2-core machine can take long to import torch and load the model
CHILD_ENV = {**os.environ, "MMSEARCH_THREADS": "1", "OMP_NUM_THREADS": "1"}


class Watcher:
    """A `mmsearch index --watch` child and the lines it printed."""

    def __init__(self, root: Path, index_dir: Path) -> None:
        self.lines: list[str] = []
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "mmsearch", "index", str(root), "--index-dir", str(index_dir), "--model", "mmsearch-tiny-random",
             "--workers", "0", "--batch-size", "4", "--watch"],
            cwd=REPO, env=CHILD_ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))

    def runs(self) -> int:
        return sum(" indexed " in line for line in self.lines)

    def wait_for_runs(self, count: int, timeout: float = STARTUP_TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        while self.runs() < count:
            assert self.proc.poll() is None, "watcher exited:\n" + "\n".join(self.lines[-30:])
            assert time.monotonic() < deadline, "no index run in time:\n" + "\n".join(self.lines[-30:])
            time.sleep(0.05)

    def kill(self) -> None:
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=30)
        self._reader.join(10)

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGINT)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.kill()
        self._reader.join(10)


def within_budget(check, what: str, watcher: Watcher) -> float:
    """Poll ``check()`` until true; -> seconds it took. Fails past LATENCY_BUDGET."""
    started = time.monotonic()
    while not check():
        elapsed = time.monotonic() - started
        assert elapsed < LATENCY_BUDGET, f"{what}: not reflected within {LATENCY_BUDGET}s\n" + "\n".join(watcher.lines[-10:])
        time.sleep(0.05)
    return time.monotonic() - started


def top_path(searcher: Searcher, encoder, image) -> str | None:
    hits = searcher.search_vectors(encoder.encode_images([image]), "image", k=1)[0]
    return hits[0].path if hits and hits[0].score > 0.999 else None


def indexed_paths(searcher: Searcher) -> set[str]:
    searcher.maybe_reload()
    return {r.path for r in searcher.store.all_items()}


def test_watch_reflects_adds_edits_renames_and_deletes_within_5s(tmp_path, tiny_encoder, record_property):
    root = tmp_path / "photos"
    root.mkdir()
    index_dir = root / ".mmsearch"  # inside the watched folder: its own writes must not trigger runs
    first, second = pattern_image(101), pattern_image(102)
    first.save(root / "first.png")
    watcher = Watcher(root, index_dir)
    try:
        watcher.wait_for_runs(1)
        searcher = Searcher(index_dir, tiny_encoder, reload_interval=0)
        try:
            assert top_path(searcher, tiny_encoder, first) == str((root / "first.png").resolve())
            latencies = {}
            time.sleep(1.0)
            idle_runs = watcher.runs()
            assert idle_runs == 1, "the watcher ran again with nothing changed (its own index writes?)"

            second.save(root / "second.png")
            latencies["add"] = within_budget(
                lambda: top_path(searcher, tiny_encoder, second) == str((root / "second.png").resolve()), "added file", watcher)

            (root / "notes").mkdir()
            (root / "notes" / "trip.txt").write_text("the night train to Lisbon", encoding="utf-8")
            note_vector = tiny_encoder.encode_texts(["the night train to Lisbon"])
            latencies["add text"] = within_budget(
                lambda: any(h.score > 0.999 and h.path == str((root / "notes" / "trip.txt").resolve())
                            for h in searcher.search_vectors(note_vector, "text", k=1)[0]), "added text", watcher)

            edited = pattern_image(103)
            edited.save(root / "first.png")  # new content under the same name
            latencies["edit"] = within_budget(
                lambda: top_path(searcher, tiny_encoder, edited) == str((root / "first.png").resolve())
                and top_path(searcher, tiny_encoder, first) is None, "edited file", watcher)

            (root / "second.png").rename(root / "renamed.png")
            latencies["rename"] = within_budget(
                lambda: top_path(searcher, tiny_encoder, second) == str((root / "renamed.png").resolve())
                and str((root / "second.png").resolve()) not in indexed_paths(searcher), "renamed file", watcher)

            (root / "moved").mkdir()
            (root / "renamed.png").rename(root / "moved" / "renamed.png")
            latencies["move"] = within_budget(
                lambda: top_path(searcher, tiny_encoder, second) == str((root / "moved" / "renamed.png").resolve()), "moved file", watcher)

            (root / "first.png").unlink()
            latencies["delete"] = within_budget(
                lambda: str((root / "first.png").resolve()) not in indexed_paths(searcher)
                and top_path(searcher, tiny_encoder, edited) is None, "deleted file", watcher)
        finally:
            searcher.close()
        # a burst of changes is batched: far fewer runs than changes
        before = watcher.runs()
        for n in range(12):
            pattern_image(200 + n).save(root / f"burst{n}.png")
            time.sleep(0.05)
        store = IndexDir(index_dir).open_store()
        try:
            within_budget(lambda: sum(1 for r in store.all_items() if Path(r.path or "").name.startswith("burst")) == 12,
                          "burst of 12 files", watcher)
        finally:
            store.close()
        assert watcher.runs() - before <= 4, watcher.lines[-8:]
    finally:
        watcher.stop()
    record_property("watch_latency_s", {k: round(v, 2) for k, v in latencies.items()})
    print(f"\nwatch latencies (s): { {k: round(v, 2) for k, v in latencies.items()} }")
    assert watcher.proc.returncode == 0, watcher.lines[-10:]  # Ctrl-C ends watching cleanly


def test_change_collector_debounces_and_ignores_reads_and_the_index_dir(tmp_path):
    from watchdog.events import DirModifiedEvent, FileClosedNoWriteEvent, FileCreatedEvent, FileModifiedEvent, FileMovedEvent, FileOpenedEvent

    index_dir = tmp_path / "photos" / ".mmsearch"
    collector = ChangeCollector([index_dir], root=tmp_path / "photos")
    stop = threading.Event()
    photo = str(tmp_path / "photos" / "a.jpg")
    for event in (FileOpenedEvent(photo), FileClosedNoWriteEvent(photo), DirModifiedEvent(str(tmp_path / "photos")),
                  FileModifiedEvent(str(index_dir / "items.sqlite")), FileCreatedEvent(str(tmp_path / "photos" / ".hidden.jpg")),
                  FileModifiedEvent(str(tmp_path / "photos" / ".git" / "index"))):
        collector.on_any_event(event)
    assert collector.changes == 0
    collector.on_any_event(FileMovedEvent(str(index_dir / "x.tmp"), photo))  # moved out of an ignored place: counts
    assert collector.changes == 1
    started = time.monotonic()
    for _ in range(5):  # a burst: one batch, after the folder went quiet
        collector.on_any_event(FileModifiedEvent(photo))
        time.sleep(0.05)
    assert collector.wait_for_batch(stop, quiet=0.3, max_delay=5)
    assert time.monotonic() - started >= 0.3 + 0.2
    threading.Timer(0.3, stop.set).start()
    assert not collector.wait_for_batch(stop, quiet=0.3, max_delay=5)  # nothing new: no batch until stopped


def test_change_collector_max_delay_bounds_a_busy_folder(tmp_path):
    collector = ChangeCollector()
    stop = threading.Event()
    busy = threading.Event()

    def keep_changing() -> None:
        while not busy.is_set():
            collector.mark()
            time.sleep(0.05)

    thread = threading.Thread(target=keep_changing, daemon=True)
    thread.start()
    try:
        started = time.monotonic()
        assert collector.wait_for_batch(stop, quiet=0.3, max_delay=0.8)
        assert time.monotonic() - started < 2.0  # never quiet, yet a batch came after max_delay
    finally:
        busy.set()
        thread.join(5)


@pytest.mark.slow
def test_watch_survives_sigkill_at_random_moments(tmp_path, tiny_encoder, record_property):
    from test_crash import AFTER_KILL_OK, Corpus, assert_index_holds_the_folder, check_consistent

    rng = random.Random(99)
    corpus = Corpus(tmp_path / "corpus", seed=5)
    index_dir = tmp_path / "index"
    corpus.add(images=20, texts=6)
    kills = 0
    for attempt in range(3):
        watcher = Watcher(corpus.root, index_dir)
        try:
            if attempt == 1:  # a kill at any moment from launch on: imports, model load, the catch-up run
                corpus.add(images=6, texts=2)
                time.sleep(rng.uniform(0.5, 6.0))
            else:  # changes while it watches, then a kill at a random moment of the batches they start
                watcher.wait_for_runs(1)
                for _ in range(rng.randint(1, 3)):
                    corpus.add(images=rng.randint(3, 10), texts=2)
                    corpus.mutate(rewrite=attempt == 0)
                    time.sleep(rng.uniform(0.05, 0.8))
        finally:
            watcher.kill()
        kills += 1
        check_consistent(index_dir, tiny_encoder, AFTER_KILL_OK)
    corpus.add(images=5, texts=1)  # changed while nothing watched: the restart catches up
    watcher = Watcher(corpus.root, index_dir)
    try:
        watcher.wait_for_runs(1)
        assert_index_holds_the_folder(index_dir, corpus)
    finally:
        watcher.stop()
    check_consistent(index_dir, tiny_encoder, set())
    record_property("watch_sigkills", kills)
