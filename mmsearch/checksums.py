"""Content checksums of index files, recorded in the manifest and checked before a file is trusted."""

from __future__ import annotations

import hashlib
from pathlib import Path

from mmsearch.errors import IndexCorruptError

_BLOCK = 1 << 20


def file_sha256(path: Path) -> str:
    """Hex SHA-256 of a file, read a block at a time so memory stays flat for large vector files."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(_BLOCK), b""):
            digest.update(block)
    return digest.hexdigest()


def check_file(path: Path, expected: str | None) -> None:
    """Raise IndexCorruptError naming ``path`` if its content does not hash to ``expected``.

    ``expected`` is None for files written before checksums were recorded: those are not checked.
    A missing file raises FileNotFoundError, so a reader can tell "swapped away by an index run"
    apart from "damaged".
    """
    if expected is None:
        return
    actual = file_sha256(path)
    if actual != expected:
        raise IndexCorruptError(
            f"index file {path} is corrupt or truncated (checksum mismatch); "
            "run `mmsearch verify --repair` to rebuild it from the database"
        )
