"""Liveness, readiness and metrics routes.

* ``/healthz`` (liveness): the process answers HTTP; it checks nothing else, so a slow dependency never
  gets a working server restarted.
* ``/readyz`` (readiness): 200 only while every served collection's index is open and its model loaded
  (and every check another part of the app added to ``app.state.readiness_checks``), else 503 with what
  is missing; a load balancer sends queries only to ready servers.
* ``/metrics``: Prometheus text format. It needs a global key of read scope (it shows every
  collection's size), unless ``MMSEARCH_METRICS_PUBLIC=true`` opens it for a scraper on a private network.
"""

from __future__ import annotations

from typing import Callable

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.responses import JSONResponse, Response

from mmsearch.api.auth import require
from mmsearch.metrics import CONTENT_TYPE, exposition
from mmsearch.storage.apikeys import Scope

HEALTHZ, READYZ, METRICS = "/healthz", "/readyz", "/metrics"


def served_searchers(app: FastAPI) -> dict[str, object] | None:
    """Each served collection's Searcher by name; None before startup has opened them (or if they cannot be listed)."""
    registry = getattr(app.state, "collections", None)
    if registry is None:
        return None
    try:
        return {name: registry.get(name).searcher for name in registry.names()}
    except Exception:  # a collection that cannot be opened: not ready, and /readyz says so
        return None


def readiness(app: FastAPI) -> dict[str, bool]:
    """Each check by name: every collection's index is open, its model loaded, and any the app added."""
    served = served_searchers(app)
    checks = {"index": served is not None, "model": served is not None and all(s.model_loaded for s in served.values())}
    extra: dict[str, Callable[[], bool]] = app.state.readiness_checks
    checks.update({name: bool(check()) for name, check in extra.items()})
    return checks


def health_router(metrics_public: bool) -> APIRouter:
    router = APIRouter(tags=["operations"])

    @router.get(HEALTHZ, summary="Liveness: the process answers")
    async def healthz() -> dict:
        return {"status": "ok"}

    @router.get(READYZ, summary="Readiness: index open and model loaded",
                responses={503: {"description": "Not ready: the checks say what is missing"}})
    def readyz(request: Request) -> JSONResponse:  # plain def: listing collections may read the disk or database
        checks = readiness(request.app)
        ready = all(checks.values())
        return JSONResponse({"status": "ready" if ready else "not ready", "checks": checks}, status_code=200 if ready else 503)

    guard = [] if metrics_public else [Depends(require(Scope.READ, server_wide=True))]

    @router.get(METRICS, dependencies=guard, summary="Prometheus metrics", response_class=Response,
                responses={200: {"content": {CONTENT_TYPE: {}}}})
    def metrics(request: Request) -> Response:  # plain def: the scrape reads index sizes off the event loop
        return Response(exposition(request.app.state.metrics_registry), media_type=CONTENT_TYPE)

    return router


def open_paths(metrics_public: bool) -> frozenset[str]:
    return frozenset({HEALTHZ, READYZ} | ({METRICS} if metrics_public else set()))


__all__ = ["HEALTHZ", "METRICS", "READYZ", "health_router", "open_paths", "readiness"]
