"""FastAPI dependencies. Tests replace them with ``app.dependency_overrides``."""

from __future__ import annotations

from fastapi import Request

from mmsearch.config import Settings
from mmsearch.search import Searcher


# async: FastAPI runs a plain-def dependency in its threadpool, a thread hop per request for a lookup.
async def get_searcher(request: Request) -> Searcher:
    return request.app.state.searcher


async def get_app_settings(request: Request) -> Settings:
    return request.app.state.settings
