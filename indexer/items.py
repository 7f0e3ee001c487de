"""What a scan finds: one item to index (``SourceItem``, with its content hash) and a scan's result.

Shared by the folder/manifest scanner (``sources``) and the catalogue reader (``catalogue``), which
calls back into neither.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass, field
from typing import Callable

from mmsearch.hashing import sha256_file

# (size, mtime) -> sha256 from the previous run, looked up by item key
HashCache = Callable[[str, int, float], "str | None"]


@dataclass
class SourceItem:
    key: str
    modality: str  # "image" | "text" | a unit: "video" | "document" (indexer.units)
    path: str | None
    text: str | None
    meta: dict = field(default_factory=dict)
    size: int = 0
    mtime: float = 0.0
    sha256: str = ""


@dataclass
class ScanResult:
    items: list[SourceItem] = field(default_factory=list)
    failures: list[tuple[str, str]] = field(default_factory=list)  # (key, reason)
    scope: str = ""  # keys under this prefix belong to the scanned source (for deletions)


def stat_and_hash(item: SourceItem, known: HashCache | None) -> None:
    """Fill in size, mtime and sha256 (reused from the previous run when size and mtime match)."""
    st = os.stat(item.path)
    if not stat.S_ISREG(st.st_mode):
        # A FIFO or device named like an image would block or stream forever when read.
        raise OSError("not a regular file")
    item.size, item.mtime = st.st_size, st.st_mtime
    cached = known(item.key, item.size, item.mtime) if known else None
    item.sha256 = cached or sha256_file(item.path)
