"""The write API: items upserted and deleted by the caller's key, one at a time or thousands per request.

``PUT /v1/items/{key}`` (JSON with base64 or URL image, or multipart upload), ``DELETE /v1/items/{key}``,
``GET /v1/keys/{key}`` and ``POST /v1/items:bulk`` (NDJSON in, one NDJSON result line per row out). Every
route also exists per collection (``/v1/collections/{name}/...``, see mmsearch.api.app).

Handlers are async: they read the body, do the blocking part (JSON parsing, image decoding, URL fetching)
in the threadpool, hand the writes to the collection's single writer (mmsearch.live) and await the outcome,
which comes once the write is committed and visible to searches.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections import Counter
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any, AsyncIterator

from fastapi import APIRouter, Depends, Path as PathParam, Request
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, Field, ValidationError, ValidationInfo, model_validator
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile

from mmsearch.live import ItemImage, LiveWriter, WriteOp, WriteResult, item_key
from mmsearch.textfile import MAX_TEXT_BYTES
from mmsearch.api.deps import get_app_settings, get_collection, get_searcher
from mmsearch.api.fetch import FetchPolicy, fetch_image_bytes, parse_networks
from mmsearch.api.images import base64_bytes, decode_upload, image_format
from mmsearch.api.registry import Served
from mmsearch.api.schemas import ErrorOut, ItemOut
from mmsearch.api.security import require
from mmsearch.config import Settings
from mmsearch.errors import InvalidQueryError, ItemNotFoundError, MmsearchError, PayloadTooLargeError
from mmsearch.hashing import sha256_bytes
from mmsearch.search import Searcher
from mmsearch.storage.store import IMAGE, TEXT

log = logging.getLogger(__name__)

router = APIRouter(tags=["write"])
ERRORS = {404: {"model": ErrorOut}, 413: {"model": ErrorOut}, 422: {"model": ErrorOut}, 503: {"model": ErrorOut}}
KEY_PATTERN = r"^[^/\\\x00-\x1f\x7f]+$"
Key = PathParam(..., min_length=1, max_length=256, pattern=KEY_PATTERN,
                description="Your stable id for the item (e.g. the SKU); no '/' or control characters.")
MAX_METADATA_BYTES = 64 * 1024
BULK_CHUNK = 128  # rows parsed (and fetched, decoded) per threadpool call; the next chunk is prepared while one is written


class ItemIn(BaseModel):
    """An item's whole new state: text and/or one image (base64 or URL; or a multipart ``file``), and metadata."""

    text: str | None = Field(None, max_length=MAX_TEXT_BYTES, description="Searchable text; also the image's caption.")
    metadata: dict[str, Any] = Field(default_factory=dict, description="Fields to filter and sort on (numbers stay numbers).")
    image_b64: str | None = Field(None, max_length=40_000_000, description="The image, base64 (or a data: URL).")
    image_url: str | None = Field(None, max_length=2048, description="The image's http(s) URL; the server fetches it.")

    @model_validator(mode="after")
    def _complete(self, info: ValidationInfo) -> "ItemIn":
        if getattr(self, "delete", False):
            return self
        uploaded = bool(info.context and info.context.get("upload"))  # a multipart file is the image
        if sum((self.image_b64 is not None, self.image_url is not None, uploaded)) > 1:
            raise ValueError("give one image: image_b64, image_url or an uploaded file")
        if not (self.text and self.text.strip()) and self.image_b64 is None and self.image_url is None and not uploaded:
            raise ValueError("an item needs text or an image")
        if len(json.dumps(self.metadata, ensure_ascii=False).encode("utf-8")) > MAX_METADATA_BYTES:
            raise ValueError(f"metadata is larger than {MAX_METADATA_BYTES} bytes")
        return self


class BulkRow(ItemIn):
    key: str = Field(..., min_length=1, max_length=256, pattern=KEY_PATTERN)
    delete: bool = False


class WriteOut(BaseModel):
    key: str
    status: str = Field(..., description="created, updated, unchanged or deleted")
    ids: dict[str, int] = Field(..., description="Item id per modality (text, image) of what is stored now.")
    generation: int = Field(..., description="Index generation that holds the write.")


class KeyOut(BaseModel):
    key: str
    items: list[ItemOut]


