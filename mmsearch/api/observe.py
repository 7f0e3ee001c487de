"""Request metrics (per route template, never per raw path) and the app's own metrics registry.

The middleware sits outermost so that every answer is counted, 401s and 413s included. A request is
labelled with the template of the route it matched (``/v1/items/{item_id}``), so ids in paths never
turn into one time series each; a path that matches no route is labelled ``unmatched``.
"""

from __future__ import annotations

import time
from typing import Callable, Mapping

from fastapi import FastAPI
from prometheus_client import CollectorRegistry
from starlette.routing import Match, Mount
from starlette.types import ASGIApp, Message, Receive, Send
from starlette.types import Scope as AsgiScope

from mmsearch.api.health import served_searchers
from mmsearch.metrics import IN_FLIGHT, IndexCollector, IndexFacts, record_request

UNMATCHED = "unmatched"


def _template(route) -> str:
    path = getattr(route, "path", None)
    if path is None:
        return UNMATCHED
    return f"{path}/{{path}}" if isinstance(route, Mount) else path


def route_label(app: FastAPI, scope: AsgiScope) -> str:
    """The route template a request matched; for one answered before routing (a 401, a 413) the
    template it would have matched."""
    route = scope.get("route")
    if route is not None:
        return _template(route)
    for candidate in app.router.routes:
        match, _ = candidate.matches(scope)
        if match is Match.FULL:
            return _template(candidate)
    return UNMATCHED


class MetricsMiddleware:
    """Counts every answer and times it from the first byte received to the last byte sent."""

    def __init__(self, app: ASGIApp, fastapi_app: FastAPI) -> None:
        self.app = app
        self.fastapi_app = fastapi_app

    async def __call__(self, scope: AsgiScope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500  # what the server answers if the app raises before responding

        async def watching_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        IN_FLIGHT.inc()
        try:
            await self.app(scope, receive, watching_send)
        finally:
            IN_FLIGHT.dec()
            record_request(route_label(self.fastapi_app, scope), scope.get("method", ""), status, time.perf_counter() - started)


def collection_facts(app: FastAPI) -> Mapping[str, IndexFacts]:
    """Items and generation of every served collection (nothing before startup has opened them)."""
    facts = {}
    for name, searcher in (served_searchers(app) or {}).items():
        info = searcher.info()
        facts[name] = {"counts": info["counts"], "generation": info["generation"]}
    return facts


def app_registry(app: FastAPI) -> CollectorRegistry:
    """The metrics that belong to this app's indexes, read at scrape time from every source in
    ``app.state.index_fact_sources`` (the served collections'; others may append theirs)."""
    sources: list[Callable[[], Mapping[str, IndexFacts]]] = [lambda: collection_facts(app)]
    app.state.index_fact_sources = sources

    def facts() -> dict[str, IndexFacts]:
        merged: dict[str, IndexFacts] = {}
        for source in list(app.state.index_fact_sources):
            merged.update(source())
        return merged

    registry = CollectorRegistry(auto_describe=False)
    registry.register(IndexCollector(facts))
    return registry


__all__ = ["MetricsMiddleware", "app_registry", "collection_facts", "route_label"]
