"""Request and response bodies of the HTTP API."""

from __future__ import annotations

from typing import Any, Literal

import orjson
from fastapi.responses import Response
from pydantic import BaseModel, Field

_ORJSON = orjson.OPT_NON_STR_KEYS | orjson.OPT_SERIALIZE_NUMPY


def json_response(body: Any, status_code: int = 200) -> Response:
    """A JSON answer encoded by orjson straight from the result objects (``Hit`` dataclasses, dicts):
    the hot routes skip building response models and validating them again, the largest share of
    FastAPI's own time per search. The route's ``response_model`` still documents the shape."""
    return Response(orjson.dumps(body, option=_ORJSON), status_code=status_code, media_type="application/json")


class SearchRequest(BaseModel):
    text: str = Field(..., min_length=1, max_length=2000, description="Query text.")
    target: Literal["image", "text", "all"] = "image"
    k: int = Field(10, ge=1, le=1000)


class MomentOut(BaseModel):
    """A frame of a video (``timestamp``, seconds) or a page of a PDF (``page``) that matched."""

    id: int
    score: float
    modality: str
    timestamp: float | None = None
    page: int | None = None


class HitOut(BaseModel):
    id: int
    score: float = Field(..., description="On `scale`: cosine, or (target all) the calibrated match probability 0..1.")
    modality: str
    path: str | None
    text: str | None
    metadata: dict
    snippet: str | None = Field(None, description="The line of the text read in the image (OCR) that matches the query's words.")
    cosine: float | None = Field(None, description="The raw cosine similarity, whatever the scale.")
    scale: str = Field("cosine", description="cosine | calibrated (docs/search.md, 'Scores').")
    moments: list[MomentOut] = Field(default_factory=list, description="For a video or PDF: its best frames or pages, best first")


class SearchResponse(BaseModel):
    query: str
    target: str
    hits: list[HitOut]


class ItemOut(BaseModel):
    id: int
    modality: str
    path: str | None
    text: str | None
    metadata: dict
    sha256: str
    size: int


class InfoOut(BaseModel):
    index_dir: str
    model: str
    model_id: str
    dim: int
    generation: int
    counts: dict[str, int]
    index_factory: dict[str, str]
    device: str | None
    faiss_device: str = Field("cpu", description="Where unfiltered vector searches run: cpu or gpu")
    score_scale: str = Field("cosine", description="Scale of merged (target all) scores: calibrated when the model has a calibration")


class ErrorOut(BaseModel):
    error: str
