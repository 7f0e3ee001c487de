"""Collections: several named indexes served by one server, each with its own model and index settings.

A collection is an index directory. ``default`` is the server's ``--index-dir`` itself (so a server and
every existing index keep working unchanged); a named collection lives in
``<index-dir>/collections/<name>/``. With SQLite its metadata is that directory's ``items.sqlite``. With a
PostgreSQL database (``MMSEARCH_DATABASE_URL``) the default collection keeps the tables where they always
were (the connection's default schema) and a named collection gets a schema of its own, ``mmsearch_<name>``:
the store connects with that schema first on its ``search_path``, so every table, index and query of the
store, the keyword index and the filters stays unchanged and two collections never see each other's rows.

Names are lower-case letters, digits and ``_`` (a letter first, at most 40): safe as a directory name and
as a PostgreSQL schema name alike.
"""

from __future__ import annotations

import logging
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.pool import NullPool

from mmsearch.storage import database as db
from mmsearch.errors import CollectionExistsError, CollectionNotFoundError, InvalidQueryError
from mmsearch.storage.indexdir import IndexDir, Manifest

log = logging.getLogger(__name__)

DEFAULT = "default"
SUBDIR = "collections"
SCHEMA_PREFIX = "mmsearch_"
_NAME = re.compile(r"^[a-z][a-z0-9_]{0,39}$")


def check_name(name: str) -> str:
    if not isinstance(name, str) or not _NAME.match(name):
        raise InvalidQueryError(f"collection name {name!r} is not valid: use lower-case letters, digits and _ "
                                "(a letter first, at most 40 characters)")
    return name


@dataclass(frozen=True)
class Place:
    """Where a collection lives: its index directory and, with a database URL, the URL scoped to it."""

    name: str
    path: Path
    database_url: str | None

    def index_dir(self) -> IndexDir:
        return IndexDir(self.path, self.database_url)

    def exists(self) -> bool:
        if self.database_url and self.name != DEFAULT and self.name not in _schemas(self.database_url):
            return False  # (asking a missing schema for its tables is an error on PostgreSQL)
        return self.index_dir().exists()


def schema_of(name: str) -> str:
    return SCHEMA_PREFIX + check_name(name)


def scoped_url(url: str, name: str) -> str:
    """``url`` with the collection's schema first on the search path (libpq ``options``)."""
    parsed = make_url(url)
    option = f"-csearch_path={schema_of(name)}"
    existing = parsed.query.get("options")
    options = f"{existing} {option}" if existing else option
    return parsed.update_query_dict({"options": options}).render_as_string(hide_password=False)


def place(root: Path, name: str, database_url: str | None = None) -> Place:
    root = Path(root).expanduser()
    if check_name(name) == DEFAULT:
        return Place(name, root, database_url or None)
    # an SQLite database URL names one file: named collections keep their own items.sqlite instead
    url = scoped_url(database_url, name) if db.is_postgres(database_url) else None
    return Place(name, root / SUBDIR / name, url)


def list_names(root: Path, database_url: str | None = None) -> list[str]:
    """The collections that exist: ``default`` first when the root holds an index, then by name."""
    root = Path(root).expanduser()
    names = [DEFAULT] if place(root, DEFAULT, database_url).exists() else []
    if db.is_postgres(database_url):
        candidates = _schemas(database_url)
    else:
        folder = root / SUBDIR
        candidates = sorted(p.name for p in folder.iterdir() if p.is_dir()) if folder.is_dir() else []
    for name in candidates:
        if _NAME.match(name) and name != DEFAULT and place(root, name, database_url).index_dir().exists():  # schema known to exist
            names.append(name)
    return names


def exists(root: Path, name: str, database_url: str | None = None) -> bool:
    return place(root, name, database_url).exists()


def create(root: Path, name: str, database_url: str | None, *, model_spec: str, model_id: str, dim: int,
           index_type: str | None = None, recall_target: float | None = None) -> Manifest:
    """A new, empty collection built for this model (items are added by the write API or `mmsearch index`)."""
    where = place(root, name, database_url)
    if where.exists():
        raise CollectionExistsError(f"collection {name!r} already exists")
    if where.database_url:
        _execute(database_url, f'CREATE SCHEMA IF NOT EXISTS "{schema_of(name)}"')
    idx = where.index_dir()
    idx.path.mkdir(parents=True, exist_ok=True)
    idx.open_store().close()  # creates the tables (the manifest of record lives in one of them)
    manifest = idx.create(model_spec, model_id, dim)
    if index_type is not None or recall_target is not None:
        from mmsearch.vectors.ann import choose_factory

        if index_type is not None:
            choose_factory(index_type, 0, dim)  # an unknown type is an error now, not at the first write
            manifest.index_type = index_type
        if recall_target is not None:
            manifest.recall_target = recall_target
        idx.write_manifest(manifest)
    log.info("created collection %s (%s) at %s", name, model_spec, idx.path)
    return manifest


def drop(root: Path, name: str, database_url: str | None = None) -> None:
    """Delete a named collection with everything in it. The default collection is the server's own
    ``--index-dir`` and is never dropped this way."""
    if check_name(name) == DEFAULT:
        raise InvalidQueryError("the default collection is the --index-dir itself; it cannot be dropped")
    where = place(root, name, database_url)
    if not where.exists():
        raise CollectionNotFoundError(f"no collection named {name!r}")
    idx = where.index_dir()
    with idx.write_lock():  # not while an index run or a server's writer is writing it
        if where.database_url:
            _execute(database_url, f'DROP SCHEMA IF EXISTS "{schema_of(name)}" CASCADE')
        shutil.rmtree(idx.path / "uploads", ignore_errors=True)
        for child in sorted(idx.path.iterdir()):
            if child.name != ".lock":
                shutil.rmtree(child) if child.is_dir() else child.unlink()
    shutil.rmtree(idx.path, ignore_errors=True)
    log.info("dropped collection %s", name)


def _execute(url: str, statement: str) -> None:
    engine = create_engine(url, poolclass=NullPool)
    try:
        with db.reaching(url), engine.begin() as conn:
            conn.execute(text(statement))
    finally:
        engine.dispose()


def _schemas(url: str) -> list[str]:
    engine = create_engine(url, poolclass=NullPool)
    try:
        with db.reaching(url), engine.connect() as conn:
            rows = conn.execute(text("SELECT schema_name FROM information_schema.schemata WHERE schema_name LIKE :p ORDER BY 1"),
                                {"p": SCHEMA_PREFIX.replace("_", "\\_") + "%"})
            return [r[0][len(SCHEMA_PREFIX):] for r in rows]
    finally:
        engine.dispose()
