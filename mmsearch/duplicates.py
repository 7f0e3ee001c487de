"""Near-duplicate images: groups of copies of one picture, best copy first.

Never all pairs (1M pictures are 5e11 pairs). Candidate pairs come from nearest-neighbour searches,
then each candidate is checked on the pictures themselves:

1. **candidates by fingerprint**: every picture's visual fingerprint (mmsearch.imaging.fingerprint; cached by
   content hash beside the index, so only new or changed files are decoded) is compared with its nearest
   fingerprints; neighbours above ``candidate_floor`` are candidates. Below the ANN threshold an exact
   FAISS search finds them; above it a self-join over coarse lists (mmsearch.vectors.selfjoin: the
   members of each k-means list compared as matrix products) finds ~99 % of the pairs above the floor
   (planted copies: all of them, at 100k and 1M).
2. **candidates by meaning**: the same over the stored image vectors (the index's own image index below the
   ANN threshold, the self-join above it); neighbours above ``embedding_floor`` cosine are candidates
   too (a model that sees through heavier edits finds copies the fingerprint misses).
   A picture keeps up to MAX_NEIGHBOURS neighbours (the k-NN search's k grows while all of its
   neighbours still qualify), so a picture with many copies is not cut off at k.
3. **confirmation**: a candidate pair is a duplicate when the crop-tolerant visual similarity of the
   two pictures (mmsearch.imaging.fingerprint.visual_similarity) reaches ``threshold``.
4. **groups**: connected components of confirmed pairs; in each, the best copy first: the most pixels,
   then the oldest (capture time when the photo metadata has one, else the file's mtime), then the
   lowest id.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Callable, Iterable

import numpy as np
from PIL import Image

from mmsearch.vectors import ann
from mmsearch.errors import InvalidQueryError
from mmsearch.imaging.fingerprint import FingerprintCache, crop_variants, fingerprint, of_files, visual_similarity
from mmsearch.vectors.index import VectorIndex
from mmsearch.vectors.selfjoin import best_per_pair, close_pairs
from mmsearch.storage.store import IMAGE, ItemRecord

log = logging.getLogger(__name__)

CACHE_FILE = "fingerprints.npz"
MAX_NEIGHBOURS = 256  # a picture with more copies than this still joins its group through them
QUERY_BATCH = 4096

# (queries [q, d], k) -> (scores [q, k'], ids [q, k']; -1 pads)
Search = Callable[[np.ndarray, int], "tuple[np.ndarray, np.ndarray]"]


@dataclass(frozen=True)
class DuplicateOptions:
    threshold: float = 0.95  # visual similarity a candidate pair must reach (copies ~0.99, others < ~0.9)
    neighbours: int = 8  # nearest neighbours asked per picture at first
    candidate_floor: float = 0.7  # fingerprint similarity that makes a neighbour worth checking
    embedding_floor: float = 0.9  # search-embedding cosine that makes a neighbour worth checking

    def check(self) -> "DuplicateOptions":
        if not 0.0 < self.threshold <= 1.0:
            raise InvalidQueryError("threshold must be in (0, 1]")
        if not 1 <= self.neighbours <= MAX_NEIGHBOURS:
            raise InvalidQueryError(f"neighbours must be between 1 and {MAX_NEIGHBOURS}")
        return self


@dataclass
class Copy:
    id: int
    path: str | None
    width: int | None
    height: int | None
    taken: str | None  # capture time (photo metadata) or the file's mtime, ISO-8601
    bytes: int
    similarity: float  # visual similarity to the group's best copy (1.0 for the best itself)

    @property
    def pixels(self) -> int:
        return (self.width or 0) * (self.height or 0)


@dataclass
class DuplicateGroup:
    copies: list[Copy]  # best first

    def to_dict(self) -> dict:
        return {"best": self.copies[0].id, "copies": [asdict(c) for c in self.copies]}


@dataclass
class DuplicateReport:
    groups: list[DuplicateGroup]
    images: int  # pictures considered
    options: DuplicateOptions
    candidates: dict[str, int] = field(default_factory=dict)  # candidate pairs by source
    confirmed: int = 0  # pairs that passed the visual check
    unreadable: int = 0  # pictures whose file could not be decoded (gone or changed since indexing)
    seconds: float = 0.0

    def to_dict(self) -> dict:
        return {"threshold": self.options.threshold, "images": self.images, "groups": [g.to_dict() for g in self.groups],
                "candidate_pairs": self.candidates, "confirmed_pairs": self.confirmed, "unreadable": self.unreadable,
                "seconds": self.seconds}


def neighbour_pairs(search: Search, ids: np.ndarray, vectors: np.ndarray, k: int, floor: float) -> dict[tuple[int, int], float]:
    """{(a, b): score, a < b} for every neighbour scoring at least ``floor`` among each query's
    nearest; a query whose k-th neighbour still qualifies asks again with 4x k (up to MAX_NEIGHBOURS).
    Pairs are gathered as arrays and made unique once at the end rather than by a dict update per
    neighbour (same pairs and scores; the search itself is most of the time)."""
    lows, highs, values = [], [], []
    for start in range(0, len(ids), QUERY_BATCH):
        batch_ids, batch = ids[start : start + QUERY_BATCH], vectors[start : start + QUERY_BATCH]
        todo, want = np.arange(len(batch_ids)), k
        while len(todo):
            scores, found = search(batch[todo], want + 1)  # +1: the query finds itself
            me = np.asarray(batch_ids[todo], dtype=np.int64)[:, None]
            keep = (found >= 0) & (found != me) & (scores >= floor)
            mine = np.broadcast_to(me, found.shape)[keep]
            others = found[keep].astype(np.int64)
            lows.append(np.minimum(mine, others))
            highs.append(np.maximum(mine, others))
            values.append(scores[keep].astype(np.float64))
            if want >= MAX_NEIGHBOURS or found.shape[1] < want + 1:
                break
            todo, want = todo[scores[:, -1] >= floor], min(MAX_NEIGHBOURS, want * 4)
    return best_per_pair(lows, highs, values)


def neighbour_index(ids: np.ndarray, vectors: np.ndarray, flat_threshold: int = ann.DEFAULT_FLAT_THRESHOLD) -> VectorIndex:
    """A FAISS index of ``vectors`` (the fingerprints), chosen and tuned the way an index run chooses
    the search index: exact below ``flat_threshold`` vectors, IVF (tuned to recall 0.95) above."""
    batches = ann.array_batches(ids, vectors)
    dim = vectors.shape[1]
    factory = ann.choose_factory("auto", len(ids), dim, flat_threshold)
    index = ann.build_index(dim, factory, batches, len(ids))
    ann.tune_index(index, batches)
    return index


def candidate_pairs(ids: np.ndarray, vectors: np.ndarray, k: int, floor: float,
                    flat_threshold: int = ann.DEFAULT_FLAT_THRESHOLD) -> dict[tuple[int, int], float]:
    """{(a, b): cosine} of the vectors' neighbours at or above ``floor``: an exact k-NN search below
    ``flat_threshold`` vectors, the self-join over coarse lists above it (every pair above the floor
    that shares a list; ~10x faster than an IVF search per vector at 1M)."""
    if len(ids) < max(2, flat_threshold):
        return neighbour_pairs(neighbour_index(ids, vectors, flat_threshold).search, ids, vectors, k, floor)
    joined = close_pairs(ids, vectors, floor, max_per_row=MAX_NEIGHBOURS)
    log.info("duplicates: self-join of %d vectors over %d lists (%d each; sample recall %.3f of %d pairs)",
             len(ids), joined.lists, joined.assign, joined.sample_recall, joined.sample_pairs)
    return joined.pairs


def group_pairs(pairs: Iterable[tuple[int, int]]) -> list[list[int]]:
    """Connected components (union-find) of the pairs, each sorted, largest first."""
    parent: dict[int, int] = {}

    def root(x: int) -> int:
        parent.setdefault(x, x)
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for a, b in pairs:
        ra, rb = root(a), root(b)
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)
    groups: dict[int, list[int]] = {}
    for x in parent:
        groups.setdefault(root(x), []).append(x)
    return sorted((sorted(g) for g in groups.values()), key=lambda g: (-len(g), g[0]))


def _cached(records: list[ItemRecord], cache: FingerprintCache, kind: str, describe, max_pixels: int,
            threads: int) -> dict[int, np.ndarray]:
    """{item id: fingerprint or crop variants} of ``records``, decoding only the files the cache lacks."""
    missing = [r for r in records if cache.get(kind, r.sha256) is None]
    if missing:
        log.info("%s: decoding %d of %d pictures", kind, len(missing), len(records))
        computed = of_files(sorted({r.path for r in missing}), describe, max_pixels, threads)
        for record in missing:
            if computed.get(record.path) is not None:
                cache.put(kind, record.sha256, computed[record.path])
    found = {r.id: cache.get(kind, r.sha256) for r in records}
    return {item_id: value for item_id, value in found.items() if value is not None}


def _taken(record: ItemRecord) -> tuple[float, str | None]:
    """(sort key, shown value): the capture time from the photo metadata, else the file's mtime."""
    value = record.meta.get("taken") if isinstance(record.meta, dict) else None
    if isinstance(value, str):
        try:
            moment = datetime.fromisoformat(value)
            return moment.timestamp(), value
        except ValueError:
            pass
    if record.mtime:
        return record.mtime, datetime.fromtimestamp(record.mtime).astimezone().isoformat(timespec="seconds")
    return float("inf"), None


