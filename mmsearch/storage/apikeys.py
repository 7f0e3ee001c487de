"""API keys with scopes: who may read, write or administer which collection.

A key is ``mms_<id>_<secret>``: the id is public (it names the key in ``mmsearch keys list`` and
``revoke``), the secret is shown once at creation and only its SHA-256 is stored. A plain hash is the
right tool here (not a slow password hash): the secret is 256 random bits, so there is nothing to guess
and a fast check keeps every request cheap. The presented key's hash is compared with
``hmac.compare_digest``, and an unknown id is compared against a dummy hash, so answering takes the
same time whether the id exists or not.

Scopes are ordered: ``admin`` covers ``write`` covers ``read``. A key belongs to one collection, or to
none (a global key, good for every collection and for server-wide routes such as ``/metrics``).

Where keys live: in the metadata database when ``MMSEARCH_DATABASE_URL`` is set (every API replica
then sees the same keys, and a revocation reaches all of them), else in ``<index-dir>/keys.sqlite``,
beside the indexes of every collection the server serves. Keys are not part of any one index: they
survive re-indexing and dropping collections. The single ``MMSEARCH_API_KEY`` setting keeps working as
a global admin key.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import logging
import re
import secrets
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import Column, Float, LargeBinary, MetaData, String, Table, create_engine, inspect, select, update
from sqlalchemy.engine import Engine
from sqlalchemy.pool import NullPool

from mmsearch.storage.database import reaching
from mmsearch.errors import ConfigError, KeyNotFoundError

log = logging.getLogger(__name__)

KEY_PREFIX = "mms_"
ID_CHARS = 12  # hex digits of the public key id
KEYS_FILE = "keys.sqlite"
TABLE = "mmsearch_api_keys"
ENV_KEY_ID = "env"  # the id MMSEARCH_API_KEY appears under
_COLLECTION = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_DUMMY_DIGEST = hashlib.sha256(b"no such key").digest()


class Scope(str, enum.Enum):
    """What a key may do; each scope includes the ones below it."""

    READ = "read"
    WRITE = "write"
    ADMIN = "admin"

    def covers(self, needed: "Scope") -> bool:
        return _RANK[self] >= _RANK[needed]


_RANK = {Scope.READ: 0, Scope.WRITE: 1, Scope.ADMIN: 2}

_metadata = MetaData()
_keys = Table(
    TABLE, _metadata,
    Column("id", String(ID_CHARS), primary_key=True),
    Column("name", String(200), nullable=False),
    Column("scope", String(10), nullable=False),
    Column("collection", String(64), nullable=True),
    Column("digest", LargeBinary(32), nullable=False),
    Column("created_at", Float, nullable=False),
    Column("revoked_at", Float, nullable=True),
)


@dataclass(frozen=True)
class ApiKey:
    """A key as stored (never its secret). ``collection`` None = every collection."""

    id: str
    name: str
    scope: Scope
    collection: str | None
    created_at: float
    revoked_at: float | None = None
    digest: bytes = field(default=b"", repr=False, compare=False)

    @property
    def revoked(self) -> bool:
        return self.revoked_at is not None

    def allows(self, needed: Scope, collection: str | None) -> bool:
        """May this key do ``needed`` on ``collection`` (None: a server-wide resource, global keys only)?"""
        if self.revoked or not self.scope.covers(needed):
            return False
        return self.collection is None or self.collection == collection

    def describe(self) -> str:
        where = f"collection {self.collection!r}" if self.collection else "every collection"
        return f"key {self.id} ({self.scope.value} on {where})"

    def public(self) -> dict:
        """What ``keys list`` shows: everything but the hash."""
        return {"id": self.id, "name": self.name, "scope": self.scope.value, "collection": self.collection,
                "created_at": self.created_at, "revoked_at": self.revoked_at}


def digest(secret: str | bytes) -> bytes:
    return hashlib.sha256(secret.encode("utf-8") if isinstance(secret, str) else secret).digest()


def key_id_of(given: bytes) -> str | None:
    """The public id inside a presented key, or None when it is not shaped like one of ours."""
    prefix = KEY_PREFIX.encode()
    if not given.startswith(prefix) or len(given) < len(prefix) + ID_CHARS + 2 or given[len(prefix) + ID_CHARS] != ord("_"):
        return None
    try:
        return given[len(prefix): len(prefix) + ID_CHARS].decode("ascii")
    except UnicodeDecodeError:
        return None


def check_collection_name(collection: str | None) -> None:
    if collection is not None and not _COLLECTION.match(collection):
        raise ConfigError(f"collection name {collection!r}: use 1-64 letters, digits, '_', '-' or '.'")


def env_key(secret: str) -> ApiKey:
    """``MMSEARCH_API_KEY``: a global admin key that lives in the environment, not the store."""
    return ApiKey(ENV_KEY_ID, "MMSEARCH_API_KEY", Scope.ADMIN, None, 0.0, None, digest(secret))


class KeyStore:
    """The keys table, in the metadata database (``url``) or in a small SQLite file of its own."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._engine: Engine = create_engine(url, poolclass=NullPool)

    @classmethod
    def beside(cls, index_dir: Path, database_url: str | None = None) -> "KeyStore":
        """The store a server over ``index_dir`` (and maybe a shared database) uses; see the module doc."""
        return cls(database_url or f"sqlite:///{Path(index_dir) / KEYS_FILE}")

    def _exists(self) -> bool:
        if self.url.startswith("sqlite:///") and not Path(self.url[len("sqlite:///"):]).exists():
            return False  # reading must not create an empty database file
        with reaching(self.url), self._engine.connect() as conn:
            return inspect(conn).has_table(TABLE)

    def load(self) -> list[ApiKey]:
        """Every key, revoked ones included (they keep auth switched on); empty when none were ever made."""
        if not self._exists():
            return []
        with reaching(self.url), self._engine.connect() as conn:
            rows = conn.execute(select(_keys).order_by(_keys.c.created_at, _keys.c.id)).mappings().all()
        return [ApiKey(r["id"], r["name"], Scope(r["scope"]), r["collection"], r["created_at"], r["revoked_at"], bytes(r["digest"]))
                for r in rows]

    def create(self, scope: Scope, collection: str | None = None, name: str = "") -> tuple[ApiKey, str]:
        """-> (the key, its full secret string). The secret is not kept: show it to the user once."""
        check_collection_name(collection)
        if self.url.startswith("sqlite:///"):
            Path(self.url[len("sqlite:///"):]).parent.mkdir(parents=True, exist_ok=True)
        key_id = secrets.token_hex(ID_CHARS // 2)
        secret = f"{KEY_PREFIX}{key_id}_{secrets.token_urlsafe(32)}"
        key = ApiKey(key_id, name or f"{scope.value} key", Scope(scope), collection, time.time(), None, digest(secret))
        with reaching(self.url), self._engine.begin() as conn:
            _metadata.create_all(conn, tables=[_keys], checkfirst=True)
            conn.execute(_keys.insert().values(id=key.id, name=key.name, scope=key.scope.value, collection=collection,
                                               digest=key.digest, created_at=key.created_at, revoked_at=None))
        log.info("created %s", key.describe())
        return key, secret

    def revoke(self, key_id: str) -> ApiKey:
        """Mark a key revoked (kept, so the list shows what was revoked when). Servers drop it within
        their key refresh interval."""
        found = 0
        if self._exists():
            with reaching(self.url), self._engine.begin() as conn:
                found = conn.execute(
                    update(_keys).where(_keys.c.id == key_id, _keys.c.revoked_at.is_(None)).values(revoked_at=time.time())
                ).rowcount
        if not found:
            known = {k.id: k for k in self.load()}
            if key_id in known:
                return known[key_id]  # revoking twice is not an error
            raise KeyNotFoundError(f"no API key with id {key_id!r} (see `mmsearch keys list`)")
        return next(k for k in self.load() if k.id == key_id)

    def close(self) -> None:
        self._engine.dispose()


class KeyRing:
    """The keys a running server checks requests against, held in memory (a request never touches the
    database) and re-read by :meth:`refresh` (the server calls it every few seconds, off the event loop)."""

    def __init__(self, store: KeyStore | None, env_secret: str | None = None) -> None:
        self.store = store
        self._env = env_key(env_secret) if env_secret else None
        self._by_id: dict[str, ApiKey] = {}
        self._lock = threading.Lock()
        self.loaded_at = 0.0
        self.refresh()

    @property
    def enabled(self) -> bool:
        """Auth is on once any key exists (a revoked one too: revoking the last key must not open the server)."""
        return self._env is not None or bool(self._by_id)

    def refresh(self) -> None:
        if self.store is None:
            return
        try:
            keys = self.store.load()
        except Exception as exc:  # keep the keys already known; an unreachable database is logged, not fatal
            log.warning("could not re-read the API keys, keeping the %d known: %s", len(self._by_id), exc)
            return
        with self._lock:
            self._by_id = {k.id: k for k in keys}
            self.loaded_at = time.monotonic()

    def authenticate(self, given: bytes) -> ApiKey | None:
        """The active key ``given`` is, or None. Constant-time over the hashes of the secrets."""
        presented = digest(given)
        if self._env is not None and hmac.compare_digest(presented, self._env.digest):
            return self._env
        key_id = key_id_of(given)
        key = self._by_id.get(key_id) if key_id else None
        matches = hmac.compare_digest(presented, key.digest if key is not None else _DUMMY_DIGEST)
        if key is None or not matches or key.revoked:
            return None
        return key


__all__ = ["ApiKey", "KeyRing", "KeyStore", "Scope", "check_collection_name", "digest", "env_key", "key_id_of"]
