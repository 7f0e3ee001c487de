"""Where an index keeps its metadata: SQLite inside the index directory (the default), or the database a
SQLAlchemy URL names (``MMSEARCH_DATABASE_URL``), e.g. one PostgreSQL catalogue shared by several API
replicas, each keeping its own FAISS files as a cache rebuilt from that database.

With a database URL, the manifest of record is kept in the database too (the ``state`` table), so a
replica with an empty index directory learns the model and index settings from the catalogue alone.
The URL may hold a password: it is never logged, printed or written anywhere; ``redact`` gives the
form that is (no password).
"""

from __future__ import annotations

import contextlib
import logging
import zlib
from typing import Iterator

from sqlalchemy import create_engine, inspect, text
from sqlalchemy.engine import URL, Connection, Engine, make_url
from sqlalchemy.exc import ArgumentError, OperationalError
from sqlalchemy.pool import NullPool

from mmsearch.errors import ConfigError, DatabaseUnavailableError, IndexBusyError

log = logging.getLogger(__name__)

SUPPORTED_DIALECTS = ("sqlite", "postgresql")
MANIFEST_KEY = "manifest"
# PostgreSQL advisory lock keys (any fixed int64s): one index run per catalogue at a time, and write
# transactions taking turns so id blocks and generation bumps never interleave.
WRITER_LOCK_KEY = 0x6D6D_7365_6172_6368  # "mmsearch"
WRITE_TXN_KEY = 0x6D6D_7377_7269_7465


def parse(url: str) -> URL:
    try:
        return make_url(url)
    except ArgumentError as exc:
        raise ConfigError(f"MMSEARCH_DATABASE_URL is not a database URL ({redact_text(url)}): use e.g. "
                          "postgresql+psycopg://user:password@host/dbname") from exc


def redact(url: str) -> str:
    """The URL without its password (also a ``password=`` query parameter): safe to show and store."""
    parsed = parse(url)
    query = {k: v for k, v in parsed.query.items() if k.lower() != "password"}
    bare = URL.create(parsed.drivername, parsed.username, None, parsed.host, parsed.port, parsed.database, query)
    return bare.render_as_string(hide_password=False)


def redact_text(raw: str) -> str:
    """For a string that may not even parse as a URL: drop everything between ``//user:`` and ``@``."""
    head, sep, rest = raw.partition("://")
    if not sep or "@" not in rest:
        return raw if sep else "<not a URL>"
    creds, _, host = rest.rpartition("@")
    return f"{head}://{creds.split(':', 1)[0]}@{host}"


def dialect_of(url: str) -> str:
    return parse(url).get_backend_name()


def check_supported(url: str) -> None:
    if dialect_of(url) not in SUPPORTED_DIALECTS:
        raise ConfigError(f"database {redact(url)}: mmsearch supports SQLite and PostgreSQL (postgresql+psycopg://...)")


def is_postgres(url: str | None) -> bool:
    return bool(url) and dialect_of(url) == "postgresql"


@contextlib.contextmanager
def reaching(url: str) -> Iterator[None]:
    """Turn a failure to connect into one line naming the database (never its password)."""
    try:
        yield
    except OperationalError as exc:
        first = (str(exc.orig or exc).strip().splitlines() or [""])[0]
        raise DatabaseUnavailableError(f"cannot reach the database {redact(url)}: {first}") from exc


def _short_engine(url: str) -> Engine:
    """An engine whose connections close after each use: for the rare manifest reads and writes."""
    return create_engine(url, poolclass=NullPool)


def read_state(url: str, key: str) -> str | None:
    """One value of the database's ``state`` table; None when absent (or the table is not created yet)."""
    engine = _short_engine(url)
    try:
        with reaching(url), engine.connect() as conn:
            if not inspect(conn).has_table("state"):
                return None
            return conn.execute(text("SELECT value FROM state WHERE key = :key"), {"key": key}).scalar()
    finally:
        engine.dispose()


def write_state(url: str, key: str, value: str) -> None:
    engine = _short_engine(url)
    try:
        with reaching(url), engine.begin() as conn:
            conn.execute(
                text("INSERT INTO state (key, value) VALUES (:key, :value) ON CONFLICT (key) DO UPDATE SET value = excluded.value"),
                {"key": key, "value": value},
            )
    finally:
        engine.dispose()


def writer_lock_key(url: str) -> int:
    """One writer lock per catalogue: a collection's own schema (mmsearch.collections, named in the URL's
    ``options``) gets a key of its own, so runs on two collections of one database do not exclude each other."""
    options = parse(url).query.get("options")
    if not options:
        return WRITER_LOCK_KEY
    return WRITER_LOCK_KEY ^ zlib.crc32(str(options).encode("utf-8"))


@contextlib.contextmanager
def writer_lock(url: str | None) -> Iterator[None]:
    """On PostgreSQL, a session advisory lock held for the whole index run: two runs on different
    machines (different index directories) never write one catalogue at once. Elsewhere a no-op (the
    index directory's file lock covers SQLite)."""
    if not is_postgres(url):
        yield
        return
    engine = _short_engine(url)
    try:
        with reaching(url), engine.connect() as conn:
            key = writer_lock_key(url)
            if not conn.execute(text("SELECT pg_try_advisory_lock(:k)"), {"k": key}).scalar():
                raise IndexBusyError(f"another `mmsearch index` run is writing the catalogue {redact(url)}; wait for it to finish")
            conn.commit()
            try:
                yield
            finally:
                conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": key})
                conn.commit()
    finally:
        engine.dispose()


def serialize_write(conn: Connection) -> None:
    """First statement of a write transaction on PostgreSQL: wait for the other writers' transactions,
    so reading the next free id or the generation and writing it back is never interleaved (SQLite
    writers are serialised by the database itself)."""
    if conn.dialect.name == "postgresql":
        conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": WRITE_TXN_KEY})
