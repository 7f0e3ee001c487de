"""The picture of an image item, wherever it comes from: an image file, a frame of a video (``video`` and
``timestamp`` in its metadata) or a page of a PDF (``document`` and ``page``). Thumbnails and
``mmsearch verify --repair`` (which re-embeds an item from its source) both go through here, so a
frame is found again exactly where the indexer took it."""

from __future__ import annotations

from PIL import Image

from mmsearch.imaging.decode import DecodeError, open_image


def _number(meta: dict, name: str) -> float | None:
    value = meta.get(name)
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def item_picture(path: str, meta: dict | None, *, max_pixels: int, size: int) -> Image.Image:
    """RGB picture of the item stored at ``path``, at least ``size`` px on its shorter side where the
    source allows (never upscaled). Raises DecodeError (or OSError) when the source is unreadable."""
    meta = meta or {}
    timestamp, page = _number(meta, "timestamp"), _number(meta, "page")
    if meta.get("video") == path and timestamp is not None:
        from mmsearch.imaging.video import frame_at

        return frame_at(path, timestamp, max_pixels=max_pixels, min_side=size)
    if meta.get("document") == path and page is not None:
        from mmsearch.imaging.pdf import render_page

        if not page.is_integer():
            raise DecodeError(f"page {page} is not a page number")
        return render_page(path, int(page), min_side=size)
    return open_image(path, max_pixels, target_size=size)
