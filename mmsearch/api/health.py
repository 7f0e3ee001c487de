"""Liveness, readiness and metrics routes.

* ``/healthz`` (liveness): the process answers HTTP. It is true from the first second, while the model
  still loads, so an orchestrator does not kill a server that is merely starting.
* ``/readyz`` (readiness): 200 only once the index is open and the model is loaded (and every check
  another part of the app added to ``app.state.readiness_checks``), else 503 with what is missing; a
  load balancer sends queries only to ready servers.
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


def readiness(app: FastAPI) -> dict[str, bool]:
    """Each check by name: the index is open, the model is loaded, and any the app added."""
    searcher = app.state.searcher
    checks = {"index": searcher is not None, "model": searcher is not None and searcher.model_loaded}
    extra: dict[str, Callable[[], bool]] = app.state.readiness_checks
    checks.update({name: bool(check()) for name, check in extra.items()})
    return checks


def health_router(metrics_public: bool) -> APIRouter:
    router = APIRouter(tags=["operations"])

    @router.get(HEALTHZ, summary="Liveness: the process answers")
    async def healthz() -> dict:
        return {"status": "ok"}

    @router.get(READYZ, summary="Readiness: index open and model loaded",
                responses={503: {"description": "Not ready yet (or the model failed to load)"}})
    async def readyz(request: Request) -> JSONResponse:
        checks = readiness(request.app)
        ready = all(checks.values())
        body: dict = {"status": "ready" if ready else "not ready", "checks": checks}
        error = request.app.state.load_error
        if error:
            body["error"] = error
        return JSONResponse(body, status_code=200 if ready else 503)

    guard = [] if metrics_public else [Depends(require(Scope.READ, server_wide=True))]

    @router.get(METRICS, dependencies=guard, summary="Prometheus metrics", response_class=Response,
                responses={200: {"content": {CONTENT_TYPE: {}}}})
    def metrics(request: Request) -> Response:  # plain def: the scrape reads index sizes off the event loop
        return Response(exposition(request.app.state.metrics_registry), media_type=CONTENT_TYPE)

    return router


def open_paths(metrics_public: bool) -> frozenset[str]:
    return frozenset({HEALTHZ, READYZ} | ({METRICS} if metrics_public else set()))


__all__ = ["HEALTHZ", "METRICS", "READYZ", "health_router", "open_paths", "readiness"]
