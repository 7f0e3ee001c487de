"""Every error leaves the API as JSON ``{"error": "..."}``: no stack traces, no server paths."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from mmsearch.api.security import redact_paths
from mmsearch.errors import CollectionExistsError, InvalidQueryError, ItemNotFoundError, MmsearchError, PayloadTooLargeError

log = logging.getLogger(__name__)

STATUS = {PayloadTooLargeError: 413, CollectionExistsError: 409, InvalidQueryError: 422, ItemNotFoundError: 404}


def _status_for(exc: MmsearchError) -> int:
    for cls, status in STATUS.items():
        if isinstance(exc, cls):
            return status
    return 503  # index or model trouble on the server side, not the client's fault


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(MmsearchError)
    async def _mmsearch_error(_: Request, exc: MmsearchError) -> JSONResponse:
        status = _status_for(exc)
        if status >= 500:
            log.warning("request failed: %s", exc)  # the full message, paths included, stays in the server log
        return JSONResponse({"error": redact_paths(str(exc))}, status_code=status)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
        problems = []
        for err in exc.errors():
            where = ".".join(str(p) for p in err.get("loc", ()) if p != "body")
            problems.append(f"{where}: {err.get('msg')}" if where else str(err.get("msg")))
        return JSONResponse({"error": "invalid request: " + "; ".join(problems)}, status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        return JSONResponse({"error": redact_paths(str(exc.detail))}, status_code=exc.status_code, headers=getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error")
        return JSONResponse({"error": "internal error"}, status_code=500)
