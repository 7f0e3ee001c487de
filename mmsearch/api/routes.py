"""HTTP routes. Handlers are plain ``def`` so FastAPI runs the blocking model/FAISS work in its threadpool."""

from __future__ import annotations

import asyncio
import io
import mimetypes
import os
from typing import Literal

from fastapi import APIRouter, Depends, File, Form, Path as PathParam, UploadFile
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse, Response

from mmsearch.imaging.decode import DecodeError, open_image
from mmsearch.imaging.formats import UPLOAD_FORMATS
from mmsearch.imaging.items import item_picture
from mmsearch.api.deps import get_app_settings, get_searcher
from mmsearch.api.security import Scope, check_query_bounds, require
from mmsearch.api.schemas import ErrorOut, InfoOut, ItemOut, SearchRequest, SearchResponse, json_response
from mmsearch.config import Settings
from mmsearch.errors import InvalidQueryError, ItemNotFoundError, PayloadTooLargeError
from mmsearch.search import Searcher

router = APIRouter(dependencies=[Depends(require(Scope.READ))])  # every route here reads the default collection
ERRORS = {404: {"model": ErrorOut}, 413: {"model": ErrorOut}, 422: {"model": ErrorOut}}
ItemId = PathParam(..., ge=0, le=2**63 - 1, description="Item id")


@router.get("/v1/info", response_model=InfoOut)
def info(searcher: Searcher = Depends(get_searcher)) -> InfoOut:
    return InfoOut(**searcher.info())


@router.post("/v1/search", response_model=SearchResponse, responses=ERRORS)
async def search_text(
    body: SearchRequest, searcher: Searcher = Depends(get_searcher), settings: Settings = Depends(get_app_settings)
) -> Response:
    """Async, without blocking: the query joins the searcher's batching workers (embedding, then vector
    search) and the event loop awaits its answer (no request thread is parked on it); a searcher that
    does not batch runs in the threadpool."""
    if not body.text.strip():
        raise InvalidQueryError("text query is empty")
    check_query_bounds(settings, body.k, body.text)
    future = searcher.text_search_future(body.text, body.target, body.k)
    if future is not None:
        hits = (await asyncio.wrap_future(future))[0]
    else:
        hits = await run_in_threadpool(searcher.search_text, body.text, body.target, body.k)
    return json_response({"query": body.text, "target": body.target, "hits": hits})


@router.post("/v1/search/image", response_model=SearchResponse, responses=ERRORS)
def search_image(
    file: UploadFile = File(..., description="Query image (JPEG, PNG, WebP, GIF, BMP, TIFF, HEIC/HEIF, AVIF)"),
    target: Literal["image", "text", "all"] = Form("image"),
    k: int = Form(10, ge=1, le=1000),
    searcher: Searcher = Depends(get_searcher),
    settings: Settings = Depends(get_app_settings),
) -> Response:
    check_query_bounds(settings, k)
    data = file.file.read(settings.max_upload_bytes + 1)
    if len(data) > settings.max_upload_bytes:
        raise PayloadTooLargeError(f"upload is larger than {settings.max_upload_bytes} bytes")
    if not data:
        raise InvalidQueryError("uploaded file is empty")
    try:
        # The content decides what this is: neither the file name nor the declared type is trusted.
        image = open_image(io.BytesIO(data), settings.max_image_pixels, formats=UPLOAD_FORMATS)
    except DecodeError as exc:
        raise InvalidQueryError(f"uploaded file is not a readable image: {exc}") from exc
    return json_response({"query": file.filename or "image", "target": target, "hits": searcher.search_image(image, target, k)})


@router.get("/v1/items/{item_id}", response_model=ItemOut, responses=ERRORS)
def get_item(item_id: int = ItemId, searcher: Searcher = Depends(get_searcher)) -> ItemOut:
    r = searcher.item(item_id)
    return ItemOut(id=r.id, modality=r.modality, path=r.path, text=r.text, metadata=r.meta, sha256=r.sha256, size=r.size)


@router.get("/v1/items/{item_id}/thumbnail", responses={**ERRORS, 200: {"content": {"image/jpeg": {}}}})
def thumbnail(
    item_id: int = ItemId,
    searcher: Searcher = Depends(get_searcher),
    settings: Settings = Depends(get_app_settings),
) -> Response:
    """A small JPEG of an image item (a picture, a video frame, a PDF page). Files are found by item id
    only: no request names a path."""
    record = searcher.item(item_id)
    if record.modality != "image" or not record.path:
        raise ItemNotFoundError(f"item {item_id} is not an image")
    try:
        image = item_picture(record.path, record.meta, max_pixels=settings.max_image_pixels, size=settings.thumbnail_size)
    except (DecodeError, OSError) as exc:
        raise ItemNotFoundError(f"image of item {item_id} is no longer readable") from exc
    image.thumbnail((settings.thumbnail_size, settings.thumbnail_size))
    buf = io.BytesIO()
    image.save(buf, format="JPEG", quality=85)
    return Response(buf.getvalue(), media_type="image/jpeg", headers={"Cache-Control": "max-age=3600"})


@router.get("/v1/items/{item_id}/file", responses={**ERRORS, 200: {"content": {"application/octet-stream": {}}}})
def item_file(item_id: int = ItemId, searcher: Searcher = Depends(get_searcher)) -> FileResponse:
    """The file an item was indexed from (a picture, a video, a PDF), with HTTP Range support so a
    video can be played from any moment (``#t=``) and a PDF opened at a page (``#page=``). Found by
    item id only: no request names a path."""
    record = searcher.item(item_id)
    if not record.path or not os.path.isfile(record.path):
        raise ItemNotFoundError(f"item {item_id} has no file to serve")
    media_type = mimetypes.guess_type(record.path)[0] or "application/octet-stream"
    return FileResponse(record.path, media_type=media_type, content_disposition_type="inline",
                        filename=os.path.basename(record.path), headers={"X-Content-Type-Options": "nosniff", "Cache-Control": "no-cache"})
