"""Content checksums of index files, recorded in the manifest and checked before a file is trusted.

Two strengths of check:

* ``check_file`` hashes the whole file (SHA-256). Loading a vector index into memory reads the whole
  file anyway, so hashing it on the way costs little and catches any damage.
* ``check_signature`` compares the file's size and modification time (ns) with what the writer recorded
  right after writing it. Memory-mapped serving uses it: hashing would read every page of a file that
  mmap exists to leave on disk (about 3 GB per load at 1M x 768 float32), and a server loads a fresh
  file after every index run. Truncation, rewriting and replacement change the signature; silent bit
  rot under an unchanged mtime does not, which is what ``mmsearch verify`` (always a full hash) is for.
"""

from __future__ import annotations

import os
from pathlib import Path

from mmsearch.errors import IndexCorruptError
from mmsearch.hashing import sha256_file


def file_signature(path: Path) -> list[int]:
    """[size in bytes, mtime in ns] of ``path``, as recorded in the manifest."""
    st = os.stat(path)
    return [int(st.st_size), int(st.st_mtime_ns)]


def _corrupt(path: Path) -> IndexCorruptError:
    return IndexCorruptError(
        f"index file {path} is corrupt or truncated (checksum mismatch); "
        "run `mmsearch verify --repair` to rebuild it from the database"
    )


def check_file(path: Path, expected: str | None) -> None:
    """Raise IndexCorruptError naming ``path`` if its content does not hash to ``expected``.

    ``expected`` is None for files written before checksums were recorded: those are not checked.
    A missing file raises FileNotFoundError, so a reader can tell "swapped away by an index run"
    apart from "damaged".
    """
    if expected is None:
        return
    if sha256_file(path) != expected:
        raise _corrupt(path)


def check_signature(path: Path, expected_digest: str | None, expected_signature: list[int] | None) -> None:
    """The cheap check for memory-mapped loads: trust ``path`` when its size and mtime are exactly what
    the writer recorded; otherwise (a copied index directory, a file written by an older version, or
    damage) fall back to the full hash, which decides."""
    if expected_signature is not None and file_signature(path) == list(expected_signature):
        return
    check_file(path, expected_digest)
