"""Product search over HTTP: composite queries with filters and modes (``POST /v1/query``), the
catalogue's fields (``GET /v1/fields``) and the search page (``/``)."""

from __future__ import annotations

from importlib import resources
from typing import Any, Literal

from fastapi import APIRouter, Depends, FastAPI
from fastapi.responses import FileResponse, Response
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, Field

from mmsearch.api.deps import get_app_settings, get_searcher
from mmsearch.api.images import base64_bytes, decode_upload
from mmsearch.api.schemas import ErrorOut, MomentOut, json_response
from mmsearch.api.security import Scope, require
from mmsearch.config import Settings
from mmsearch.errors import InvalidQueryError
from mmsearch.storage.fields import cached_field_summary, product_count
from mmsearch.storage.filters import describe, from_json
from mmsearch.query import Query, QueryEngine, Term
from mmsearch.search import Searcher
from mmsearch.storage.store import MODALITIES

router = APIRouter(dependencies=[Depends(require(Scope.READ))])  # product search reads the default collection
ERRORS = {404: {"model": ErrorOut}, 422: {"model": ErrorOut}}


class TermIn(BaseModel):
    """Exactly one of text, image_b64 (base64 or a data: URL) or item_id; a negative weight pushes away."""

    text: str | None = Field(None, max_length=2000)
    image_b64: str | None = Field(None, max_length=40_000_000)
    item_id: int | None = Field(None, ge=0, le=2**63 - 1)
    weight: float = Field(1.0, ge=-100, le=100)


class QueryRequest(BaseModel):
    text: str | None = Field(None, max_length=2000, description="Shorthand for one text term of weight 1.")
    terms: list[TermIn] = Field(default_factory=list, max_length=16)
    filter: dict[str, Any] | None = Field(None, description='e.g. {"category": {"in": ["bags"]}, "price": {"gte": 10, "lte": 80}}')
    mode: Literal["vector", "keyword", "hybrid"] = "vector"
    target: Literal["image", "text", "all"] = "image"
    keyword_weight: float = Field(0.5, ge=0, le=1, description="Hybrid: share of the keyword ranking in the fusion.")
    group: bool = Field(False, description="One hit per product (SKU), shown with its best-matching image.")
    offset: int = Field(0, ge=0, le=100_000)
    limit: int = Field(10, ge=1, le=200)
    sort: str | None = Field(None, max_length=65, pattern=r"^[-+]?[A-Za-z_][\w.\- ]*$", description="Field name; -field for descending.")
    min_score: float | None = None


class QueryHitOut(BaseModel):
    id: int
    score: float
    vector_score: float | None
    keyword_score: float | None
    modality: str
    path: str | None
    text: str | None
    metadata: dict
    product: str | None
    image_id: int | None
    snippet: str | None = Field(None, description="The line of the text read in the image (OCR) that matches the query's words.")
    cosine: float | None = Field(None, description="Raw cosine of the vector match (null when ranked by keyword alone).")
    scale: str = Field("cosine", description="What `score` is: cosine, calibrated (target all), rrf (hybrid) or bm25 (keyword).")
    moments: list[MomentOut] = Field(default_factory=list, description="For a video or PDF: its best frames or pages, best first")


class QueryResponse(BaseModel):
    mode: str
    target: str
    filter: list[dict]
    offset: int
    limit: int
    total: int
    has_more: bool
    hits: list[QueryHitOut]


class FieldOut(BaseModel):
    name: str
    type: str
    count: int
    distinct: int
    min: Any = None
    max: Any = None
    values: list[dict] | None = None
    histogram: list[dict] | None = Field(None, description='date fields: [{"bucket": "2023-06", "count": 12}], per month (per year over ten years)')


class FieldsResponse(BaseModel):
    products: int
    counts: dict[str, int]
    fields: list[FieldOut]


def _decode_image(data_b64: str, settings: Settings):
    return decode_upload(base64_bytes(data_b64, settings.max_upload_bytes), settings.max_image_pixels)


def _terms(body: QueryRequest, settings: Settings) -> list[Term]:
    terms = [Term(text=body.text)] if body.text is not None else []
    for t in body.terms:
        image = _decode_image(t.image_b64, settings) if t.image_b64 is not None else None
        terms.append(Term(weight=t.weight, text=t.text, image=image, item_id=t.item_id))
    if not terms:
        raise InvalidQueryError("give text or at least one term")
    return terms


@router.post("/v1/query", response_model=QueryResponse, responses=ERRORS)
def query(body: QueryRequest, searcher: Searcher = Depends(get_searcher), settings: Settings = Depends(get_app_settings)) -> Response:
    """Composite query: weighted text/image/item terms, exact filters, vector/keyword/hybrid ranking."""
    conditions = from_json(body.filter)
    q = Query(
        terms=_terms(body, settings), conditions=conditions, mode=body.mode, target=body.target,
        keyword_weight=body.keyword_weight, group=body.group, offset=body.offset, limit=body.limit,
        sort=body.sort, min_score=body.min_score,
    )
    result = QueryEngine(searcher).run(q)
    return json_response({  # encoded straight from the QueryHit dataclasses (see schemas.json_response)
        "mode": result.mode, "target": body.target, "filter": describe(conditions), "offset": result.offset,
        "limit": result.limit, "total": result.total, "has_more": result.has_more, "hits": result.hits,
    })


@router.get("/v1/fields", response_model=FieldsResponse)
def fields(searcher: Searcher = Depends(get_searcher)) -> FieldsResponse:
    """Metadata fields with their type, how many products have them, and their values or range."""
    store = searcher.store
    return FieldsResponse(
        products=product_count(store), counts={m: store.count(m) for m in MODALITIES},
        fields=[FieldOut(**f) for f in cached_field_summary(store)],
    )


def _web_dir():
    return resources.files("mmsearch") / "web" / "static"


@router.get("/", include_in_schema=False)
def search_page() -> FileResponse:
    return FileResponse(str(_web_dir() / "index.html"), media_type="text/html", headers={"Cache-Control": "no-cache"})


def install_shop(app: FastAPI) -> None:
    """Add the product search routes and the static files of the search page to ``app``."""
    app.include_router(router)
    app.mount("/static", StaticFiles(directory=str(_web_dir())), name="static")
