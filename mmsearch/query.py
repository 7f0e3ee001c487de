"""Composite queries: weighted positive and negative terms (texts, images, stored items), exact metadata
filters, vector / keyword / hybrid ranking, grouping per product, sorting, score cut-off and paging.

How a query is answered:

1. the filter is resolved in SQLite to the candidate item ids (``mmsearch.storage.filters``);
2. vector ranking: the terms' embeddings are summed with their weights (a negative weight subtracts,
   which pushes items like that term down) and the sum is searched with FAISS restricted to the
   candidates (an ID selector inside the search; an index of product codes re-ranks its candidates on the
   stored vectors, see ``mmsearch.vectors.rerank``); if an approximate index returns fewer than it should, the
   candidates' stored vectors are scored exactly instead;
3. keyword ranking: BM25 over the FTS5 table, restricted to the same candidates; items matching a
   negative text term's words go after the others;
4. hybrid: reciprocal rank fusion, ``(1 - w) / (60 + vector rank) + w / (60 + keyword rank)``;
5. the ranking (a fixed window of ``WINDOW`` results, so pages cut from it are stable and disjoint) is
   cut by ``min_score``, collapsed to one hit per video or PDF (with its best moments, see
   ``mmsearch.moments``), grouped per product, optionally sorted by a field, then paged.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any, Literal, Sequence

import numpy as np
from PIL import Image
from sqlalchemy import text as sql

from mmsearch.calibration import CALIBRATED, COSINE
from mmsearch.errors import InvalidQueryError
from mmsearch.moments import collapse, moment
from mmsearch.storage.filter_sql import candidate_sql
from mmsearch.storage.filters import Condition, field_sql, product_sql, unit_sql
from mmsearch.storage.keyword import keyword_matches, keyword_ranking, snippet
from mmsearch.search import Searcher
from mmsearch.storage.store import IMAGE, MODALITIES, TEXT, id_chunks

Mode = Literal["vector", "keyword", "hybrid"]
MODES: tuple[str, ...] = ("vector", "keyword", "hybrid")
WINDOW = 1000  # results ranked per window; pages are slices of one window's ranking
RRF_K = 60
EXACT_FALLBACK_MAX = 50_000


@dataclass
class Term:
    """One part of a query: exactly one of ``text``, ``image`` or ``item_id``, with a non-zero weight."""

    weight: float = 1.0
    text: str | None = None
    image: Image.Image | None = None
    item_id: int | None = None

    def __post_init__(self) -> None:
        given = sum(x is not None for x in (self.text, self.image, self.item_id))
        if given != 1:
            raise InvalidQueryError("each query term needs exactly one of text, image or item_id")
        if self.text is not None and not self.text.strip():
            raise InvalidQueryError("a text term is empty")
        if not math.isfinite(self.weight) or self.weight == 0:
            raise InvalidQueryError("a term's weight must be a non-zero number")


@dataclass
class Query:
    terms: list[Term]
    conditions: list[Condition] = field(default_factory=list)
    mode: Mode = "vector"
    target: Literal["image", "text", "all"] = "image"
    keyword_weight: float = 0.5  # hybrid only: 0 = vector ranks only, 1 = keyword ranks only
    group: bool = False  # one hit per product (SKU)
    offset: int = 0
    limit: int = 10
    sort: str | None = None  # "price" ascending, "-price" descending
    min_score: float | None = None


@dataclass
class QueryHit:
    id: int
    score: float
    vector_score: float | None
    keyword_score: float | None
    modality: str
    path: str | None
    text: str | None
    metadata: dict
    product: str | None
    image_id: int | None  # an image to show for this hit: itself, or its product's best-matching image
    snippet: str | None = None  # the line of the text read in the image (OCR) matching the query's words
    cosine: float | None = None  # the raw cosine of the vector match (None: ranked by keyword alone)
    scale: str = COSINE  # what ``score`` is: cosine, calibrated (a list merging modalities), rrf (hybrid), bm25
    moments: list[dict] = field(default_factory=list)  # a video's best frames, a PDF's best pages

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class QueryResult:
    hits: list[QueryHit]
    offset: int
    limit: int
    total: int  # results in the ranked window after cut-off and grouping
    has_more: bool
    mode: str  # the mode used: a hybrid query without text is answered by vectors alone


@dataclass
class _Ranked:
    id: int
    score: float
    vector_score: float | None = None
    keyword_score: float | None = None
    cosine: float | None = None
    moments: list["_Ranked"] = field(default_factory=list)


def _check(query: Query) -> None:
    if not query.terms:
        raise InvalidQueryError("a query needs at least one term (text, image or item)")
    if query.mode not in MODES:
        raise InvalidQueryError(f"mode must be one of {', '.join(MODES)}, not {query.mode!r}")
    if query.target not in ("image", "text", "all"):
        raise InvalidQueryError(f"target must be image, text or all, not {query.target!r}")
    if not 0 <= query.keyword_weight <= 1:
        raise InvalidQueryError("keyword_weight must be between 0 and 1")
    if query.offset < 0 or query.limit < 1:
        raise InvalidQueryError("offset must be >= 0 and limit >= 1")
    if query.mode == "keyword" and not any(t.text and t.weight > 0 for t in query.terms):
        raise InvalidQueryError("keyword mode needs a text term with a positive weight")


class QueryEngine:
    """Answers ``Query`` objects against one open ``Searcher`` (its model, vectors and store)."""

    def __init__(self, searcher: Searcher) -> None:
        self.searcher = searcher
        self.store = searcher.store

    def run(self, query: Query) -> QueryResult:
        _check(query)
        modalities = MODALITIES if query.target == "all" else (query.target,)
        where, params = candidate_sql(query.conditions, modalities, self.store.dialect)
        window = WINDOW * math.ceil((query.offset + query.limit) / WINDOW)
        depth = window * (4 if query.group else 1)
        excluded = {t.item_id for t in query.terms if t.item_id is not None}
        ranking = self._rank(query, where, params, modalities, depth + len(excluded))
        ranking = [r for r in ranking if r.id not in excluded][:depth]
        sort_field = _sort_field(query.sort)
        facts = self._facts([r.id for r in ranking], sort_field)
        ranking = [r for r in ranking if r.id in facts]  # deleted since the vectors were loaded
        if query.min_score is not None:
            ranking = [r for r in ranking if r.score >= query.min_score]
        ranking = _collapse_units(ranking, facts)
        best_image = _best_images(ranking, facts)
        if query.group:
            ranking = _group(ranking, facts, self._products_of(excluded))[:window]
        if query.sort:
            ranking = _sorted(ranking, facts, descending=query.sort.startswith("-"))
        page = self._hits(ranking[query.offset : query.offset + query.limit], best_image, _query_text(query.terms),
                          self._score_scale(query, modalities))
        total = len(ranking)
        return QueryResult(page, query.offset, query.limit, total, total > query.offset + query.limit, _effective_mode(query))

    # --- ranking ---
    def _rank(self, query: Query, where: str, params: dict, modalities: Sequence[str], depth: int) -> list[_Ranked]:
        vector: list[_Ranked] = []
        keyword: list[_Ranked] = []
        if query.mode in ("vector", "hybrid"):
            mix = self._query_mix(query.terms) if len(modalities) > 1 else {}
            vector = self._vector_ranking(self._query_vector(query.terms), query.conditions, modalities, depth, mix)
        if query.mode in ("keyword", "hybrid"):
            keyword = self._keyword_ranking(query.terms, where, params, depth)
        if query.mode == "vector":
            return vector
        if query.mode == "keyword":
            return keyword
        if _effective_mode(query) == "vector":  # no text to match by keyword (a photo alone): plain vector ranking
            return vector
        return _fuse(vector, keyword, query.keyword_weight)

    def _query_vector(self, terms: Sequence[Term]) -> np.ndarray:
        encoder = self.searcher.encoder
        parts: list[np.ndarray] = []
        texts = [t for t in terms if t.text is not None]
        if texts:
            parts.extend(t.weight * v for t, v in zip(texts, encoder.encode_texts([t.text for t in texts])))
        images = [t for t in terms if t.image is not None]
        if images:
            parts.extend(t.weight * v for t, v in zip(images, encoder.encode_images([t.image for t in images])))
        items = [t for t in terms if t.item_id is not None]
        if items:
            stored = self.searcher.stored_vectors([t.item_id for t in items])
            parts.extend(t.weight * stored[t.item_id] for t in items)
        total = np.sum(np.stack(parts).astype(np.float32), axis=0)
        norm = float(np.linalg.norm(total))
        if norm < 1e-6:
            raise InvalidQueryError("the query's terms cancel each other out")
        return (total / norm)[None, :].astype(np.float32)

    def _query_mix(self, terms: Sequence[Term]) -> dict[str, float]:
        """modality -> summed |weight| of the query's terms (a stored item counts as its own modality): how
        a merged list's calibration blends the per-direction mappings."""
        mix: dict[str, float] = {}
        items = self.store.get_many([t.item_id for t in terms if t.item_id is not None])
        for t in terms:
            if t.item_id is not None:
                record = items.get(t.item_id)
                modality = record.modality if record is not None else None
            else:
                modality = TEXT if t.text is not None else IMAGE
            if modality is not None:
                mix[modality] = mix.get(modality, 0.0) + abs(t.weight)
        return mix

    def _merges_calibrated(self, mix: dict[str, float], modalities: Sequence[str]) -> bool:
        return len(modalities) > 1 and bool(mix) and not self.searcher.calibration.raw

    def _score_scale(self, query: Query, modalities: Sequence[str]) -> str:
        mode = _effective_mode(query)
        if mode == "hybrid":
            return "rrf"
        if mode == "keyword":
            return "bm25"
        mix = self._query_mix(query.terms) if len(modalities) > 1 else {}
        return CALIBRATED if self._merges_calibrated(mix, modalities) else COSINE

    def _candidate_ids(self, conditions: list[Condition], modality: str) -> np.ndarray:
        where, params = candidate_sql(conditions, (modality,), self.store.dialect)
        with self.store.engine.connect() as conn:
            return np.fromiter((r[0] for r in conn.execute(sql(where), params)), dtype=np.int64)

    def _vector_ranking(self, q: np.ndarray, conditions: list[Condition], modalities: Sequence[str], depth: int,
                        mix: dict[str, float] | None = None) -> list[_Ranked]:
        """Vector ranking over ``modalities``; lists of two modalities merge on the calibrated scale of the
        query's modality ``mix`` (mmsearch.calibration), unless the calibration says raw cosines."""
        triples: list[tuple[float, float, int]] = []
        calibrate = self._merges_calibrated(mix or {}, modalities)
        for modality in modalities:
            got = self._modality_cosines(q, conditions, modality, depth)
            if not got:
                continue
            cosines = np.array([c for c, _ in got], dtype=np.float64)
            scores = self.searcher.merged_scores(mix or {}, modality, q, cosines[None, :])[0] if calibrate else cosines
            triples.extend((float(s), c, i) for s, (c, i) in zip(scores, got))
        triples.sort(key=lambda p: (-p[0], p[2]))
        return [_Ranked(i, s, vector_score=s, cosine=c) for s, c, i in triples[:depth]]

    def _modality_cosines(self, q: np.ndarray, conditions: list[Condition], modality: str, depth: int) -> list[tuple[float, int]]:
        """(cosine, id) of the ``depth`` best items of one modality among the filter's candidates."""
        if not conditions:  # every item is a candidate: no selector needed
            scores, found = self.searcher.search_modality(modality, q, depth)
            return [(float(s), int(i)) for s, i in zip(scores[0], found[0]) if i >= 0]
        ids = self._candidate_ids(conditions, modality)
        if len(ids) == 0:
            return []
        scores, found = self.searcher.search_modality(modality, q, depth, ids)
        got = [(float(s), int(i)) for s, i in zip(scores[0], found[0]) if i >= 0]
        if len(got) < min(depth, len(ids)) and len(ids) <= EXACT_FALLBACK_MAX:
            got = self._exact_scores(q, ids, depth)  # an approximate index missed some: score them all
        return got

    def _exact_scores(self, q: np.ndarray, ids: np.ndarray, depth: int) -> list[tuple[float, int]]:
        vectors = self.store.vectors_for(ids.tolist())
        known = [i for i in ids.tolist() if i in vectors]
        if not known:
            return []
        scores = np.stack([vectors[i] for i in known]) @ q[0]
        order = np.lexsort((np.array(known), -scores))[:depth]
        return [(float(scores[j]), int(known[j])) for j in order]

    def _keyword_ranking(self, terms: Sequence[Term], where: str, params: dict, depth: int) -> list[_Ranked]:
        positive = _query_text(terms)
        negative = [t.text for t in terms if t.text is not None and t.weight < 0]
        with self.store.engine.connect() as conn:
            ranked = keyword_ranking(conn, positive, where, params, depth)
            pushed = keyword_matches(conn, negative, where, params) if negative else set()
        ranked.sort(key=lambda p: p[0] in pushed)  # stable: BM25 order kept within each part
        return [_Ranked(i, s, keyword_score=s) for i, s in ranked]

    # --- presentation ---
    def _facts(self, ids: list[int], sort_field: str | None) -> dict[int, _Facts]:
        """Modality, product and sort value of many items: a light read (no full records) for the window."""
        facts: dict[int, _Facts] = {}
        field, path = field_sql(self.store.dialect, sort_field or "")
        sort_sql = field if sort_field else "NULL"
        product, unit = product_sql(self.store.dialect), unit_sql(self.store.dialect)
        with self.store.engine.connect() as conn:
            for chunk in id_chunks(ids):
                marks = ", ".join(f":i{n}" for n in range(len(chunk)))
                rows = conn.execute(
                    sql(f"SELECT id, modality, {product}, {sort_sql}, key, {unit} FROM items WHERE id IN ({marks})"),
                    {"path": path, **{f"i{n}": i for n, i in enumerate(chunk)}},
                )
                for item_id, modality, product, value, key, unit in rows:
                    in_unit = isinstance(unit, str) and str(key).startswith(unit + "#")  # as mmsearch.moments.unit_of
                    facts[int(item_id)] = _Facts(modality, str(product) if product is not None else None, value,
                                                 unit if in_unit else None)
        return facts

    def _hits(self, page: list[_Ranked], best_image: dict[str, int], query_text: str = "", scale: str = COSINE) -> list[QueryHit]:
        records = self.store.get_many([r.id for r in page] + [m.id for r in page for m in r.moments])
        hits = []
        for r in page:
            rec = records.get(r.id)
            if rec is None:
                continue
            product = rec.meta.get("product")
            product = str(product) if product is not None else None
            image_id = rec.id if rec.modality == IMAGE else best_image.get(product) if product is not None else None
            moments = [moment(m.id, m.score, records[m.id].modality, records[m.id].meta) for m in r.moments if m.id in records]
            if image_id is None and "page" in rec.meta and r.moments:  # a PDF page's text: show the page's picture
                image_id = self._page_picture(rec.key)
            hits.append(QueryHit(rec.id, r.score, r.vector_score, r.keyword_score, rec.modality, rec.path, rec.text,
                                 rec.meta, product, image_id, snippet(rec.meta.get("ocr_text"), query_text), r.cosine, scale, moments))
        self._attach_images(hits)
        return hits

    def _page_picture(self, text_key: str) -> int | None:
        """The rendered page beside a PDF page's text item (keys ``...#page=N/text`` and ``...#page=N``)."""
        if not text_key.endswith("/text"):
            return None
        with self.store.engine.connect() as conn:
            row = conn.execute(sql("SELECT id FROM items WHERE key = :k AND modality = :m"), {"k": text_key[: -len("/text")], "m": IMAGE}).first()
        return int(row[0]) if row else None

    def _products_of(self, item_ids: set[int]) -> set[str]:
        records = self.store.get_many(item_ids) if item_ids else {}
        return {str(r.meta["product"]) for r in records.values() if r.meta.get("product") is not None}

    def _attach_images(self, page: list[QueryHit]) -> None:
        """A hit whose product has no image in the ranking shows the product's first image."""
        missing = [h for h in page if h.image_id is None and h.product is not None]
        if not missing:
            return
        product = product_sql(self.store.dialect)
        with self.store.engine.connect() as conn:
            for hit in missing:
                row = conn.execute(
                    sql(f"SELECT id FROM items WHERE modality = :m AND {product} = :p ORDER BY key LIMIT 1"),
                    {"m": IMAGE, "p": hit.product},
                ).first()
                hit.image_id = int(row[0]) if row else None


