"""Metadata store (SQLAlchemy 2.0, SQLite by default): items, their vectors, failures, runs.

The store is the source of truth. Every item row has its embedding stored beside it in the same
transaction, so the FAISS files are a derived, rebuildable cache: after a crash at any moment the
store is consistent, and FAISS is brought back in line from it (see ``generation``).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

import numpy as np
import orjson
from sqlalchemy import (
    JSON,
    BigInteger,
    Float,
    ForeignKey,
    Integer,
    LargeBinary,
    String,
    Text,
    create_engine,
    delete,
    event,
    func,
    insert,
    select,
    text,
    update,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.engine import Engine
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, sessionmaker

from mmsearch.geo import haversine_km
from mmsearch.storage.database import serialize_write
from mmsearch.storage.filter_sql import DISTANCE_FUNCTION
from mmsearch.storage.hotreads import sqlite_reader

IMAGE = "image"
TEXT = "text"
MODALITIES = (IMAGE, TEXT)


# Bound parameters per statement: SQLite's limit was 999 before 3.32; queries on many ids go in chunks.
PARAMETER_CHUNK = 900


def id_chunks(values: Sequence) -> Iterator[list]:
    """``values`` in lists of at most PARAMETER_CHUNK, for ``WHERE ... IN (...)`` over many ids."""
    values = list(values)
    for start in range(0, len(values), PARAMETER_CHUNK):
        yield values[start : start + PARAMETER_CHUNK]


class Base(DeclarativeBase):
    pass


# Item ids are int64 (shared with FAISS): SQLite's INTEGER PRIMARY KEY already is, PostgreSQL needs BIGINT.
Int64 = BigInteger().with_variant(Integer, "sqlite")
# Metadata as JSONB on PostgreSQL: its operators and expression indexes serve filters and product links.
MetaJSON = JSON().with_variant(JSONB, "postgresql")


class Item(Base):
    """One searchable thing: an image file, a text file, or a manifest row."""

    __tablename__ = "items"
    id: Mapped[int] = mapped_column(Int64, primary_key=True)  # SQLite INTEGER PRIMARY KEY is int64
    key: Mapped[str] = mapped_column(String, unique=True, index=True)  # where it came from (path or manifest#row)
    modality: Mapped[str] = mapped_column(String(8), index=True)
    path: Mapped[str | None] = mapped_column(String, nullable=True)  # file holding the content
    sha256: Mapped[str] = mapped_column(String(64), index=True)
    size: Mapped[int] = mapped_column(Int64, default=0)
    mtime: Mapped[float] = mapped_column(Float, default=0.0)
    text: Mapped[str | None] = mapped_column(Text, nullable=True)  # text item's content or image's caption
    meta: Mapped[dict] = mapped_column(MetaJSON, default=dict)
    indexed_at: Mapped[float] = mapped_column(Float, default=time.time)


class Embedding(Base):
    __tablename__ = "embeddings"
    item_id: Mapped[int] = mapped_column(Int64, ForeignKey("items.id", ondelete="CASCADE"), primary_key=True)
    vector: Mapped[bytes] = mapped_column(LargeBinary)


class Failure(Base):
    """A file that could not be indexed in the latest run that saw it, and why."""

    __tablename__ = "failures"
    key: Mapped[str] = mapped_column(String, primary_key=True)
    reason: Mapped[str] = mapped_column(Text)
    run_id: Mapped[int] = mapped_column(Integer)
    at: Mapped[float] = mapped_column(Float, default=time.time)


class Run(Base):
    __tablename__ = "runs"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    source: Mapped[str] = mapped_column(String)
    started_at: Mapped[float] = mapped_column(Float, default=time.time)
    finished_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    summary: Mapped[dict] = mapped_column(JSON, default=dict)


class State(Base):
    """Small key/value facts about the store, e.g. the write generation."""

    __tablename__ = "state"
    key: Mapped[str] = mapped_column(String, primary_key=True)
    value: Mapped[str] = mapped_column(Text)


class Migration(Base):
    __tablename__ = "schema_migrations"
    name: Mapped[str] = mapped_column(String, primary_key=True)
    applied_at: Mapped[float] = mapped_column(Float, default=time.time)


# Named, ordered schema migrations. Append only; each runs once per database.
def _m001_initial(conn) -> None:
    Base.metadata.create_all(conn)


def _m002_keyword_fts(conn) -> None:
    from mmsearch.storage.keyword import create_keyword_index

    create_keyword_index(conn)


def _m003_product_index(conn) -> None:
    from mmsearch.storage.filter_sql import create_filter_indexes

    create_filter_indexes(conn)


def _m004_keyword_lists(conn) -> None:
    from mmsearch.storage.keyword import reindex_list_values

    reindex_list_values(conn)


MIGRATIONS: list[tuple[str, Any]] = [
    ("001_initial", _m001_initial), ("002_keyword_fts", _m002_keyword_fts), ("003_product_index", _m003_product_index),
    ("004_keyword_lists", _m004_keyword_lists),
]


@dataclass(frozen=True)
class ItemRecord:
    """A plain snapshot of an item row, safe to pass around after the session closes."""

    id: int
    key: str
    modality: str
    path: str | None
    sha256: str
    size: int
    mtime: float
    text: str | None
    meta: dict

    @classmethod
    def of(cls, row: Item) -> "ItemRecord":
        return cls(row.id, row.key, row.modality, row.path, row.sha256, row.size, row.mtime, row.text, dict(row.meta or {}))


@dataclass
class NewItem:
    """An item to insert (id assigned by the store) or to update in place (id given)."""

    key: str
    modality: str
    path: str | None
    sha256: str
    size: int
    mtime: float
    text: str | None
    meta: dict
    id: int | None = None


def decode_meta(text: str | bytes | None) -> dict:
    """A row's metadata JSON as stored -> dict. orjson, because a search decodes the rows of all its hits
    on the one worker thread (json.loads was ~5 % of its time at 1M items); json for what orjson refuses
    (NaN, which json.dumps writes)."""
    if not text:
        return {}
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError:
        value = json.loads(text)
    return value or {}


_RECORDS_SQL = "SELECT id, key, modality, path, sha256, size, mtime, text, meta FROM items WHERE id IN ({})"
_VECTORS_SQL = "SELECT item_id, vector FROM embeddings WHERE item_id IN ({})"


def _sqlite_pragmas(dbapi_conn, _record) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")  # readers never block the writer, nor the writer readers
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA busy_timeout=30000")
    cur.close()
    # the radius filter's exact distance (mmsearch.storage.filter_sql); NULL positions give NULL
    dbapi_conn.create_function(DISTANCE_FUNCTION, 4, _distance_km, deterministic=True)


def _distance_km(lat1, lon1, lat2, lon2) -> float | None:
    if None in (lat1, lon1, lat2, lon2):
        return None
    return haversine_km(float(lat1), float(lon1), float(lat2), float(lon2))


def make_engine(url: str) -> Engine:
    engine = create_engine(url, future=True)
    if engine.dialect.name == "sqlite":
        event.listen(engine, "connect", _sqlite_pragmas)
    return engine


class Store:
    """Typed access to the metadata database. One instance per process; sessions are short."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.engine = make_engine(url)
        self._session = sessionmaker(self.engine, expire_on_commit=False)
        self.migrate()
        # the hot reads of every search, through the driver (see mmsearch.storage.hotreads)
        self._reader = sqlite_reader(self.engine.url.database, PARAMETER_CHUNK) if self.dialect == "sqlite" else None

    @classmethod
    def at(cls, db_path: Path) -> "Store":
        return cls(f"sqlite:///{Path(db_path).resolve()}")

    def close(self) -> None:
        if self._reader is not None:
            self._reader.close()
        self.engine.dispose()

    @property
    def dialect(self) -> str:
        """``sqlite`` or ``postgresql``: which SQL the keyword, filter and field queries speak."""
        return self.engine.dialect.name

    def migrate(self) -> None:
        with self.engine.begin() as conn:
            serialize_write(conn)  # replicas starting together on PostgreSQL migrate one after the other
            Migration.__table__.create(conn, checkfirst=True)
            done = set(conn.execute(select(Migration.name)).scalars())
            for name, apply in MIGRATIONS:
                if name not in done:
                    apply(conn)
                    conn.execute(Migration.__table__.insert().values(name=name, applied_at=time.time()))

    # --- reads ---
    def generation(self) -> int:
        """Bumped by every write; FAISS files record the generation they reflect."""
        with self._session() as s:
            value = s.get(State, "generation")
            return int(value.value) if value else 0

    def count(self, modality: str | None = None) -> int:
        with self._session() as s:
            q = select(func.count(Item.id))
            if modality:
                q = q.where(Item.modality == modality)
            return int(s.scalar(q) or 0)

    def get(self, item_id: int) -> ItemRecord | None:
        with self._session() as s:
            row = s.get(Item, int(item_id))
            return ItemRecord.of(row) if row else None

    def get_many(self, ids: Iterable[int]) -> dict[int, ItemRecord]:
        ids = [int(i) for i in ids]
        if self._reader is not None:
            return {r[0]: ItemRecord(*r[:8], decode_meta(r[8])) for r in self._reader.rows(_RECORDS_SQL, ids)}
        out: dict[int, ItemRecord] = {}
        with self._session() as s:
            for chunk in id_chunks(ids):
                for row in s.scalars(select(Item).where(Item.id.in_(chunk))):
                    out[row.id] = ItemRecord.of(row)
        return out

    def get_by_keys(self, keys: Iterable[str]) -> dict[str, ItemRecord]:
        """The items stored under these keys (those that exist), by key."""
        out: dict[str, ItemRecord] = {}
        with self._session() as s:
            for chunk in id_chunks(list(dict.fromkeys(keys))):
                for row in s.scalars(select(Item).where(Item.key.in_(chunk))):
                    out[row.key] = ItemRecord.of(row)
        return out

    def count_with_path(self, path: str) -> int:
        """How many items read their content from this file (an uploaded image may back several)."""
        with self._session() as s:
            return int(s.scalar(select(func.count(Item.id)).where(Item.path == path)) or 0)

    def all_items(self) -> list[ItemRecord]:
        with self._session() as s:
            return [ItemRecord.of(r) for r in s.scalars(select(Item).order_by(Item.id))]

    def iter_vectors(self, modality: str, batch: int = 10_000) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Stream (ids, vectors) of one modality in id order, a batch at a time (memory stays flat)."""
        last = -1
        while True:
            with self._session() as s:
                rows = s.execute(
                    select(Embedding.item_id, Embedding.vector)
                    .join(Item, Item.id == Embedding.item_id)
                    .where(Item.modality == modality, Embedding.item_id > last)
                    .order_by(Embedding.item_id)
                    .limit(batch)
                ).all()
            if not rows:
                return
            ids = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
            vecs = np.stack([np.frombuffer(r[1], dtype=np.float32) for r in rows])
            yield ids, vecs
            last = int(ids[-1])

    def vectors_for(self, ids: Sequence[int]) -> dict[int, np.ndarray]:
        if self._reader is not None:
            return {i: np.frombuffer(v, dtype=np.float32) for i, v in self._reader.rows(_VECTORS_SQL, ids)}
        out: dict[int, np.ndarray] = {}
        with self._session() as s:
            for chunk in id_chunks(int(i) for i in ids):
                rows = s.execute(select(Embedding.item_id, Embedding.vector).where(Embedding.item_id.in_(chunk)))
                out.update((int(i), np.frombuffer(v, dtype=np.float32)) for i, v in rows)
        return out

    def failures(self, run_id: int | None = None) -> list[tuple[str, str]]:
        with self._session() as s:
            q = select(Failure.key, Failure.reason).order_by(Failure.key)
            if run_id is not None:
                q = q.where(Failure.run_id == run_id)
            return [(k, r) for k, r in s.execute(q)]

    def last_run(self) -> dict | None:
        with self._session() as s:
            row = s.scalars(select(Run).order_by(Run.id.desc()).limit(1)).first()
            if row is None:
                return None
            return {"id": row.id, "source": row.source, "started_at": row.started_at, "finished_at": row.finished_at, **(row.summary or {})}

    # --- writes: each call is one transaction and bumps the generation ---
    def _bump(self, s: Session) -> None:
        current = s.get(State, "generation")
        if current is None:
            s.add(State(key="generation", value="1"))
        else:
            current.value = str(int(current.value) + 1)

    def _take_ids(self, s: Session, count: int) -> Iterator[int]:
        """``count`` new item ids, never ones a deleted item had: a reader still holding an older vector
        snapshot must not join that vector to a different item's metadata (SQLite alone reuses the top
        rowid). Taken as one block per batch: two small reads, not two per item."""
        if count == 0:
            return iter(())
        state = s.get(State, "next_item_id")
        floor = int(s.scalar(select(func.max(Item.id))) or 0) + 1
        first = max(int(state.value) if state else 0, floor)
        if state is None:
            s.add(State(key="next_item_id", value=str(first + count)))
        else:
            state.value = str(first + count)
        return iter(range(first, first + count))

    def write_batch(self, items: Sequence[NewItem], vectors: np.ndarray) -> list[int]:
        """Insert new items (or re-embed existing ids) with their vectors, atomically. -> ids in order."""
        return self.apply_changes(items, vectors)

    def update_items(self, changes: Sequence[tuple[int, dict]]) -> None:
        """Change metadata (key, path, caption, mtime...) without touching vectors: moves and renames."""
        self.apply_changes(updates=changes)

    def delete_items(self, ids: Sequence[int]) -> None:
        self.apply_changes(delete_ids=ids)

    def apply_changes(self, items: Sequence[NewItem] = (), vectors: np.ndarray | None = None,
                      updates: Sequence[tuple[int, dict]] = (), delete_ids: Sequence[int] = ()) -> list[int]:
        """Deletes, metadata updates and new/re-embedded items with their vectors in ONE transaction
        (one generation bump): a write acknowledged to a client is all there or, after a crash, not
        at all. -> the ids of ``items``, in order."""
        if vectors is None:
            vectors = np.zeros((0, 0), dtype=np.float32)
        if len(items) != len(vectors):
            raise ValueError("one vector per item is required")
        if not (items or updates or delete_ids):
            return []
        with self._session.begin() as s:
            serialize_write(s.connection())
            if delete_ids:
                ids = [int(i) for i in delete_ids]
                self._delete_in_chunks(s, Embedding.item_id, ids)
                self._delete_in_chunks(s, Item.id, ids)
            if updates:
                self._update_rows(s, updates)
            written = self._write_rows(s, items, vectors) if items else []
            self._bump(s)
        return written

    def _write_rows(self, s: Session, items: Sequence[NewItem], vectors: np.ndarray) -> list[int]:
        new_ids = self._take_ids(s, sum(item.id is None for item in items))
        ids = [next(new_ids) if item.id is None else int(item.id) for item in items]
        now = time.time()
        rows = [dict(id=item_id, key=item.key, modality=item.modality, path=item.path, sha256=item.sha256, size=item.size,
                     mtime=item.mtime, text=item.text, meta=item.meta, indexed_at=now) for item_id, item in zip(ids, items)]
        # Bulk statements (executemany), not one ORM flush per item: ~2 ms per item before, which capped
        # a single writer at ~450 items/s whatever the encoders upstream could do.
        inserted = [row for row, item in zip(rows, items) if item.id is None]
        changed = [row for row, item in zip(rows, items) if item.id is not None]
        if inserted:
            s.execute(insert(Item), inserted)
        if changed:
            s.execute(update(Item), changed)
            self._delete_in_chunks(s, Embedding.item_id, [row["id"] for row in changed])
        s.execute(insert(Embedding), [
            {"item_id": item_id, "vector": np.asarray(vec, dtype=np.float32).tobytes()} for item_id, vec in zip(ids, vectors)
        ])
        self._delete_in_chunks(s, Failure.key, [item.key for item in items])
        return ids

    @staticmethod
    def _delete_in_chunks(s: Session, column, values: Sequence) -> None:
        """DELETE ... WHERE column IN (...), in chunks that stay under SQLite's bound-parameter limit."""
        for chunk in id_chunks(values):
            s.execute(delete(column.class_).where(column.in_(chunk)))

    @staticmethod
    def _update_rows(s: Session, changes: Sequence[tuple[int, dict]]) -> None:
        # Two renames can swap keys; park every moved key on a unique placeholder first.
        for item_id, fields in changes:
            if "key" in fields:
                s.execute(update(Item).where(Item.id == item_id).values(key=f"\x00moving:{item_id}"))
        s.flush()
        for item_id, fields in changes:
            s.execute(update(Item).where(Item.id == item_id).values(**fields))

    def record_failures(self, run_id: int, failures: Sequence[tuple[str, str]]) -> None:
        if not failures:
            return
        with self._session.begin() as s:
            for key, reason in failures:
                s.merge(Failure(key=key, reason=reason, run_id=run_id, at=time.time()))

    def forget_failures(self, keys_present: set[str]) -> None:
        """Drop failure records of files no longer on disk."""
        with self._session.begin() as s:
            for key in list(s.scalars(select(Failure.key))):
                if key not in keys_present:
                    s.execute(delete(Failure).where(Failure.key == key))

    def start_run(self, source: str) -> int:
        with self._session.begin() as s:
            run = Run(source=source, started_at=time.time(), summary={})
            s.add(run)
            s.flush()
            return run.id

    def finish_run(self, run_id: int, summary: dict) -> None:
        with self._session.begin() as s:
            run = s.get(Run, run_id)
            run.finished_at = time.time()
            run.summary = json.loads(json.dumps(summary))

    def state_get(self, key: str) -> str | None:
        with self._session() as s:
            row = s.get(State, key)
            return row.value if row else None

    def state_set(self, key: str, value: str) -> None:
        with self._session.begin() as s:
            s.merge(State(key=key, value=value))

    def integrity_check(self) -> str:
        """SQLite's quick_check; PostgreSQL guards its own pages, so there it only checks the connection."""
        with self.engine.connect() as conn:
            if self.dialect == "postgresql":
                return "ok" if conn.execute(text("SELECT 1")).scalar() == 1 else "no answer"
            return str(conn.execute(text("PRAGMA quick_check")).scalar())
