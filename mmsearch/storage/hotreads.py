"""The reads every search makes (its candidates' vectors for re-ranking, its hits' rows), on SQLite,
straight through the driver.

Measured on a 10k-item index, reading 100 vectors by id took 1.8 ms of CPU through a SQLAlchemy
session and 0.24 ms through a plain ``sqlite3`` connection: statement compilation of an expanding
``IN``, result processing, the session and the pool checkout cost several times the query itself. At a
server's rate of one such read per query batch that was a large share of its CPU per query.

The connections are read-only (``mode=ro``), kept in a small free list so that no thread holds one
longer than a read (server request threads come and go), and each read is its own statement in
autocommit mode: in WAL mode it sees the newest committed data, as a fresh session would. Other
dialects (PostgreSQL) keep the SQLAlchemy path.
"""

from __future__ import annotations

import queue
import sqlite3
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Sequence

BUSY_TIMEOUT_MS = 30_000


class SqliteReader:
    """``rows(sql, ids)``: a ``SELECT ... WHERE x IN ({})`` run over ``ids`` in chunks, rows as tuples."""

    def __init__(self, db_path: Path, chunk: int) -> None:
        self._uri = f"{Path(db_path).resolve().as_uri()}?mode=ro"
        self._chunk = chunk
        self._free: queue.SimpleQueue[sqlite3.Connection] = queue.SimpleQueue()
        self._all: list[sqlite3.Connection] = []
        self._lock = threading.Lock()
        self._closed = False

    def _open(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self._uri, uri=True, check_same_thread=False, isolation_level=None)
        conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
        with self._lock:
            self._all.append(conn)
        return conn

    @contextmanager
    def _connection(self) -> Iterator[sqlite3.Connection]:
        try:
            conn = self._free.get_nowait()
        except queue.Empty:
            conn = self._open()
        try:
            yield conn
        finally:
            if not self._closed:
                self._free.put(conn)

    def rows(self, sql: str, ids: Sequence[int]) -> list[tuple]:
        ids = [int(i) for i in ids]
        out: list[tuple] = []
        with self._connection() as conn:
            for start in range(0, len(ids), self._chunk):
                part = ids[start: start + self._chunk]
                out.extend(conn.execute(sql.format(",".join("?" * len(part))), part))
        return out

    def close(self) -> None:
        self._closed = True
        with self._lock:
            for conn in self._all:
                conn.close()
            self._all.clear()


def sqlite_reader(url_database: str | None, chunk: int) -> SqliteReader | None:
    """A reader for a SQLite database file (None for in-memory databases)."""
    if not url_database or url_database == ":memory:":
        return None
    return SqliteReader(Path(url_database), chunk)


__all__ = ["SqliteReader", "sqlite_reader"]
