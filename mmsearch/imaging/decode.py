"""Opening an image file safely, for everyone who needs pixels: the indexer's decode workers, the HTTP
API's search-by-image upload, verification, training and quantisation.

It sits below both the indexer and the query service (neither imports the other for it) and imports no
torch: a one-shot query must not pay for it. Readers of further formats live beside this module.
"""

from __future__ import annotations

import logging
import warnings
from typing import BinaryIO, Sequence

from PIL import Image, ImageFile, ImageOps

log = logging.getLogger(__name__)

ImageFile.LOAD_TRUNCATED_IMAGES = False  # a truncated file is a failure to report, not a grey half-image
Image.MAX_IMAGE_PIXELS = None  # we enforce our own cap, with a clear reason, in open_image


class DecodeError(Exception):
    """The file is not a readable image (or is beyond the pixel cap)."""


# Formats an untrusted upload may be: the raster formats people search with. Anything else (EPS, which
# runs Ghostscript; PSD; exotic plugins) is refused whatever the file is called.
UPLOAD_FORMATS = ("JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF")


def open_image(
    path: "str | BinaryIO",
    max_pixels: int = 90_000_000,
    target_size: int | None = None,
    formats: Sequence[str] | None = None,
) -> Image.Image:
    """Open an image file (path or binary file object) as RGB: EXIF rotation applied, transparency
    composited on white.

    With ``target_size``, JPEGs are decoded at a reduced scale (draft mode) no smaller than it, which
    is several times faster for photos far larger than the model's input; the pixel cap applies to
    what is actually decoded, so a huge JPEG is read at 1/2..1/8 scale instead of being refused.
    ``formats`` limits which decoders may be tried (the content decides, never the file name).
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            warnings.filterwarnings("ignore", message="Corrupt EXIF data")
            if formats:
                Image.init()  # register every plugin, so each allowed format id is known
            im = Image.open(path, formats=list(formats) if formats else None)
            if target_size and im.format in ("JPEG", "MPO"):
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
    except Exception as exc:  # PIL raises odd types for odd files; any of them means "not decodable"
        raise DecodeError(f"{type(exc).__name__}: {exc}") from exc


def _upright(im: Image.Image) -> Image.Image:
    """Apply the EXIF orientation; a damaged EXIF block leaves the pixels as stored rather than failing."""
    try:
        ImageOps.exif_transpose(im, in_place=True)  # no copy of a large image that needs no turning
        return im
    except Exception as exc:  # Pillow raises assorted types on malformed EXIF
        log.debug("ignoring unreadable EXIF orientation: %s", exc)
        return im


def _reason(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
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
