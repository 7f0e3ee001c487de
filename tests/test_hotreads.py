"""The driver-level SQLite reads of the search path give what the ORM path gives, and see new writes."""

from __future__ import annotations

import numpy as np

from mmsearch.storage.store import NewItem, Store


def _item(n: int, meta: dict | None = None) -> NewItem:
    return NewItem(key=f"k{n}", modality="image" if n % 2 else "text", path=f"/data/{n}.jpg" if n % 2 else None,
                   sha256=f"{n:064x}", size=n, mtime=float(n), text=f"item {n}", meta=meta if meta is not None else {"n": n, "tags": ["a", "b"]})


def test_hot_reads_match_the_orm_and_see_new_writes(tmp_path):
    store = Store.at(tmp_path / "items.sqlite")
    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((1200, 8)).astype(np.float32)
    ids = store.write_batch([_item(n) for n in range(1200)], vectors)
    wanted = ids[::3] + [10**12]  # more than one IN chunk, and an unknown id
    fast_records, fast_vectors = store.get_many(wanted), store.vectors_for(wanted)
    reader, store._reader = store._reader, None
    assert reader is not None
    slow_records, slow_vectors = store.get_many(wanted), store.vectors_for(wanted)
    store._reader = reader
    assert fast_records == slow_records and len(fast_records) == len(ids[::3])
    assert fast_vectors.keys() == slow_vectors.keys()
    assert all(np.array_equal(fast_vectors[i], slow_vectors[i]) for i in fast_vectors)
    assert np.array_equal(fast_vectors[ids[3]], vectors[3])
    # a write after a read is visible to the next read (no stale snapshot on a kept connection)
    [new_id] = store.write_batch([_item(5000, meta={})], vectors[:1])
    assert store.get_many([new_id])[new_id].meta == {} and new_id in store.vectors_for([new_id])
    store.delete_items([ids[0]])
    assert ids[0] not in store.get_many([ids[0]]) and ids[0] not in store.vectors_for([ids[0]])
    store.close()
