"""Apply a batch of changes to the store and the vector indexes, and publish them atomically: the one writer
of an index, used by `mmsearch index` (the indexer) and by anything else that writes (below both, so the
query service never has to import the indexer to write).

Every batch is one database transaction holding items together with their vectors, so a run killed
at any instant leaves a consistent database; the vector files are published (generation-named files,
then an atomic manifest swap) at the end of the run. A killed run therefore leaves the previous
version searchable, and the next run picks up where it stopped: committed batches count as indexed.
"""

from __future__ import annotations

import logging
from typing import Sequence

import numpy as np

from mmsearch.vectors.ann import AnnOptions, maintain
from mmsearch.vectors.index import VectorIndex
from mmsearch.storage.indexdir import IndexDir, Manifest
from mmsearch.storage.store import ItemRecord, NewItem, Store

log = logging.getLogger(__name__)


class IndexWriter:
    def __init__(self, index_dir: IndexDir, manifest: Manifest, store: Store, ann_options: AnnOptions | None = None) -> None:
        self.index_dir, self.manifest, self.store = index_dir, manifest, store
        self.ann_options = ann_options or AnnOptions(manifest.index_type, manifest.recall_target)
        self.indexes: dict[str, VectorIndex]
        self.indexes, _ = index_dir.load_vectors(manifest, store)

    def add(self, items: Sequence[NewItem], vectors: np.ndarray) -> list[int]:
        """Insert new items, or re-embed existing ids, with their vectors."""
        if not items:
            return []
        ids = self.store.write_batch(items, vectors)
        self._add_vectors(items, ids, vectors)
        return ids

    def update(self, changes: Sequence[tuple[int, dict]]) -> None:
        """Metadata-only changes (renames, moves, new captions): vectors stay as they are."""
        self.store.update_items(changes)

    def delete(self, records: Sequence[ItemRecord]) -> None:
        if not records:
            return
        self.store.delete_items([r.id for r in records])
        self._remove_vectors(records)

    def apply(self, items: Sequence[NewItem], vectors: np.ndarray, updates: Sequence[tuple[int, dict]],
              deletes: Sequence[ItemRecord]) -> list[int]:
        """Deletes, metadata updates and new/re-embedded items as ONE store transaction (the HTTP write
        API acknowledges a write once it is committed: it must be there whole or not at all)."""
        ids = self.store.apply_changes(items, vectors, updates, [r.id for r in deletes])
        self._remove_vectors(deletes)
        self._add_vectors(items, ids, vectors)
        return ids

    def _add_vectors(self, items: Sequence[NewItem], ids: Sequence[int], vectors: np.ndarray) -> None:
        for modality in {item.modality for item in items}:
            rows = [i for i, item in enumerate(items) if item.modality == modality]
            replaced = [ids[i] for i in rows if items[i].id is not None]
            index = self.indexes[modality]
            index.remove(np.array(replaced, dtype=np.int64))
            index.add(np.array([ids[i] for i in rows], dtype=np.int64), vectors[rows])

    def _remove_vectors(self, records: Sequence[ItemRecord]) -> None:
        for modality in {r.modality for r in records}:
            self.indexes[modality].remove(np.array([r.id for r in records if r.modality == modality], dtype=np.int64))

    def _maintain_indexes(self) -> None:
        """Switch between exact and approximate search as the collection crosses the threshold, rebuild
        indexes that hold removed vectors, and re-tune search settings to the recall target."""
        for modality, index in list(self.indexes.items()):
            index, tuning = maintain(
                self.manifest.dim, index, lambda m=modality: self.store.iter_vectors(m), self.ann_options, self.manifest.ann.get(modality),
                self.store.vectors_for,
            )
            self.indexes[modality] = index
            self.manifest.index_factory[modality] = index.factory
            if tuning is None:
                self.manifest.ann.pop(modality, None)
            else:
                self.manifest.ann[modality] = tuning

    def publish(self) -> Manifest:
        self._maintain_indexes()
        self.manifest = self.index_dir.save_vectors(self.manifest, self.indexes, self.store.generation())
        return self.manifest
