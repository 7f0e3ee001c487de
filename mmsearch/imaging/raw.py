"""Camera RAW files (DNG, CR2/CR3, NEF, ARW, RAF, ORF, RW2, ...) through rawpy, which carries LibRaw.

A RAW file is a sensor dump plus, almost always, a JPEG preview the camera rendered. Demosaicing is
slow (hundreds of ms for a 24 MP file even at half size), while the preview is usually 1-2k pixels wide
and already colour-managed, so the preview is used whenever it is at least as large as what is needed
(the model's input, or ``MIN_PREVIEW`` when no size is given); otherwise the sensor data is demosaiced
at half size. The picture comes back upright (the preview's own EXIF orientation, else the RAW's).
"""

from __future__ import annotations

import io
import logging
import os
from dataclasses import dataclass, field
from datetime import datetime

from PIL import Image, ImageOps

log = logging.getLogger(__name__)

MIN_PREVIEW = 1024  # shorter side a preview needs when the caller names no target size
_FLIP_TO_TRANSPOSE = {3: Image.Transpose.ROTATE_180, 5: Image.Transpose.ROTATE_90, 6: Image.Transpose.ROTATE_270}


class NotRawError(Exception):
    """LibRaw does not recognise the file: it may be an ordinary image with a RAW name."""


class RawDecodeError(Exception):
    """LibRaw recognised the file but cannot decode it (truncated, corrupt, too large)."""


@dataclass
class RawFacts:
    """What LibRaw knows about the shot, for the photo metadata (see mmsearch.imaging.photometa)."""

    width: int = 0  # upright size of the full picture
    height: int = 0
    timestamp: datetime | None = None
    iso: float | None = None
    exposure: float | None = None  # seconds
    aperture: float | None = None
    focal_length: float | None = None
    lens: str | None = None
    exif: Image.Exif | None = None  # from the preview or the file's TIFF header, when there is one
    source: str = field(default="")  # "preview" or "demosaic": how the pixels were made


def _open_raw(path: "str | os.PathLike[str]"):
    """LibRaw's handle on ``path``: NotRawError for files it does not know, RawDecodeError for broken ones."""
    import rawpy

    try:
        return rawpy.imread(os.fspath(path))
    except rawpy.LibRawFileUnsupportedError as exc:
        raise NotRawError(str(exc)) from exc
    except (rawpy.LibRawError, OSError) as exc:
        raise RawDecodeError(f"cannot read RAW file: {_libraw_reason(exc)}") from exc


def read_raw(path: "str | os.PathLike[str]", max_pixels: int, target_size: int | None) -> tuple[Image.Image, RawFacts]:
    """-> (upright RGB picture, facts). Raises NotRawError for files LibRaw does not know, RawDecodeError
    for broken RAW files and for pictures beyond ``max_pixels`` (counted as actually decoded)."""
    import rawpy

    raw = _open_raw(path)
    with raw:
        facts = _facts(raw)
        try:
            picture = _preview(raw, target_size or MIN_PREVIEW, max_pixels, facts)
            if picture is not None:
                facts.source = "preview"
            else:
                picture = _demosaic(raw, max_pixels)
                facts.source = "demosaic"
                _shot_facts(raw, facts)
        except rawpy.LibRawError as exc:
            raise RawDecodeError(f"cannot decode RAW file: {_libraw_reason(exc)}") from exc
    if facts.exif is None:
        facts.exif = _tiff_header_exif(path)
    return picture, facts


def _libraw_reason(exc: BaseException) -> str:
    import rawpy

    text = (str(exc) or type(exc).__name__).replace("b'", "").replace("'", "")
    if isinstance(exc, (rawpy.LibRawOutOfOrderCallError, rawpy.LibRawDataError, rawpy.LibRawIOError)):
        return f"truncated or corrupt RAW data ({text})"
    return text


def _facts(raw) -> RawFacts:
    """The picture's upright size, known as soon as the file is opened."""
    sizes = raw.sizes
    width, height = sizes.width, sizes.height
    if sizes.flip in (5, 6):
        width, height = height, width
    return RawFacts(width=width, height=height)