def _pixel_size(record: ItemRecord) -> tuple[int | None, int | None]:
    """Width and height of the full picture: from the photo metadata, else the file's header (no decode)."""
    meta = record.meta if isinstance(record.meta, dict) else {}
    if isinstance(meta.get("width"), (int, float)) and isinstance(meta.get("height"), (int, float)):
        return int(meta["width"]), int(meta["height"])
    try:
        with Image.open(record.path) as im:
            return im.size
    except Exception:  # gone or unreadable: ranked last
        return None, None


def _ordered_group(ids: list[int], records: dict[int, ItemRecord], variants: dict[int, np.ndarray]) -> DuplicateGroup:
    copies = []
    for item_id in ids:
        record = records[item_id]
        width, height = _pixel_size(record)
        copies.append((record, Copy(item_id, record.path, width, height, _taken(record)[1], record.size, 1.0)))
    copies.sort(key=lambda rc: (-rc[1].pixels, _taken(rc[0])[0], rc[1].id))
    best = variants.get(copies[0][1].id)
    for record, copy in copies[1:]:
        mine = variants.get(copy.id)
        copy.similarity = round(visual_similarity(best, mine), 4) if best is not None and mine is not None else 0.0
    return DuplicateGroup([copy for _, copy in copies])


def find_duplicates(
    records: list[ItemRecord],
    *,
    cache: FingerprintCache,
    embedding_search: Search | None = None,
    embedding_batches: Callable[[], Iterable[tuple[np.ndarray, np.ndarray]]] | None = None,
    options: DuplicateOptions = DuplicateOptions(),
    max_pixels: int = 90_000_000,
    threads: int = 2,
    flat_threshold: int = ann.DEFAULT_FLAT_THRESHOLD,
) -> DuplicateReport:
    """Groups of near-identical pictures among the image ``records``. ``embedding_search`` and
    ``embedding_batches`` (the index's image search and its stored vectors) add the candidates by
    meaning; without them only fingerprints propose candidates."""
    options.check()
    started = time.monotonic()
    records = [r for r in records if r.modality == IMAGE and r.path]
    by_id = {r.id: r for r in records}
    prints = _cached(records, cache, "prints", fingerprint, max_pixels, threads)
    report = DuplicateReport([], len(records), options, unreadable=len(records) - len(prints))
    candidates: dict[tuple[int, int], float] = {}
    if len(prints) > 1:
        ids = np.fromiter(prints, dtype=np.int64, count=len(prints))
        vectors = np.stack([prints[i] for i in ids.tolist()])
        found = candidate_pairs(ids, vectors, options.neighbours, options.candidate_floor, flat_threshold)
        report.candidates["fingerprint"] = len(found)
        candidates.update(found)
    if embedding_search is not None and embedding_batches is not None:
        found = _embedding_pairs(embedding_search, embedding_batches, options, flat_threshold)
        found = {pair: s for pair, s in found.items() if pair[0] in prints and pair[1] in prints}
        report.candidates["embedding"] = len(found)
        candidates.update(found)
    involved = sorted({i for pair in candidates for i in pair})
    variants = _cached([by_id[i] for i in involved], cache, "variants", crop_variants, max_pixels, threads)
    cache.save({r.sha256 for r in records})
    confirmed = []
    for a, b in candidates:
        if a in variants and b in variants and visual_similarity(variants[a], variants[b]) >= options.threshold:
            confirmed.append((a, b))
    report.confirmed = len(confirmed)
    report.groups = [_ordered_group(group, by_id, variants) for group in group_pairs(confirmed)]
    report.seconds = round(time.monotonic() - started, 3)
    log.info("duplicates: %d pictures, candidates %s, %d confirmed pairs, %d groups in %.1fs",
             report.images, report.candidates, report.confirmed, len(report.groups), report.seconds)
    return report