_ITEM_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {"schema": ItemIn.model_json_schema()},
            "multipart/form-data": {"schema": {"type": "object", "properties": {
                "file": {"type": "string", "format": "binary", "description": "The image (JPEG, PNG, WebP, GIF, BMP, TIFF)."},
                "text": {"type": "string", "maxLength": MAX_TEXT_BYTES},
                "metadata": {"type": "string", "description": "A JSON object."},
            }}},
        },
    }
}
_BULK_BODY = {
    "requestBody": {
        "required": True,
        "content": {"application/x-ndjson": {"schema": {"type": "string", "description": (
            'One JSON object per line: {"key": "...", "text": ..., "metadata": {...}, "image_b64" or "image_url": ...} '
            'to upsert, {"key": "...", "delete": true} to delete.')}}},
    }
}
_BULK_RESPONSE = {200: {"description": "One JSON line per input row (line, key, status, ids or error), then a summary line.",
                        "content": {"application/x-ndjson": {}}}}


def _policy(settings: Settings) -> FetchPolicy:
    return FetchPolicy(parse_networks(settings.fetch_allow_networks), settings.fetch_timeout, settings.fetch_max_redirects,
                       settings.max_upload_bytes)


def _item_image(data: bytes, settings: Settings) -> ItemImage:
    if len(data) > settings.max_upload_bytes:
        raise PayloadTooLargeError(f"image is larger than {settings.max_upload_bytes} bytes")
    picture = decode_upload(data, settings.max_image_pixels)
    return ItemImage(data, picture, sha256_bytes(data), image_format(data))


def _op(key: str, item: ItemIn, settings: Settings, upload: bytes | None = None) -> WriteOp:
    """Validate and decode one upsert (blocking: base64, decoding, a URL fetch)."""
    if upload is not None:
        data = upload
    elif item.image_b64 is not None:
        data = base64_bytes(item.image_b64, settings.max_upload_bytes)
    elif item.image_url is not None:
        data, _ = fetch_image_bytes(item.image_url, _policy(settings))
    else:
        data = None
    image = _item_image(data, settings) if data is not None else None
    text = item.text if item.text and item.text.strip() else None
    return WriteOp(key, text=text, meta=item.metadata, image=image)


def _validated(model: type[BaseModel], raw: Any, uploaded: bool = False) -> BaseModel:
    try:
        return model.model_validate(raw, context={"upload": uploaded})
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            where = ".".join(str(p) for p in err.get("loc", ()))
            message = str(err.get("msg")).removeprefix("Value error, ")
            problems.append(f"{where}: {message}" if where else message)
        raise InvalidQueryError("invalid item: " + "; ".join(problems)) from exc


def _op_from_json(key: str, body: bytes, settings: Settings) -> WriteOp:
    try:
        raw = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidQueryError("the body is not valid JSON (send application/json, or multipart/form-data with a file)") from exc
    return _op(key, _validated(ItemIn, raw), settings)


def _op_from_form(key: str, text: str | None, metadata: str | None, upload: bytes | None, settings: Settings) -> WriteOp:
    try:
        meta = json.loads(metadata) if metadata else {}
    except ValueError as exc:
        raise InvalidQueryError("metadata is not valid JSON") from exc
    item = _validated(ItemIn, {"text": text, "metadata": meta}, uploaded=upload is not None)
    return _op(key, item, settings, upload=upload)


async def _await(future: Future) -> WriteResult:
    return await asyncio.wrap_future(future)


def _out(result: WriteResult) -> WriteOut:
    return WriteOut(key=result.key, status=result.status, ids=result.ids, generation=result.generation)


@router.put("/v1/items/{key}", response_model=WriteOut, responses=ERRORS, openapi_extra=_ITEM_BODY,
            dependencies=[Depends(require("write"))])
async def put_item(request: Request, key: str = Key, collection: Served = Depends(get_collection),
                   settings: Settings = Depends(get_app_settings)) -> WriteOut:
    """Create or replace the item stored under ``key``. Unchanged content is not embedded again; the reply
    comes once the write is committed and searchable."""
    if request.headers.get("content-type", "").startswith("multipart/form-data"):
        form = await request.form(max_files=1, max_fields=4)
        upload = form.get("file")
        data = await upload.read() if isinstance(upload, UploadFile) else None
        text, metadata = form.get("text"), form.get("metadata")
        op = await run_in_threadpool(_op_from_form, key, text if isinstance(text, str) else None,
                                     metadata if isinstance(metadata, str) else None, data, settings)
    else:
        op = await run_in_threadpool(_op_from_json, key, await request.body(), settings)
    [future] = collection.writer.submit([op])
    return _out(await _await(future))