def _shot_facts(raw, facts: RawFacts) -> None:
    """Exposure, time and lens as LibRaw decoded them. rawpy reads these only after unpacking the sensor
    data, so they are taken only when the picture was demosaiced anyway; otherwise the EXIF gives them."""
    try:
        other = raw.other
        facts.timestamp = other.timestamp if other.timestamp and other.timestamp.year > 1970 else None
        facts.iso = other.iso_speed or None
        facts.exposure = other.shutter_speed or None
        facts.aperture = other.aperture or None
        facts.focal_length = other.focal_length or None
        lens = raw.lens
        facts.lens = (lens.model or "").strip() or None
    except Exception as exc:  # older rawpy without these accessors, or odd values: the pixels still count
        log.debug("RAW shot facts unreadable: %s", exc)


def _flip(raw) -> int:
    return raw.sizes.flip


def _preview(raw, needed: int, max_pixels: int, facts: RawFacts) -> Image.Image | None:
    """The embedded JPEG (or bitmap) preview, upright, if its shorter side is at least ``needed``
    (a JPEG preview's own EXIF, which some cameras write in full, goes into ``facts``)."""
    import rawpy

    try:
        thumb = raw.extract_thumb()
    except (rawpy.LibRawNoThumbnailError, rawpy.LibRawUnsupportedThumbnailError):
        return None
    except rawpy.LibRawError as exc:  # a damaged preview: the sensor data may still be fine
        log.debug("RAW preview unreadable: %s", exc)
        return None
    if thumb.format == rawpy.ThumbFormat.JPEG:
        try:
            im = Image.open(io.BytesIO(thumb.data), formats=["JPEG"])
        except Exception as exc:
            log.debug("RAW preview is not a readable JPEG: %s", exc)
            return None
        if min(im.size) < needed or im.width * im.height > max_pixels:
            return None
        preview_exif = im.getexif()
        if preview_exif.get(0x010F) or preview_exif.get(0x0132):  # it says which camera, or when
            facts.exif = preview_exif
        im.draft("RGB", (needed, needed))
        im.load()
        own_orientation = im.getexif().get(0x0112, 1)
        if own_orientation not in (None, 1):
            return ImageOps.exif_transpose(im).convert("RGB")
        return _turn(im.convert("RGB"), _flip(raw))
    if thumb.format == rawpy.ThumbFormat.BITMAP:
        im = Image.fromarray(thumb.data)
        if min(im.size) < needed:
            return None
        return _turn(im.convert("RGB"), _flip(raw))
    return None


def _demosaic(raw, max_pixels: int) -> Image.Image:
    sizes = raw.sizes
    half = (sizes.width // 2) * (sizes.height // 2)
    if half > max_pixels:
        raise RawDecodeError(
            f"image is {sizes.width // 2}x{sizes.height // 2} = {half:,} pixels at half size, above the cap of {max_pixels:,}"
        )
    rgb = raw.postprocess(half_size=True, use_camera_wb=True, output_bps=8)  # LibRaw applies the orientation
    return Image.fromarray(rgb).convert("RGB")


def _turn(im: Image.Image, flip: int) -> Image.Image:
    method = _FLIP_TO_TRANSPOSE.get(flip)
    return im.transpose(method) if method is not None else im


HEADER_BYTES = 1 << 20  # where TIFF-based RAW files keep IFD0 and the EXIF directory


def _tiff_header_exif(path) -> Image.Exif | None:
    """EXIF of a TIFF-based RAW (DNG, CR2, NEF, ARW, ORF, PEF...) parsed from its header, without decoding
    pixels (Pillow cannot open most RAW images, but its EXIF parser reads their TIFF directories)."""
    try:
        with open(os.fspath(path), "rb") as fh:
            head = fh.read(HEADER_BYTES)
        if head[:4] not in (b"II*\0", b"MM\0*"):
            return None  # CR3, RAF, RW2... keep their EXIF elsewhere
        exif = Image.Exif()
        exif.load(head)
        return exif if len(exif) else None
    except Exception as exc:  # a damaged header gives no EXIF, not a failed file
        log.debug("RAW header EXIF unreadable: %s", exc)
        return None


def read_raw_facts(path: "str | os.PathLike[str]") -> RawFacts:
    """The shot facts of a RAW file without decoding any pixels (for metadata-only refreshes)."""
    raw = _open_raw(path)
    with raw:
        facts = _facts(raw)
    facts.exif = _tiff_header_exif(path)
    return facts
