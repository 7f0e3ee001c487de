"""HTTP hardening: API keys with scopes, CORS, request body and time budgets, and path-free error text.

Each guard is a small pure-ASGI middleware so it also covers routes FastAPI does not own (404s, the
docs) and answers before any request body is parsed. ``install_security`` wires them in the order
that makes sense from the outside in: CORS (so browsers get their preflight answered and see CORS
headers on 401s), API key, body size, time budget. Routes declare the scope they need with
``Depends(require(Scope.READ))`` (mmsearch.api.auth, re-exported here).
"""

from __future__ import annotations

import asyncio
import logging
import re

from fastapi import FastAPI
from starlette.middleware.cors import CORSMiddleware
from starlette.types import ASGIApp, Message, Receive, Send
from starlette.types import Scope as AsgiScope

from mmsearch.api.auth import API_KEY_HEADER, AuthMiddleware, authorize, declare_api_key, require, send_json
from mmsearch.config import Settings
from mmsearch.errors import InvalidQueryError
from mmsearch.storage.apikeys import KeyRing, Scope

log = logging.getLogger(__name__)

BULK_SUFFIX = ":bulk"  # POST /v1/items:bulk (and per collection): NDJSON bodies of many items
# Room for multipart boundaries and the small form fields next to an uploaded file.
MULTIPART_OVERHEAD = 64 * 1024

# An absolute POSIX path (or a Windows drive path) inside an error message.
_PATH = re.compile(r"(?<![\w.])(?:[A-Za-z]:\\|/)(?:[^\s'\"<>:;,()]+)")


def redact_paths(text: str) -> str:
    """Replace filesystem paths in a message meant for a client: they tell an attacker the layout."""
    return _PATH.sub("<path>", text)


class _BodyTooLarge(Exception):
    pass


class BodySizeLimitMiddleware:
    """Refuse request bodies above ``max_bytes`` with 413, whether declared up front or streamed.
    Bulk write requests (paths ending in ``:bulk``) have their own, larger ``bulk_max_bytes``."""

    def __init__(self, app: ASGIApp, max_bytes: int, bulk_max_bytes: int | None = None) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.bulk_max_bytes = bulk_max_bytes or max_bytes

    async def __call__(self, scope: AsgiScope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.bulk_max_bytes if str(scope.get("path", "")).endswith(BULK_SUFFIX) else self.max_bytes
        declared = next((v for k, v in scope.get("headers", []) if k == b"content-length"), None)
        if declared is not None and (not declared.isdigit() or int(declared) > limit):
            await self._refuse(send, limit)
            return
        seen, exceeded, started = 0, False, False

        async def counting_receive() -> Message:
            nonlocal seen, exceeded
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    exceeded = True
                    raise _BodyTooLarge()
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal started
            if exceeded:  # whatever the app made of the cut-off body, the client gets the 413
                return
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counting_receive, guarded_send)
        except _BodyTooLarge:
            pass
        if exceeded and not started:
            await self._refuse(send, limit)

    async def _refuse(self, send: Send, limit: int) -> None:
        await send_json(send, 413, {"error": f"request body is larger than {limit} bytes"})


class TimeoutMiddleware:
    """Answer 503 when a request has not started its response within ``seconds``.

    The handler runs in a worker thread that cannot be interrupted; it is left to finish in the
    background and its late response is discarded, so the client is never kept waiting past the budget.
    """

    def __init__(self, app: ASGIApp, seconds: float, open_paths: frozenset[str] = frozenset()) -> None:
        self.app = app
        self.seconds = seconds
        self.open_paths = open_paths

    async def __call__(self, scope: AsgiScope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("path") in self.open_paths:
            await self.app(scope, receive, send)
            return
        started, abandoned = False, False

        async def guarded_send(message: Message) -> None:
            nonlocal started
            if abandoned:
                return
            started = started or message["type"] == "http.response.start"
            await send(message)

        task = asyncio.ensure_future(self.app(scope, receive, guarded_send))
        done, _ = await asyncio.wait({task}, timeout=self.seconds)
        if task in done or started:
            await task  # finished (or already streaming): its result or exception stands
            return
        abandoned = True
        task.add_done_callback(_log_late_failure)
        log.warning("%s %s exceeded the %.1fs request budget", scope.get("method"), scope.get("path"), self.seconds)
        await send_json(send, 503, {"error": f"the request took longer than {self.seconds:g}s; try again or ask for less"},
                         {"Retry-After": "1"})


def _log_late_failure(task: "asyncio.Future") -> None:
    if not task.cancelled() and task.exception() is not None:
        log.warning("a request abandoned after its time budget later failed: %s", type(task.exception()).__name__)


def cors_origins(settings: Settings) -> list[str]:
    """``MMSEARCH_CORS_ORIGINS`` is a comma-separated list; empty (the default) means CORS is off."""
    return [o.strip() for o in (settings.cors_origins or "").split(",") if o.strip()]


def check_query_bounds(settings: Settings, k: int, text: str | None = None) -> None:
    """The server's configured limits, on top of the fixed bounds the request schema declares."""
    if k > settings.max_k:
        raise InvalidQueryError(f"k must be at most {settings.max_k}")
    if text is not None and len(text) > settings.max_query_chars:
        raise InvalidQueryError(f"query text must be at most {settings.max_query_chars} characters")


def install_security(app: FastAPI, settings: Settings, keyring: KeyRing, open_paths: frozenset[str]) -> None:
    """Add the guards; the last added runs first. Auth is always installed: it lets everything through
    while no key exists, and starts checking as soon as one is created (see mmsearch.api.auth)."""
    if settings.request_timeout > 0:
        app.add_middleware(TimeoutMiddleware, seconds=settings.request_timeout, open_paths=open_paths)
    app.add_middleware(BodySizeLimitMiddleware, max_bytes=settings.max_upload_bytes + MULTIPART_OVERHEAD,
                       bulk_max_bytes=settings.max_bulk_bytes)
    app.add_middleware(AuthMiddleware, keyring=keyring, open_paths=open_paths)
    if keyring.enabled:
        declare_api_key(app, open_paths)
    origins = cors_origins(settings)
    if origins:
        app.add_middleware(
            CORSMiddleware, allow_origins=origins, allow_methods=["GET", "POST", "PUT", "DELETE"],
            allow_headers=[API_KEY_HEADER, "Authorization", "Content-Type"], max_age=600,
        )


__all__ = [
    "API_KEY_HEADER", "AuthMiddleware", "BodySizeLimitMiddleware", "Scope", "TimeoutMiddleware", "authorize",
    "check_query_bounds", "cors_origins", "install_security", "redact_paths", "require",
]
