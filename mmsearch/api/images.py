"""Images that arrive in requests (query images, item images): base64 text or raw bytes -> a decoded picture.

One rule for every route: the size cap is the server's upload limit, base64 may be a ``data:`` URL, and the
content alone decides the format, among the raster formats an untrusted upload may be (UPLOAD_FORMATS).
"""

from __future__ import annotations

import base64
import binascii
import io
import re

from PIL import Image

from mmsearch.imaging.decode import DecodeError, open_image
from mmsearch.imaging.formats import UPLOAD_FORMATS
from mmsearch.errors import InvalidQueryError, PayloadTooLargeError

_DATA_URL = re.compile(r"^data:[\w/+.-]*;base64,", re.IGNORECASE)


def base64_bytes(data_b64: str, max_bytes: int, field: str = "image_b64") -> bytes:
    """The bytes of a base64 string (or ``data:...;base64,`` URL), refused before decoding when too large."""
    payload = _DATA_URL.sub("", data_b64.strip(), count=1)
    if len(payload) * 3 // 4 > max_bytes:
        raise PayloadTooLargeError(f"image is larger than {max_bytes} bytes")
    try:
        data = base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise InvalidQueryError(f"{field} is not valid base64") from exc
    if not data:
        raise InvalidQueryError("image is empty")
    return data


def decode_upload(data: bytes, max_pixels: int, what: str = "image") -> Image.Image:
    """Decode untrusted image bytes to RGB; anything not a readable raster image is InvalidQueryError."""
    if not data:
        raise InvalidQueryError(f"{what} is empty")
    try:
        return open_image(io.BytesIO(data), max_pixels, formats=UPLOAD_FORMATS)
    except DecodeError as exc:
        raise InvalidQueryError(f"{what} is not readable: {exc}") from exc


def image_format(data: bytes) -> str:
    """The format PIL reads ``data`` as (header only), among UPLOAD_FORMATS."""
    try:
        with Image.open(io.BytesIO(data), formats=list(UPLOAD_FORMATS)) as im:
            return str(im.format)
    except Exception as exc:  # decode_upload has already given the reason for anything unreadable
        raise InvalidQueryError("image is not a readable image") from exc
