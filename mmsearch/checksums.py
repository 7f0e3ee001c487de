"""Content checksums of index files, recorded in the manifest and checked before a file is trusted."""

from __future__ import annotations

from pathlib import Path

from mmsearch.errors import IndexCorruptError
from mmsearch.hashing import sha256_file


def check_file(path: Path, expected: str | None) -> None:
    """Raise IndexCorruptError naming ``path`` if its content does not hash to ``expected``.

    ``expected`` is None for files written before checksums were recorded: those are not checked.
    A missing file raises FileNotFoundError, so a reader can tell "swapped away by an index run"
    apart from "damaged".
    """
    if expected is None:
        return
    actual = sha256_file(path)
    if actual != expected:
        raise IndexCorruptError(
            f"index file {path} is corrupt or truncated (checksum mismatch); "
            "run `mmsearch verify --repair` to rebuild it from the database"
        )
