"""Opening an image file safely, for everyone who needs pixels: the indexer's decode workers, the HTTP
API's search-by-image upload, verification, training and quantisation.

It sits below both the indexer and the query service (neither imports the other for it) and imports no
torch: a one-shot query must not pay for it. Readers of further formats live beside this module.
"""

from __future__ import annotations

import logging
import os
import warnings
from typing import BinaryIO, Sequence

from PIL import Image, ImageFile, ImageOps

from mmsearch.imaging.formats import is_raw_name, register_plugins
from mmsearch.imaging.photometa import photo_fields, raw_fields
from mmsearch.imaging.raw import NotRawError, RawDecodeError, read_raw

log = logging.getLogger(__name__)

ImageFile.LOAD_TRUNCATED_IMAGES = False  # a truncated file is a failure to report, not a grey half-image
Image.MAX_IMAGE_PIXELS = None  # we enforce our own cap, with a clear reason, in open_image


class DecodeError(Exception):
    """The file is not a readable image (or is beyond the pixel cap)."""


def open_image(
    path: "str | os.PathLike[str] | BinaryIO",
    max_pixels: int = 90_000_000,
    target_size: int | None = None,
    formats: Sequence[str] | None = None,
    meta: dict | None = None,
) -> Image.Image:
    """Open an image file (path or binary file object) as RGB: EXIF rotation applied, transparency
    composited on white. HEIC/HEIF and AVIF are read like any other format (the content decides); a file
    with a camera RAW name is read by LibRaw (mmsearch.imaging.raw), and by content if LibRaw does not
    know it. An animated GIF/WebP gives its first frame, a multi-page TIFF its first page.

    With ``target_size``, JPEGs are decoded at a reduced scale (draft mode) and HEIF files from an
    embedded thumbnail, no smaller than it, which is several times faster for photos far larger than
    the model's input; the pixel cap applies to what is actually decoded, so a huge JPEG is read at
    1/2..1/8 scale instead of being refused. ``formats`` limits which decoders may be tried (the content
    decides, never the file name; RAW is never among them). ``meta``, when given, receives the picture's
    photo fields (mmsearch.imaging.photometa), read from the header before decoding.
    """
    register_plugins()
    if formats is None and isinstance(path, (str, os.PathLike)) and is_raw_name(path):
        picture = _open_raw(path, max_pixels, target_size, meta)
        if picture is not None:
            return picture
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            warnings.filterwarnings("ignore", message="Corrupt EXIF data")
            if formats:
                Image.init()  # register every plugin, so each allowed format id is known
            im = Image.open(path, formats=list(formats) if formats else None)
            if meta is not None:
                meta.update(photo_fields(im, path if isinstance(path, (str, os.PathLike)) else None))
            if target_size and im.format in ("JPEG", "MPO", "HEIF"):
                im.draft("RGB", (target_size, target_size))
            width, height = im.size
            if width * height > max_pixels:
                raise DecodeError(f"image is {width}x{height} = {width * height:,} pixels, above the cap of {max_pixels:,}")
            im.load()
            return to_rgb(_upright(im))
    except DecodeError:
        raise
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise DecodeError(_reason(exc)) from exc
    except Exception as exc:  # PIL and its plugins raise odd types for odd files; any of them means "not decodable"
        raise DecodeError(_reason(exc, f"{type(exc).__name__}: ")) from exc


def _open_raw(path, max_pixels: int, target_size: int | None, meta: dict | None) -> Image.Image | None:
    """A camera RAW file as upright RGB; None when LibRaw does not know the file (then it is tried by content)."""
    try:
        picture, facts = read_raw(path, max_pixels, target_size)
    except NotRawError:
        return None
    except RawDecodeError as exc:
        raise DecodeError(str(exc)) from exc
    except Exception as exc:  # LibRaw surfaces odd types for odd files too
        raise DecodeError(f"cannot decode RAW file: {type(exc).__name__}: {exc}") from exc
    if meta is not None:
        meta.update(raw_fields(facts, path))
    return picture


def _upright(im: Image.Image) -> Image.Image:
    """Apply the EXIF orientation; a damaged EXIF block leaves the pixels as stored rather than failing."""
    try:
        ImageOps.exif_transpose(im, in_place=True)  # no copy of a large image that needs no turning
        return im
    except Exception as exc:  # Pillow raises assorted types on malformed EXIF
        log.debug("ignoring unreadable EXIF orientation: %s", exc)
        return im


def _reason(exc: BaseException, prefix: str = "") -> str:
    """One clear line for a decoder's exception."""
    text = " ".join((str(exc) or type(exc).__name__).split())
    if "Security limit exceeded" in text:  # libheif's own decompression-bomb guard
        return "image is above the decoder's size limit (" + text.split("Security limit exceeded:", 1)[1].strip() + ")"
    if prefix:
        return prefix + text
    if "cannot identify image file" in text:
        return "not a readable image (unknown or corrupt format)"
    if "truncated" in text.lower():
        return "truncated image file"
    return text.split(" '/")[0]


def to_rgb(im: Image.Image) -> Image.Image:
    if im.mode == "P" and "transparency" in im.info:
        im = im.convert("RGBA")
    if im.mode in ("RGBA", "LA", "PA") or (im.mode == "RGBa"):
        rgba = im.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    if im.mode in ("I;16", "I;16B", "I;16L", "I"):
        # 16-bit greyscale: scale to 8 bits rather than clipping everything to white
        im = im.point(lambda v: v / 256).convert("L")
    return im if im.mode == "RGB" else im.convert("RGB")
