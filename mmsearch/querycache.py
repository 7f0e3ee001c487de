"""A cache of recent text-query embeddings, in front of the model.

A shop's queries repeat ("dress", "red sneakers", the same query paged through): the text tower is the
largest share of a text search's CPU, and its answer for a given string never changes while the model
does not (a cache belongs to one loaded encoder). Entries are read-only arrays, so a cached vector is
handed out without a copy and no caller can change it for the next one.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Sequence

import numpy as np

from mmsearch.encoders.base import Encoder
from mmsearch.metrics import QUERY_CACHE


class CachedTextEncoder:
    """An :class:`Encoder` front that answers repeated ``encode_texts`` inputs from an LRU of ``size``
    texts and sends only the others to the model (in one call); images pass straight through."""

    def __init__(self, encoder: Encoder, size: int = 4096) -> None:
        self.inner = encoder
        self.size = size
        self._vectors: OrderedDict[str, np.ndarray] = OrderedDict()
        self._lock = threading.Lock()

    def __getattr__(self, name: str):  # spec, model_id, dim, device, encode_images, close, ...
        return getattr(self.inner, name)

    def encode_texts(self, texts: Sequence[str]) -> np.ndarray:
        texts = list(texts)
        found = self._lookup(texts)
        missing = list(dict.fromkeys(t for t, v in zip(texts, found) if v is None))
        QUERY_CACHE.labels(result="hit").inc(len(texts) - sum(v is None for v in found))
        QUERY_CACHE.labels(result="miss").inc(sum(v is None for v in found))
        if missing:
            fresh = dict(zip(missing, np.asarray(self.inner.encode_texts(missing), dtype=np.float32)))
            self._store(fresh)
            found = [v if v is not None else fresh[t] for t, v in zip(texts, found)]
        if not found:
            return np.zeros((0, self.inner.dim), dtype=np.float32)
        return np.stack(found)

    def _lookup(self, texts: list[str]) -> list[np.ndarray | None]:
        with self._lock:
            out = []
            for text in texts:
                vector = self._vectors.get(text)
                if vector is not None:
                    self._vectors.move_to_end(text)
                out.append(vector)
            return out

    def _store(self, fresh: dict[str, np.ndarray]) -> None:
        with self._lock:
            for text, vector in fresh.items():
                vector = vector.copy()
                vector.setflags(write=False)
                self._vectors[text] = vector
                self._vectors.move_to_end(text)
            while len(self._vectors) > self.size:
                self._vectors.popitem(last=False)


def without_query_cache(encoder: Encoder) -> Encoder:
    """The model behind a query cache: for item texts (a bulk write of products would otherwise push
    every user query out of the cache)."""
    return encoder.inner if isinstance(encoder, CachedTextEncoder) else encoder


__all__ = ["CachedTextEncoder", "without_query_cache"]
