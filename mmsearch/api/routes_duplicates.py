"""``GET /v1/duplicates``: groups of near-identical images, best copy first (see mmsearch.duplicates).

Finding the groups reads every picture's fingerprint and searches the whole collection, so the answer
is kept per (index generation, threshold): paging through the groups, or the page asking again,
costs nothing until an index run writes a new version. One computation at a time; concurrent
requests for the same answer wait for it rather than repeating it.
"""

from __future__ import annotations

import threading

from fastapi import APIRouter, Depends, Query, Request
from pydantic import BaseModel

from mmsearch.api.deps import get_app_settings, get_searcher
from mmsearch.api.security import Scope, require
from mmsearch.api.schemas import ErrorOut
from mmsearch.config import Settings
from mmsearch.duplicates import DuplicateOptions, DuplicateReport, duplicates_in_index
from mmsearch.search import Searcher

router = APIRouter(dependencies=[Depends(require(Scope.READ))])  # reads the (default or named) collection


class CopyOut(BaseModel):
    id: int
    path: str | None
    width: int | None
    height: int | None
    taken: str | None
    bytes: int
    similarity: float


class GroupOut(BaseModel):
    best: int
    copies: list[CopyOut]


class DuplicatesOut(BaseModel):
    threshold: float
    images: int
    total_groups: int
    offset: int
    groups: list[GroupOut]
    seconds: float


class _ReportCache:
    """The last report, for one (index, generation, threshold): collections each have their own index."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.key: tuple[str, int, float] | None = None
        self.report: DuplicateReport | None = None

    def get(self, searcher: Searcher, settings: Settings, threshold: float) -> DuplicateReport:
        with self.lock:
            key = (str(searcher.index_dir.path.resolve()), searcher.store.generation(), threshold)
            if key != self.key or self.report is None:
                self.report = duplicates_in_index(
                    searcher, DuplicateOptions(threshold=threshold), max_pixels=settings.max_image_pixels,
                    threads=min(2, settings.effective_threads()), flat_threshold=settings.ann_threshold,
                )
                self.key = key
            return self.report


_CACHE_CREATION = threading.Lock()


def _cache(request: Request) -> _ReportCache:
    """The app's report cache, made on first use (two first requests at once still share one)."""
    state = request.app.state
    with _CACHE_CREATION:
        if getattr(state, "duplicates_cache", None) is None:
            state.duplicates_cache = _ReportCache()
        return state.duplicates_cache


@router.get("/v1/duplicates", response_model=DuplicatesOut, responses={422: {"model": ErrorOut}})
def duplicates(
    request: Request,
    threshold: float = Query(0.95, gt=0.0, le=1.0, description="Visual similarity two pictures must reach (copies score ~0.99)."),
    limit: int = Query(50, ge=1, le=1000, description="Groups per page."),
    offset: int = Query(0, ge=0, le=10**9, description="Groups to skip."),
    searcher: Searcher = Depends(get_searcher),
    settings: Settings = Depends(get_app_settings),
) -> DuplicatesOut:
    report = _cache(request).get(searcher, settings, round(threshold, 4))
    page = report.groups[offset : offset + limit]
    return DuplicatesOut(threshold=report.options.threshold, images=report.images, total_groups=len(report.groups), offset=offset,
                         groups=[GroupOut(**g.to_dict()) for g in page], seconds=report.seconds)