@dataclass(frozen=True)
class _Facts:
    modality: str
    product: str | None
    sort_value: Any
    unit: str | None = None  # the video or PDF the item was taken from


def _collapse_units(ranking: list[_Ranked], facts: dict[int, _Facts]) -> list[_Ranked]:
    """One entry per video or PDF (its best-ranked item), carrying its best moments."""
    out = []
    for best, group in collapse(ranking, lambda r: facts[r.id].unit):
        best.moments = group
        out.append(best)
    return out


def _effective_mode(query: Query) -> str:
    """Hybrid without a positive text term has nothing to match by keyword: it ranks by vectors alone."""
    if query.mode == "hybrid" and not any(t.text is not None and t.weight > 0 for t in query.terms):
        return "vector"
    return query.mode


def _fuse(vector: list[_Ranked], keyword: list[_Ranked], keyword_weight: float) -> list[_Ranked]:
    fused: dict[int, _Ranked] = {}
    for rank, r in enumerate(vector, 1):
        fused[r.id] = _Ranked(r.id, (1 - keyword_weight) / (RRF_K + rank), vector_score=r.vector_score, cosine=r.cosine)
    for rank, r in enumerate(keyword, 1):
        entry = fused.setdefault(r.id, _Ranked(r.id, 0.0))
        entry.score += keyword_weight / (RRF_K + rank)
        entry.keyword_score = r.keyword_score
    return sorted(fused.values(), key=lambda r: (-r.score, r.id))


