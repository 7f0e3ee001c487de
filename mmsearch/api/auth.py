"""Who may call what: API keys (mmsearch.storage.apikeys) checked on every request, scopes per route.

Two steps, so that no route can be forgotten:

* :class:`AuthMiddleware` (pure ASGI, before any body is read) answers 401 to every request without a
  valid key, on every path but the open ones (``/healthz``, ``/readyz``, and ``/metrics`` when
  ``MMSEARCH_METRICS_PUBLIC`` is set). That covers routes FastAPI does not own too (the docs, the page).
* :func:`require` is the FastAPI dependency each route declares with the scope it needs; it answers 403
  when the key is valid but its scope or collection does not cover the route. At startup
  :func:`check_every_route_guarded` refuses to serve an app with a route that declares no scope.

The key travels in ``X-API-Key`` or as ``Authorization: Bearer <key>`` (what Prometheus and most HTTP
tools send). When no key exists at all (no ``MMSEARCH_API_KEY``, no ``mmsearch keys create`` yet) the
server is open, as it always was; creating the first key turns auth on within the refresh interval.
"""

from __future__ import annotations

import json
from typing import Callable, Iterable

from fastapi import FastAPI, HTTPException, Request
from fastapi.routing import APIRoute
from starlette.types import ASGIApp, Receive, Send
from starlette.types import Scope as AsgiScope

from mmsearch.storage.apikeys import ApiKey, KeyRing, Scope

API_KEY_HEADER = "X-API-Key"
DEFAULT_COLLECTION = "default"  # what the routes without a collection in their path serve
COLLECTION_PARAMS = ("name", "collection")  # path parameters naming a collection (/v1/collections/{name}/...)
_SCOPE_KEY = "mmsearch.api_key"  # where the middleware leaves the authenticated key in the ASGI scope
_HEADER = API_KEY_HEADER.lower().encode()
_BEARER = b"bearer "
UNAUTHORIZED = f"missing or wrong API key (send it in the {API_KEY_HEADER} header or as Authorization: Bearer <key>)"


def presented_key(headers: Iterable[tuple[bytes, bytes]]) -> bytes:
    """The key a request carries: ``X-API-Key``, else an ``Authorization: Bearer`` token; b"" if neither."""
    bearer = b""
    for name, value in headers:
        if name == _HEADER:
            return value
        if name == b"authorization" and value[:7].lower() == _BEARER:
            bearer = value[7:].strip()
    return bearer


async def send_json(send: Send, status: int, body: dict, headers: dict[str, str] | None = None) -> None:
    """Answer from a middleware, before any route runs: the same ``{"error": ...}`` JSON the handlers give."""
    payload = json.dumps(body).encode("utf-8")
    raw = [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())]
    raw += [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in (headers or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": payload})


class AuthMiddleware:
    """401 for any request without a valid key (constant-time check, see KeyRing.authenticate)."""

    def __init__(self, app: ASGIApp, keyring: KeyRing, open_paths: frozenset[str]) -> None:
        self.app = app
        self.keyring = keyring
        self.open_paths = open_paths

    async def __call__(self, scope: AsgiScope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not self.keyring.enabled or scope.get("path") in self.open_paths:
            await self.app(scope, receive, send)
            return
        given = presented_key(scope.get("headers", ()))
        key = self.keyring.authenticate(given) if given else None
        if key is None:
            await send_json(send, 401, {"error": UNAUTHORIZED}, {"WWW-Authenticate": API_KEY_HEADER})
            return
        scope[_SCOPE_KEY] = key
        await self.app(scope, receive, send)


def authorize(request: Request, needed: Scope, collection: str | None) -> ApiKey | None:
    """Raise 403 unless the request's key may do ``needed`` on ``collection`` (None: the whole server).
    For routes whose collection is not a path parameter (e.g. named in the body); -> the key, or None
    when auth is off."""
    keyring: KeyRing = request.app.state.keyring
    if not keyring.enabled:
        return None
    key: ApiKey | None = request.scope.get(_SCOPE_KEY)
    if key is None:  # an open path declared a scope: still no access without a key
        raise HTTPException(401, UNAUTHORIZED, headers={"WWW-Authenticate": API_KEY_HEADER})
    if not key.allows(needed, collection):
        where = f"collection {collection!r}" if collection else "server-wide routes (a global key is needed)"
        raise HTTPException(403, f"this API key ({key.describe()}) may not {needed.value} {where}")
    return key


def require(scope: Scope, *, server_wide: bool = False) -> Callable:
    """A dependency for a route that needs ``scope`` ("read", "write", "admin" or a Scope): on the
    collection in its ``{name}`` (or ``{collection}``) path parameter, else on the default collection;
    ``server_wide`` routes (``/metrics``) need a global key.

        @router.put("/v1/collections/{name}/items/{key}", dependencies=[Depends(require("write"))])
    """
    needed = Scope(scope)

    async def check_api_key(request: Request) -> ApiKey | None:  # async: a dict lookup, no thread hop
        collection = None if server_wide else next(
            (request.path_params[p] for p in COLLECTION_PARAMS if p in request.path_params), DEFAULT_COLLECTION)
        return authorize(request, needed, collection)

    check_api_key.required_scope = needed  # type: ignore[attr-defined]
    return check_api_key


def _declared_scopes(route: APIRoute) -> list[Scope]:
    found, pending = [], [route.dependant]
    while pending:
        dependant = pending.pop()
        scope = getattr(dependant.call, "required_scope", None)
        if scope is not None:
            found.append(scope)
        pending.extend(dependant.dependencies)
    return found


def unguarded_routes(app: FastAPI, open_paths: frozenset[str]) -> list[str]:
    """API routes that declare no scope with :func:`require` (open paths excepted)."""
    return [f"{','.join(sorted(r.methods))} {r.path}" for r in app.routes
            if isinstance(r, APIRoute) and r.path not in open_paths and not _declared_scopes(r)]


def check_every_route_guarded(app: FastAPI, open_paths: frozenset[str]) -> None:
    """A route added without a scope would be open to every key of every collection: refuse to start."""
    missing = unguarded_routes(app, open_paths)
    if missing:
        raise RuntimeError("routes without a required scope (add dependencies=[Depends(require(Scope...))]): " + "; ".join(missing))


def declare_api_key(app: FastAPI, open_paths: frozenset[str]) -> None:
    """Tell the OpenAPI schema (and so /docs and schemathesis) that every route but the open ones needs the key."""
    build: Callable[[], dict] = app.openapi

    def openapi() -> dict:
        if app.openapi_schema:
            return app.openapi_schema
        schema = build()
        schema.setdefault("components", {}).setdefault("securitySchemes", {})["APIKeyHeader"] = {
            "type": "apiKey", "in": "header", "name": API_KEY_HEADER,
        }
        schema["security"] = [{"APIKeyHeader": []}]
        for path in open_paths:
            for operation in schema.get("paths", {}).get(path, {}).values():
                operation["security"] = []
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]


__all__ = [
    "API_KEY_HEADER", "AuthMiddleware", "DEFAULT_COLLECTION", "Scope", "authorize",
    "check_every_route_guarded", "declare_api_key", "presented_key", "require", "send_json", "unguarded_routes",
]