def _embedding_pairs(search: Search, batches: Callable[[], Iterable[tuple[np.ndarray, np.ndarray]]],
                     options: DuplicateOptions, flat_threshold: int) -> dict[tuple[int, int], float]:
    """Candidates by meaning: the search index's neighbours of each stored vector, batch by batch, below
    ``flat_threshold`` vectors; above it the self-join over all stored vectors at once (1M x 768 float32
    is 3 GB while it runs)."""
    parts = list(batches())
    count = sum(len(part_ids) for part_ids, _ in parts)
    if count >= max(2, flat_threshold):
        ids = np.concatenate([part_ids for part_ids, _ in parts])
        vectors = np.concatenate([part for _, part in parts])
        parts.clear()
        return candidate_pairs(ids, vectors, options.neighbours, options.embedding_floor, flat_threshold)
    found: dict[tuple[int, int], float] = {}
    for ids, vectors in parts:
        found.update(neighbour_pairs(search, ids, vectors, options.neighbours, options.embedding_floor))
    return found


def duplicates_in_index(searcher, options: DuplicateOptions = DuplicateOptions(), *, max_pixels: int = 90_000_000,
                        threads: int = 2, flat_threshold: int = ann.DEFAULT_FLAT_THRESHOLD) -> DuplicateReport:
    """find_duplicates over an open index (a mmsearch.search.Searcher): its image items, its image
    vector index and stored vectors, and the fingerprint cache beside it. Loads no model."""
    store = searcher.store
    return find_duplicates(
        [r for r in store.all_items() if r.modality == IMAGE],
        cache=FingerprintCache(Path(searcher.index_dir.path) / CACHE_FILE),
        embedding_search=lambda queries, k: searcher.search_modality(IMAGE, queries, k),
        embedding_batches=lambda: store.iter_vectors(IMAGE),
        options=options, max_pixels=max_pixels, threads=threads, flat_threshold=flat_threshold,
    )
