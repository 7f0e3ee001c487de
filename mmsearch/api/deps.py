"""FastAPI dependencies. Tests replace them with ``app.dependency_overrides``.

The collection a request addresses is its ``name`` path parameter (``/v1/collections/{name}/...``), or
the default collection on the plain ``/v1/...`` routes."""

from __future__ import annotations

from fastapi import Request
from starlette.concurrency import run_in_threadpool

from mmsearch.api.registry import Served
from mmsearch.storage.collections import DEFAULT
from mmsearch.config import Settings
from mmsearch.search import Searcher


def collection_name(request: Request) -> str:
    return request.path_params.get("name", DEFAULT)


# Every dependency here is async: FastAPI runs a plain-def dependency in its threadpool, a thread hop
# (two context switches and the GIL handed over twice) on every request for what is a dict lookup.
async def get_collection(request: Request) -> Served:
    registry = request.app.state.collections
    name = collection_name(request)
    served = registry.opened(name)
    if served is not None:
        return served
    return await run_in_threadpool(registry.get, name)  # first use: opens its index (and maybe loads a model)


async def get_searcher(request: Request) -> Searcher:
    return (await get_collection(request)).searcher


async def get_app_settings(request: Request) -> Settings:
    return request.app.state.settings
