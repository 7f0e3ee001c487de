"""The on-disk layout of an index and its manifest.

    <index-dir>/manifest.json          model, dimension, counts, format version, generation, vector files
    <index-dir>/items.sqlite           metadata + embeddings (the source of truth)
    <index-dir>/image.g<N>.faiss       vectors of image items as of store generation N
    <index-dir>/text.g<N>.faiss        vectors of text items as of store generation N

Vector files carry the generation in their name and the manifest is replaced atomically, so the
manifest rename is the commit point: a reader sees either the old set of files or the new one. If the
manifest's generation is behind the database (a run was killed before it saved), the vectors are
rebuilt from the database on open, so a crash can cost time but never consistency.

With a database URL (``MMSEARCH_DATABASE_URL``, see ``mmsearch.storage.database``) there is no items.sqlite:
the metadata and the manifest of record live in that database, and the directory holds this machine's
vector files and a copy of the manifest.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import secrets
import time
from pathlib import Path
from typing import Iterator

from pydantic import BaseModel, Field, ValidationError
from sqlalchemy.exc import DatabaseError

from mmsearch.storage import database as db
from mmsearch.storage.checksums import check_file, check_signature, file_signature
from mmsearch.hashing import sha256_file
from mmsearch.errors import ConfigError, IndexBusyError, IndexCorruptError, IndexNotFoundError, ModelMismatchError
from mmsearch.vectors.index import DEFAULT_FACTORY, VectorIndex
from mmsearch.storage.store import MODALITIES, Store

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
MANIFEST = "manifest.json"
DATABASE = "items.sqlite"
LOCK = ".lock"


class Manifest(BaseModel):
    format_version: int = FORMAT_VERSION
    model_spec: str
    model_id: str
    dim: int
    generation: int = 0
    counts: dict[str, int] = Field(default_factory=lambda: {m: 0 for m in MODALITIES})
    vector_files: dict[str, str] = Field(default_factory=dict)
    # sha256 of each vector file, by file name: a damaged or truncated file is refused, naming the file
    checksums: dict[str, str] = Field(default_factory=dict)
    # [size, mtime_ns] of each vector file right after it was written: memory-mapped loads check this
    # instead of hashing the whole file (see mmsearch.storage.checksums)
    file_signatures: dict[str, list[int]] = Field(default_factory=dict)
    index_factory: dict[str, str] = Field(default_factory=lambda: {m: DEFAULT_FACTORY for m in MODALITIES})
    # What the user asked for (auto|flat|hnsw|ivf|ivfpq|sq8|factory string) and the recall it must keep;
    # ``ann`` holds, per modality, the tuned search setting and the recall it reached (see mmsearch.vectors.ann).
    index_type: str = "auto"
    recall_target: float = 0.95
    ann: dict[str, dict] = Field(default_factory=dict)
    created_at: float = Field(default_factory=time.time)
    updated_at: float = Field(default_factory=time.time)
    # The metadata database (URL without password) when it is not the directory's items.sqlite.
    database: str | None = None
    # Whether index runs read the text in images (OCR, `mmsearch index --ocr`); kept for later runs.
    ocr: bool = False


class IndexDir:
    """Paths and manifest handling for one index directory."""

    def __init__(self, path: Path, database_url: str | None = None) -> None:
        self.path = Path(path).expanduser()
        self.database_url = database_url or None
        if self.database_url:
            db.check_supported(self.database_url)

    @property
    def database(self) -> str:
        """Where the metadata lives, safe to show: the database URL without password, or items.sqlite."""
        return db.redact(self.database_url) if self.database_url else str(self.db_path.resolve())

    @property
    def manifest_path(self) -> Path:
        return self.path / MANIFEST

    @property
    def db_path(self) -> Path:
        return self.path / DATABASE

    def exists(self) -> bool:
        if self.database_url:
            self._check_no_sqlite_index()
            return db.read_state(self.database_url, db.MANIFEST_KEY) is not None
        return self.manifest_path.is_file()

    def read_manifest(self) -> Manifest:
        if self.database_url:
            return self._read_database_manifest()
        if not self.exists():
            raise IndexNotFoundError(f"no index at {self.path} (run `mmsearch index FOLDER --index-dir {self.path}` first)")
        try:
            raw = self.manifest_path.read_text(encoding="utf-8")
        except OSError as exc:
            raise IndexCorruptError(f"index manifest {self.manifest_path} is unreadable: {str(exc).splitlines()[0]}") from exc
        manifest = self._validated(raw, str(self.manifest_path))
        if manifest.database:
            raise ConfigError(f"the index at {self.path} keeps its metadata in the database {manifest.database}: "
                              "set MMSEARCH_DATABASE_URL to that database")
        return manifest

    def _validated(self, raw: str, where: str) -> Manifest:
        try:
            manifest = Manifest.model_validate_json(raw)
        except (ValidationError, ValueError) as exc:
            raise IndexCorruptError(f"index manifest {where} is unreadable: {str(exc).splitlines()[0]}") from exc
        if manifest.format_version > FORMAT_VERSION:
            raise IndexCorruptError(
                f"index at {self.path} has format {manifest.format_version}; this mmsearch reads up to {FORMAT_VERSION} (upgrade mmsearch)"
            )
        return manifest

    def _read_database_manifest(self) -> Manifest:
        """The manifest of record, from the database. Vector files this directory does not hold (another
        machine wrote them) are dropped from it, so they are rebuilt here from the database instead."""
        self._check_no_sqlite_index()
        raw = db.read_state(self.database_url, db.MANIFEST_KEY)
        if raw is None:
            raise IndexNotFoundError(f"no index in the database {self.database} (run `mmsearch index FOLDER` with MMSEARCH_DATABASE_URL set first)")
        manifest = self._validated(raw, f"in the database {self.database}")
        if not all((self.path / name).is_file() for name in manifest.vector_files.values()):
            manifest.vector_files, manifest.checksums = {}, {}
        return manifest

    def _check_no_sqlite_index(self) -> None:
        if self.db_path.exists():
            raise ConfigError(f"{self.path} holds an SQLite index ({DATABASE}): unset MMSEARCH_DATABASE_URL to use it, "
                              f"or give another --index-dir for the database {self.database}")

    def write_manifest(self, manifest: Manifest) -> None:
        manifest.updated_at = time.time()
        if self.database_url:
            manifest.database = self.database
        tmp = self.manifest_path.with_name(MANIFEST + ".tmp")
        with open(tmp, "w", encoding="utf-8") as fh:
            fh.write(manifest.model_dump_json(indent=2, exclude=None if manifest.database else {"database"}))
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, self.manifest_path)
        dir_fd = os.open(self.path, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
        if self.database_url:  # after the local copy: a reader sharing this directory finds the files named
            db.write_state(self.database_url, db.MANIFEST_KEY, manifest.model_dump_json(indent=2))

    def create(self, model_spec: str, model_id: str, dim: int) -> Manifest:
        self.path.mkdir(parents=True, exist_ok=True)
        manifest = Manifest(model_spec=model_spec, model_id=model_id, dim=dim)
        self.write_manifest(manifest)
        return manifest

    def open_store(self) -> Store:
        if self.database_url:
            self._check_no_sqlite_index()
            with db.reaching(self.database_url):
                return Store(self.database_url)
        try:
            return Store.at(self.db_path)
        except DatabaseError as exc:
            raise IndexCorruptError(f"index database {self.db_path} is unreadable: {str(exc.orig or exc).splitlines()[0]}") from exc

    @staticmethod
    def check_model(manifest: Manifest, model_id: str) -> None:
        if manifest.model_id != model_id:
            channels_only = manifest.model_id.split("+")[0] == model_id.split("+")[0]
            name = model_id.split("@")[0]
            same_name = "@" in model_id and manifest.model_id.split("@")[0] == name
            if channels_only:
                hint = ("the two differ only in mmsearch-lite's channels (+colour-..., +hubs-...): re-index into a new "
                        "--index-dir to use them, or set MMSEARCH_COLOUR / MMSEARCH_HUBS to how this index was built "
                        "(off: without that channel)")
            elif same_name:  # e.g. a new release of the default model's weights: its vectors are in another space
                hint = (f"{name}'s weights differ from the ones this index was built with (a new release "
                        "or retrained weights): index the folder again into a new --index-dir (or delete this one first)")
            else:
                hint = "use the same --model, or a new --index-dir for the other model"
            raise ModelMismatchError(f"this index was built with model {manifest.model_id} but {model_id} was asked for; {hint}")

    # --- vectors ---
    def load_vectors(self, manifest: Manifest, store: Store, mmap: bool = False) -> tuple[dict[str, VectorIndex], int]:
        """-> (vector index per modality, generation they reflect). Rebuilds from the store if stale."""
        generation = store.generation()
        if manifest.generation == generation and all(m in manifest.vector_files for m in MODALITIES):
            indexes = {}
            for modality in MODALITIES:
                name = manifest.vector_files[modality]
                path = self.path / name
                if mmap:
                    check_signature(path, manifest.checksums.get(name), manifest.file_signatures.get(name))
                else:
                    check_file(path, manifest.checksums.get(name))
                indexes[modality] = VectorIndex.load(path, manifest.index_factory.get(modality, DEFAULT_FACTORY), mmap=mmap)
                if indexes[modality].dim != manifest.dim:
                    raise IndexCorruptError(f"{path} holds {indexes[modality].dim}-d vectors, manifest says {manifest.dim}")
            return indexes, generation
        if generation:
            log.info("no vector files of database generation %s here (the manifest's are of generation %s): "
                     "rebuilding them from the database", generation, manifest.generation)
        return self.rebuild_vectors(manifest, store), generation

    def rebuild_vectors(self, manifest: Manifest, store: Store) -> dict[str, VectorIndex]:
        from mmsearch.vectors import ann

        indexes = {}
        for modality in MODALITIES:
            factory = manifest.index_factory.get(modality, DEFAULT_FACTORY)
            index = ann.build_index(manifest.dim, factory, lambda m=modality: store.iter_vectors(m), store.count(modality))
            ann.set_search_params(index, manifest.ann.get(modality, {}).get("params", {}))
            indexes[modality] = index
        return indexes

    def save_vectors(self, manifest: Manifest, indexes: dict[str, VectorIndex], generation: int) -> Manifest:
        """Write generation-named vector files, then switch the manifest to them, then drop old files."""
        files, checksums, signatures = {}, {}, {}
        for modality, index in indexes.items():
            # A fresh name every time: a published file is never rewritten in place, so a reader that
            # checked a file's checksum can never see it replaced under it.
            name = f"{modality}.g{generation}.{secrets.token_hex(4)}.faiss"
            index.save(self.path / name)
            files[modality] = name
            checksums[name] = sha256_file(self.path / name)
            signatures[name] = file_signature(self.path / name)
        manifest.vector_files = files
        manifest.checksums = checksums
        manifest.file_signatures = signatures
        manifest.generation = generation
        manifest.counts = {m: len(i) for m, i in indexes.items()}
        self.write_manifest(manifest)
        self.remove_unreferenced_vector_files(manifest)
        return manifest

    def remove_unreferenced_vector_files(self, manifest: Manifest) -> list[str]:
        """Delete vector files (and half-written temporaries) the manifest does not name: leftovers of
        older versions or of a run killed between writing its files and switching the manifest."""
        keep = set(manifest.vector_files.values())
        removed = []
        for path in sorted(self.path.glob("*.faiss")) + sorted(self.path.glob("*.faiss.tmp")):
            if path.name not in keep:
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()
                removed.append(path.name)
        return removed

    @contextlib.contextmanager
    def write_lock(self) -> Iterator[None]:
        """Only one index run may write an index directory at a time; readers never need the lock."""
        self.path.mkdir(parents=True, exist_ok=True)
        fh = open(self.path / LOCK, "w")
        try:
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError as exc:
                raise IndexBusyError(f"another `mmsearch index` run is writing {self.path}; wait for it to finish") from exc
            with db.writer_lock(self.database_url):  # PostgreSQL: one writer per catalogue across machines
                yield
        finally:
            fh.close()


def describe(path: Path, database_url: str | None = None, faiss_device: str = "auto") -> dict:
    """Facts for `mmsearch info`, without loading a model."""
    from mmsearch.vectors import device

    idx = IndexDir(path, database_url)
    manifest = idx.read_manifest()
    store = idx.open_store()
    try:
        return {
            "index_dir": str(idx.path.resolve()),
            "database": idx.database,
            "format_version": manifest.format_version,
            "model": manifest.model_spec,
            "model_id": manifest.model_id,
            "dim": manifest.dim,
            "counts": {m: store.count(m) for m in MODALITIES},
            "index_factory": manifest.index_factory,
            "index_type": manifest.index_type,
            "recall_target": manifest.recall_target,
            "search_params": {m: t.get("params", {}) for m, t in manifest.ann.items()},
            "tuned_recall": {m: round(t.get("recall", 0.0), 4) for m, t in manifest.ann.items()},
            "generation": store.generation(),
            "vectors_up_to_date": manifest.generation == store.generation(),
            "last_run": store.last_run(),
            "failures": len(store.failures()),
            "updated_at": manifest.updated_at,
            "faiss_device": device.describe(faiss_device),
        }
    finally:
        store.close()


