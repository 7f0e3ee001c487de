"""Collections over HTTP: list, create (with a model and index settings of their own) and drop.

Every ``/v1/...`` route of a single index also exists as ``/v1/collections/{name}/...`` (search, query,
items, keys, bulk writes, fields, info); :func:`mirror_routes` adds them, so a route added later is
served per collection too.
"""

from __future__ import annotations

from typing import Iterator

from fastapi import APIRouter, Depends, FastAPI, Path as PathParam, Request
from fastapi.routing import APIRoute
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from mmsearch.api.registry import CollectionRegistry
from mmsearch.api.schemas import ErrorOut
from mmsearch.api.security import require

router = APIRouter(tags=["collections"])
PREFIX = "/v1/collections/{name}"
ERRORS = {404: {"model": ErrorOut}, 409: {"model": ErrorOut}, 422: {"model": ErrorOut}}
Name = PathParam(..., min_length=1, max_length=40, pattern=r"^[a-z][a-z0-9_]{0,39}$",
                 description="Collection name: lower-case letters, digits and _ (a letter first).")


class CollectionIn(BaseModel):
    model: str | None = Field(None, max_length=500, description="Model spec [default: the server's MMSEARCH_MODEL].")
    index_type: str | None = Field(None, max_length=200, description="auto, flat, hnsw, ivf, ivfpq, sq8 or a FAISS factory string.")
    recall_target: float | None = Field(None, gt=0, le=1)


class CollectionOut(BaseModel):
    name: str
    model: str
    dim: int
    generation: int
    counts: dict[str, int]
    index_type: str


class CollectionsOut(BaseModel):
    collections: list[CollectionOut]


async def _registry(request: Request) -> CollectionRegistry:  # async: no thread hop (see api.deps)
    return request.app.state.collections


def _describe(registry: CollectionRegistry, name: str) -> CollectionOut:
    searcher = registry.get(name).searcher
    info = searcher.info()
    return CollectionOut(name=name, model=info["model"], dim=info["dim"], generation=info["generation"], counts=info["counts"],
                         index_type=searcher.index_dir.read_manifest().index_type)


async def collection_param(name: str = Name) -> str:
    """Declares (and validates) the ``name`` path parameter of every per-collection route."""
    return name


@router.get("/v1/collections", response_model=CollectionsOut, dependencies=[Depends(require("read"))])
def list_collections(registry: CollectionRegistry = Depends(_registry)) -> CollectionsOut:
    return CollectionsOut(collections=[_describe(registry, n) for n in registry.names()])


@router.put("/v1/collections/{name}", response_model=CollectionOut, status_code=201, responses=ERRORS,
            dependencies=[Depends(require("admin"))])
async def create_collection(body: CollectionIn, name: str = Name, registry: CollectionRegistry = Depends(_registry)) -> CollectionOut:
    """Create an empty collection for a model (loaded now if no other collection uses it); 409 if it exists."""

    def create() -> CollectionOut:
        registry.create(name, body.model, body.index_type, body.recall_target)
        return _describe(registry, name)

    return await run_in_threadpool(create)


@router.delete("/v1/collections/{name}", responses=ERRORS, dependencies=[Depends(require("admin"))])
def drop_collection(name: str = Name, registry: CollectionRegistry = Depends(_registry)) -> dict:
    """Delete a named collection and everything in it (not the default collection)."""
    registry.drop(name)
    return {"name": name, "dropped": True}


def _api_routes(routes, prefix: str = "", dependencies: tuple = ()) -> Iterator[tuple[str, APIRoute, tuple]]:
    """(full path, route, dependencies added by the includes) of every APIRoute, through included routers
    (FastAPI keeps an included router as one entry that refers to it)."""
    for route in routes:
        if isinstance(route, APIRoute):
            yield prefix + route.path, route, dependencies
            continue
        inner = getattr(route, "original_router", None)
        if inner is not None:
            context = getattr(route, "include_context", None)
            yield from _api_routes(inner.routes, prefix + getattr(context, "prefix", ""),
                                   dependencies + tuple(getattr(context, "dependencies", ())))


def mirror_routes(app: FastAPI) -> None:
    """Serve every single-index ``/v1/...`` route under ``/v1/collections/{name}/...`` too."""
    for path, route, included in list(_api_routes(app.router.routes)):
        if not path.startswith("/v1/") or path.startswith("/v1/collections"):
            continue
        app.router.add_api_route(
            PREFIX + path[len("/v1"):], route.endpoint, methods=sorted(route.methods), response_model=route.response_model,
            status_code=route.status_code, responses=route.responses, summary=route.summary, description=route.description,
            dependencies=[Depends(collection_param), *included, *route.dependencies], openapi_extra=route.openapi_extra,
            response_class=route.response_class, include_in_schema=route.include_in_schema,
            name=f"{route.name}_in_collection", tags=[*(route.tags or []), "collections"],
        )


def install_collections(app: FastAPI) -> None:
    app.include_router(router)
    mirror_routes(app)


__all__ = ["install_collections", "mirror_routes"]
