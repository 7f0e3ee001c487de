"""Watch mode (`mmsearch index PATH --watch`): keep an index in step with a folder while it runs.

File-system events (watchdog: inotify on Linux, else the platform's own, polling as a fallback) only
say *that* something changed, never *what to write*: each batch of changes is one ordinary
incremental index run (indexer.pipeline.index_source), which scans the folder against the index,
embeds what is new or changed, keeps the vectors of moved files, drops what is gone, and publishes
with the atomic manifest swap. So everything docs/guarantees.md says about a run holds for watch mode
too: kill it at any moment and the index stays consistent; start it again and its first run catches
up with whatever changed meanwhile (the observer starts before that run, so nothing slips between).

Bursts are debounced: a batch starts once the folder has been quiet for ``quiet`` seconds, or
``max_delay`` seconds after the first change of the batch however busy the folder stays, so a large
copy is indexed in steps rather than only at its end. Changes that arrive during a run make the next
batch. Reads (our own scan and decoding open files) and the index directory's own files are ignored.
"""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path
from typing import Callable, Sequence

from watchdog.events import FileSystemEvent, FileSystemEventHandler

from mmsearch.errors import IndexBusyError, MmsearchError

log = logging.getLogger(__name__)

QUIET_SECONDS = 0.3  # a batch starts once no change came for this long...
MAX_DELAY_SECONDS = 1.5  # ...or this long after its first change, however busy the folder is
BUSY_RETRY_SECONDS = 1.0  # another process holds the index's write lock: try again after this
READ_EVENTS = frozenset({"opened", "closed_no_write"})  # a file was read, not changed


class ChangeCollector(FileSystemEventHandler):
    """Counts changes under the watched folder and tells when a batch of them is ready."""

    def __init__(self, ignored: Sequence[Path] = (), root: Path | None = None) -> None:
        self._ignored = [Path(p).resolve() for p in ignored]
        self._root = Path(root).resolve() if root is not None else None
        self._cond = threading.Condition()
        self._first: float | None = None  # when the oldest change not yet handed out came
        self._last = 0.0
        self.changes = 0  # changes seen in all (for logs and tests)

    def _relevant(self, path: str) -> bool:
        if not path:
            return False
        p = Path(path)
        inside = p.relative_to(self._root).parts if self._root is not None and self._root in p.parents else p.parts[-1:]
        if any(part.startswith(".") for part in inside):  # hidden files and folders are never indexed
            return False
        return not any(p == d or d in p.parents for d in self._ignored)

    def on_any_event(self, event: FileSystemEvent) -> None:
        if event.event_type in READ_EVENTS or (event.is_directory and event.event_type == "modified"):
            return  # reads are not changes; a folder's "modified" repeats the events of the files in it
        paths = [_text(event.src_path), _text(getattr(event, "dest_path", ""))]
        if not any(self._relevant(p) for p in paths):
            return
        self.mark()

    def mark(self) -> None:
        """Record a change now (also used to retry a batch that could not run)."""
        with self._cond:
            now = time.monotonic()
            self._first = self._first if self._first is not None else now
            self._last = now
            self.changes += 1
            self._cond.notify_all()

    def wait_for_batch(self, stop: threading.Event, quiet: float = QUIET_SECONDS, max_delay: float = MAX_DELAY_SECONDS,
                       poll: float = 0.5) -> bool:
        """Block until a batch is ready (True) or ``stop`` is set (False). A ready batch is taken: changes
        arriving from now on make the next one."""
        with self._cond:
            while not stop.is_set():
                if self._first is not None:
                    now = time.monotonic()
                    due = min(self._last + quiet, self._first + max_delay)
                    if now >= due:
                        self._first = None
                        return True
                    self._cond.wait(min(poll, due - now))
                else:
                    self._cond.wait(poll)
        return False


def _text(path) -> str:
    return path.decode("utf-8", "surrogateescape") if isinstance(path, bytes) else str(path or "")


def start_observer(folder: Path, handler: FileSystemEventHandler):
    """A running watchdog observer of ``folder`` (recursive). Falls back to polling when the kernel's
    watches run out (inotify's max_user_watches on a very large tree), with a warning."""
    from watchdog.observers import Observer
    from watchdog.observers.polling import PollingObserver

    observer = Observer()
    try:
        observer.schedule(handler, str(folder), recursive=True)
        observer.start()
        return observer
    except OSError as exc:
        log.warning("cannot watch %s with file-system events (%s); polling it every second instead", folder, exc)
    observer = PollingObserver(timeout=1.0)
    observer.schedule(handler, str(folder), recursive=True)
    observer.start()
    return observer


def watch(source: Path, run: Callable[[], object], *, ignored: Sequence[Path] = (), on_report: Callable[[object], None] = lambda r: None,
          stop: threading.Event | None = None, quiet: float = QUIET_SECONDS, max_delay: float = MAX_DELAY_SECONDS) -> None:
    """Run ``run()`` (one incremental index run) now, then again after each batch of changes under
    ``source``, until ``stop`` is set or Ctrl-C. ``on_report`` gets each run's report."""
    stop = stop or threading.Event()
    source = Path(source).expanduser().resolve()
    folder = source if source.is_dir() else source.parent  # a manifest: its folder, where its images usually are
    collector = ChangeCollector(ignored, root=folder)
    observer = start_observer(folder, collector)
    log.info("watching %s", folder)
    try:
        _run_batch(run, on_report, collector)  # catch up with what changed while nothing watched: errors end it
        while collector.wait_for_batch(stop, quiet, max_delay):
            try:
                _run_batch(run, on_report, collector)
            except MmsearchError as exc:  # e.g. the folder is gone for now: keep watching, the next change retries
                log.error("index run failed, waiting for the next change: %s", exc)
    except KeyboardInterrupt:
        log.info("stopped watching %s", folder)
    finally:
        observer.stop()
        observer.join(timeout=5)


def _run_batch(run: Callable[[], object], on_report: Callable[[object], None], collector: ChangeCollector) -> None:
    try:
        report = run()
    except IndexBusyError as exc:
        log.warning("%s; trying again in %.0f s", exc, BUSY_RETRY_SECONDS)
        time.sleep(BUSY_RETRY_SECONDS)
        collector.mark()
        return
    on_report(report)
