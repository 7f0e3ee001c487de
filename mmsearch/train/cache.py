"""On-disk cache of frozen-tower features, so a CPU pays for the towers once, not once per epoch.

Features live in append-only shards (``.npz``: a key array + a float16 feature array) under
``cache_dir/<namespace>/``. Keys name everything the features depend on (model, image file hash,
augmentation recipe and view number; or the exact text), so a changed file or recipe simply misses.
Shards are written with tmp + rename: an interrupted extraction keeps what finished.
"""

from __future__ import annotations

import hashlib
import logging
import os
import uuid
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

log = logging.getLogger(__name__)


def text_key(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


class ShardStore:
    """A key -> float16 vector map persisted as shards in one folder."""

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self._rows: dict[str, np.ndarray] = {}
        for shard in sorted(self.folder.glob("*.npz")):
            try:
                with np.load(shard, allow_pickle=False) as data:
                    for key, row in zip(data["keys"].tolist(), data["features"]):
                        self._rows[key] = row
            except (OSError, ValueError, KeyError) as exc:  # a damaged shard is recomputed, not fatal
                log.warning("ignoring unreadable cache shard %s: %s", shard, exc)
        self.computed = 0  # rows computed (not found) by this process

    def __contains__(self, key: str) -> bool:
        return key in self._rows

    def __len__(self) -> int:
        return len(self._rows)

    def get(self, keys: Sequence[str]) -> np.ndarray:
        return np.stack([self._rows[k] for k in keys])

    def put(self, keys: Sequence[str], features: np.ndarray) -> None:
        if not len(keys):
            return
        features = np.asarray(features, dtype=np.float16)
        tmp = self.folder / f".{uuid.uuid4().hex}.tmp.npz"
        np.savez(tmp, keys=np.array(list(keys)), features=features)
        os.replace(tmp, self.folder / f"{uuid.uuid4().hex}.npz")
        for key, row in zip(keys, features):
            self._rows[key] = row
        self.computed += len(keys)

    def fill(self, keys: Sequence[str], compute: Callable[[list[int]], np.ndarray], chunk: int = 256, label: str = "features") -> np.ndarray:
        """Rows for ``keys``; missing ones come from ``compute(positions)`` in chunks, saved as they finish."""
        first_position: dict[str, int] = {}
        for i, key in enumerate(keys):
            if key not in self._rows:
                first_position.setdefault(key, i)
        todo = list(first_position.values())
        if todo:
            log.info("computing %d %s (%d cached)", len(todo), label, len(keys) - len(todo))
        for start in range(0, len(todo), chunk):
            part = todo[start : start + chunk]
            self.put([keys[i] for i in part], compute(part))
            log.info("%s: %d/%d computed", label, min(start + chunk, len(todo)), len(todo))
        return self.get(keys)