def _best_images(ranking: list[_Ranked], facts: dict[int, _Facts]) -> dict[str, int]:
    """product -> its best-ranked image in the ranking (the picture shown for its text hits)."""
    best: dict[str, int] = {}
    for r in ranking:
        f = facts[r.id]
        if f.modality == IMAGE and f.product is not None:
            best.setdefault(f.product, r.id)
    return best


def _group(ranking: list[_Ranked], facts: dict[int, _Facts], skip_products: set[str]) -> list[_Ranked]:
    """One hit per product: its best-ranked item (items without a product stand alone)."""
    seen: set[str] = set()
    grouped = []
    for r in ranking:
        product = facts[r.id].product
        if product is None:
            grouped.append(r)
        elif product not in seen and product not in skip_products:
            seen.add(product)
            grouped.append(r)
    return grouped


def _sort_field(sort: str | None) -> str | None:
    if sort is None:
        return None
    name = sort.lstrip("-+")
    if not name or '"' in name:
        raise InvalidQueryError("sort needs a field name, e.g. price or -price")
    return name


def _sort_key(value: Any) -> tuple:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return (0, value, "")
    return (1, 0, str(value))


def _sorted(ranking: list[_Ranked], facts: dict[int, _Facts], descending: bool) -> list[_Ranked]:
    """Sort by the field (ties keep relevance order); items without it go last either way."""
    present = [r for r in ranking if facts[r.id].sort_value is not None]
    absent = [r for r in ranking if facts[r.id].sort_value is None]
    present.sort(key=lambda r: _sort_key(facts[r.id].sort_value), reverse=descending)
    return present + absent


def _query_text(terms: Sequence[Term]) -> str:
    """The words a query asks for: its text terms of positive weight."""
    return " ".join(t.text for t in terms if t.text is not None and t.weight > 0)
