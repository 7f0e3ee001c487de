"""FastAPI dependencies. Tests replace them with ``app.dependency_overrides``.

The collection a request addresses is its ``name`` path parameter (``/v1/collections/{name}/...``), or
the default collection on the plain ``/v1/...`` routes."""

from __future__ import annotations

from fastapi import Request

from mmsearch.api.registry import Served
from mmsearch.storage.collections import DEFAULT
from mmsearch.config import Settings
from mmsearch.search import Searcher


def collection_name(request: Request) -> str:
    return request.path_params.get("name", DEFAULT)


def get_collection(request: Request) -> Served:
    return request.app.state.collections.get(collection_name(request))


def get_searcher(request: Request) -> Searcher:
    return get_collection(request).searcher


async def get_app_settings(request: Request) -> Settings:
    return request.app.state.settings