@router.delete("/v1/items/{key}", response_model=WriteOut, responses=ERRORS, dependencies=[Depends(require("write"))])
async def delete_item(key: str = Key, collection: Served = Depends(get_collection)) -> WriteOut:
    """Delete the item stored under ``key`` (its text and image); 404 when there is none."""
    [future] = collection.writer.submit([WriteOp(key, delete=True)])
    result = await _await(future)
    if result.status == "not_found":
        raise ItemNotFoundError(f"no item with key {key!r}")
    return _out(result)


@router.get("/v1/keys/{key}", response_model=KeyOut, responses=ERRORS, dependencies=[Depends(require("read"))])
def get_by_key(key: str = Key, searcher: Searcher = Depends(get_searcher)) -> KeyOut:
    """What is stored under ``key``: its text item and/or image item, with their ids and metadata."""
    records = searcher.store.get_by_keys([item_key(key, TEXT), item_key(key, IMAGE)])
    if not records:
        raise ItemNotFoundError(f"no item with key {key!r}")
    items = [ItemOut(id=r.id, modality=r.modality, path=None, text=r.text, metadata=r.meta, sha256=r.sha256, size=r.size)
             for r in sorted(records.values(), key=lambda r: r.modality != TEXT)]
    return KeyOut(key=key, items=items)


@dataclass
class _Row:
    line: int
    key: str | None
    op: WriteOp | None = None
    error: str | None = None


def _prepare_rows(chunk: list[tuple[int, bytes]], settings: Settings) -> list[_Row]:
    rows = []
    for line, raw in chunk:
        key = None
        try:
            try:
                data = json.loads(raw)
            except (ValueError, UnicodeDecodeError) as exc:
                raise InvalidQueryError("not a JSON object") from exc
            if isinstance(data, dict) and isinstance(data.get("key"), str):
                key = data["key"]
            row = _validated(BulkRow, data)
            op = WriteOp(row.key, delete=True) if row.delete else _op(row.key, row, settings)
            rows.append(_Row(line, key, op))
        except MmsearchError as exc:
            rows.append(_Row(line, key, error=str(exc)))
    return rows


def _lines(body: bytes) -> list[tuple[int, bytes]]:
    return [(n, raw) for n, raw in enumerate(body.split(b"\n"), 1) if raw.strip()]


async def _bulk_results(body: bytes, writer: LiveWriter, settings: Settings) -> AsyncIterator[bytes]:
    counts: Counter = Counter()
    lines = _lines(body)
    pending: list[tuple[_Row, Future | None]] = []
    for start in range(0, len(lines), BULK_CHUNK):
        rows = await run_in_threadpool(_prepare_rows, lines[start : start + BULK_CHUNK], settings)
        futures = iter(writer.submit([r.op for r in rows if r.op is not None]))
        submitted = [(r, next(futures) if r.op is not None else None) for r in rows]
        for row, future in pending:  # the previous chunk's results, while this one is being written
            yield await _result_line(row, future, counts)
        pending = submitted
    for row, future in pending:
        yield await _result_line(row, future, counts)
    yield (json.dumps({"done": True, "rows": sum(counts.values()), "counts": dict(counts)}) + "\n").encode()


async def _result_line(row: _Row, future: Future | None, counts: Counter) -> bytes:
    out: dict[str, Any] = {"line": row.line, "key": row.key}
    if future is not None:
        try:
            result = await _await(future)
            out.update(key=result.key, status=result.status, ids=result.ids, generation=result.generation)
        except MmsearchError as exc:
            out.update(status="error", error=str(exc))
        except Exception:  # the details stay in the server log (mmsearch.live logs them)
            out.update(status="error", error="internal error")
    else:
        out.update(status="error", error=row.error)
    counts[out["status"]] += 1
    return (json.dumps(out, ensure_ascii=False) + "\n").encode("utf-8")


@router.post("/v1/items:bulk", responses={**ERRORS, **_BULK_RESPONSE}, openapi_extra=_BULK_BODY, response_class=StreamingResponse,
             dependencies=[Depends(require("write"))])
async def bulk(request: Request, collection: Served = Depends(get_collection),
               settings: Settings = Depends(get_app_settings)) -> StreamingResponse:
    """Upsert and delete many items: NDJSON in, one result line per row out (streamed as rows are written).
    A bad row is reported on its line and does not stop the others; each row's result comes once it is
    committed and searchable."""
    body = await request.body()  # bounded by MMSEARCH_MAX_BULK_BYTES (security.BodySizeLimitMiddleware)
    if not body.strip():
        raise InvalidQueryError("the body holds no rows (one JSON object per line)")
    writer = collection.writer  # started before the response is: a failure here is still an HTTP error
    return StreamingResponse(_bulk_results(body, writer, settings), media_type="application/x-ndjson")
