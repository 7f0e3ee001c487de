"""FAISS vector index with explicit int64 ids (the same ids as the metadata store's rows).

Vectors are L2-normalised, so inner product is cosine similarity. Ids are never positions: results are
joined to metadata by id, so a skipped or deleted item can never shift metadata onto another vector.
"""

from __future__ import annotations

import os
from pathlib import Path

import faiss
import numpy as np

from mmsearch.errors import IndexCorruptError
from mmsearch.threads import faiss_threads_on_this_thread

DEFAULT_FACTORY = "Flat"


class VectorIndex:
    """One modality's vectors. ``factory`` is a FAISS index_factory string (Flat by default)."""

    def __init__(self, dim: int, factory: str = DEFAULT_FACTORY, index: faiss.Index | None = None) -> None:
        self.dim = dim
        self.factory = factory
        if index is None:
            base = faiss.index_factory(dim, factory, faiss.METRIC_INNER_PRODUCT)
            index = faiss.IndexIDMap2(base)
        self._index = index
        # Set when ids were removed from an index type that cannot remove (HNSW): the vectors are
        # still inside, so the index must be rebuilt from the store before anyone searches it.
        self.needs_rebuild = False
        # A read-only copy on another device (a GPU) that answers unfiltered searches; see mmsearch.vectors.device.
        self._search_copy: faiss.Index | None = None

    @property
    def native(self) -> faiss.Index:
        """The FAISS index itself, for tuning its search parameters (mmsearch.vectors.ann)."""
        return self._index

    @property
    def supports_remove(self) -> bool:
        base = faiss.downcast_index(self._index.index) if isinstance(self._index, faiss.IndexIDMap2) else self._index
        return not isinstance(base, faiss.IndexHNSW)

    def attach_search_copy(self, copy: faiss.Index) -> None:
        """Let ``copy`` (same vectors, e.g. on a GPU) answer unfiltered searches. Any change to this
        index drops it, so a copy never answers with vectors that were removed or misses added ones."""
        self._search_copy = copy

    def __len__(self) -> int:
        return int(self._index.ntotal)

    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        ids = np.ascontiguousarray(ids, dtype=np.int64)
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        if len(ids) == 0:
            return
        self._search_copy = None
        if vectors.shape != (len(ids), self.dim):
            raise ValueError(f"expected vectors of shape ({len(ids)}, {self.dim}), got {vectors.shape}")
        self._index.add_with_ids(vectors, ids)

    def remove(self, ids: np.ndarray) -> int:
        ids = np.ascontiguousarray(ids, dtype=np.int64)
        if len(ids) == 0:
            return 0
        self._search_copy = None
        if not self.supports_remove:
            self.needs_rebuild = True
            return 0
        return int(self._index.remove_ids(faiss.IDSelectorBatch(ids)))

    def ids(self) -> np.ndarray:
        return faiss.vector_to_array(self._index.id_map).astype(np.int64)

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """-> (scores [q, k'], ids [q, k']) best first, with k' = min(k, len(self)); no -1 padding."""
        queries = np.ascontiguousarray(np.atleast_2d(queries), dtype=np.float32)
        k = min(k, len(self))
        if k <= 0:
            return np.zeros((len(queries), 0), np.float32), np.zeros((len(queries), 0), np.int64)
        index = self._index if self._search_copy is None else self._search_copy
        faiss_threads_on_this_thread()
        scores, ids = index.search(queries, k)
        return scores, ids

    def search_subset(self, queries: np.ndarray, k: int, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Like ``search``, but only among ``ids`` (an IDSelectorBatch inside the FAISS search, not a
        post-filter), so k results come back whenever k of those ids are in the index. -1 ids pad rows
        when fewer match. Always on the CPU index: GPU indexes ignore the selector."""
        queries = np.ascontiguousarray(np.atleast_2d(queries), dtype=np.float32)
        ids = np.ascontiguousarray(ids, dtype=np.int64)
        k = min(k, len(self), len(ids))
        if k <= 0:
            return np.zeros((len(queries), 0), np.float32), np.zeros((len(queries), 0), np.int64)
        params = _selector_parameters(self._index, faiss.IDSelectorBatch(ids))
        faiss_threads_on_this_thread()
        return self._index.search(queries, k, params=params)

    def save(self, path: Path) -> None:
        """Write to a temporary file, fsync, then rename: readers see the old file or the new one."""
        path = Path(path)
        tmp = path.with_name(path.name + ".tmp")
        faiss.write_index(self._index, str(tmp))
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: Path, factory: str = DEFAULT_FACTORY, mmap: bool = False) -> "VectorIndex":
        flags = faiss.IO_FLAG_MMAP | faiss.IO_FLAG_READ_ONLY if mmap else 0
        if not Path(path).is_file():
            # FAISS reports a missing file as a generic RuntimeError; readers need to tell "swapped away" apart.
            raise FileNotFoundError(f"vector index {path} does not exist")
        try:
            index = faiss.read_index(str(path), flags)
        except RuntimeError as exc:
            raise IndexCorruptError(f"cannot read vector index {path}: {str(exc).splitlines()[0]}") from exc
        return cls(index.d, factory, index)


def _selector_parameters(index: faiss.Index, selector: faiss.IDSelector) -> faiss.SearchParameters:
    """Search parameters carrying ``selector``. IVF indexes refuse the base type, and their own type (like
    HNSW's) overrides the index's tuned knob (nprobe, efSearch) with its default, so the current values
    are copied in. FAISS's wrappers keep ``selector`` and the coarse parameters alive with the result."""
    base = faiss.downcast_index(index.index) if isinstance(index, faiss.IndexIDMap2) else faiss.downcast_index(index)
    ivf = faiss.try_extract_index_ivf(base)
    if ivf is not None:
        quantizer = faiss.downcast_index(ivf.quantizer)
        coarse = faiss.SearchParametersHNSW(efSearch=quantizer.hnsw.efSearch) if hasattr(quantizer, "hnsw") else None
        return faiss.SearchParametersIVF(sel=selector, nprobe=ivf.nprobe, max_codes=ivf.max_codes, quantizer_params=coarse)
    if hasattr(base, "hnsw"):
        return faiss.SearchParametersHNSW(sel=selector, efSearch=base.hnsw.efSearch)
    return faiss.SearchParameters(sel=selector)
