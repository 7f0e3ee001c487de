"""Rasterise and normalise images: RGB on white, trimmed to content, square, fixed size, PNG.

Emoji styles differ in how much empty border they leave; trimming to the drawn content and padding
by a fixed margin removes that trivial cue, so a model has to learn the picture, not the frame.
"""
from __future__ import annotations

import hashlib
import io
import logging
import os
import struct
from collections.abc import Callable
from functools import partial
from pathlib import Path

import cairosvg
from PIL import Image, ImageChops

# Decoding a PNG above this many pixels is refused by PIL (the caller then renders the SVG instead).
MAX_DECODE_PIXELS = 40_000_000
Image.MAX_IMAGE_PIXELS = MAX_DECODE_PIXELS

log = logging.getLogger(__name__)


class RasterError(RuntimeError):
    """An image could not be decoded or rendered."""


def render_svg(svg: bytes | str, size: int) -> Image.Image:
    """Render SVG source so its longer side is about `size` px (RGBA)."""
    data = svg.encode("utf-8") if isinstance(svg, str) else svg
    try:
        png = cairosvg.svg2png(bytestring=data, output_width=size, output_height=None, unsafe=False)
        img = Image.open(io.BytesIO(png))
        img.load()
    except Exception as exc:  # cairosvg raises many unrelated types on malformed input
        raise RasterError(f"cannot render SVG: {exc}") from exc
    if img.height > img.width * 1.05:  # tall drawing: re-render by height so the long side is `size`
        try:
            png = cairosvg.svg2png(bytestring=data, output_height=size, unsafe=False)
            img = Image.open(io.BytesIO(png))
            img.load()
        except Exception as exc:
            raise RasterError(f"cannot render SVG: {exc}") from exc
    return img


def png_pixels(path: Path) -> int:
    """Pixel count read from the PNG IHDR chunk, without decoding (PIL refuses to even open the
    largest openclipart PNGs as decompression bombs)."""
    with path.open("rb") as f:
        head = f.read(24)
    if len(head) < 24 or head[:8] != b"\x89PNG\r\n\x1a\n" or head[12:16] != b"IHDR":
        raise RasterError(f"{path.name} is not a PNG")
    width, height = struct.unpack(">II", head[16:24])
    return width * height


def load_raster(path: Path) -> Image.Image:
    try:
        with Image.open(path) as img:
            img.load()
            return img.copy()
    except (OSError, Image.DecompressionBombError, ValueError) as exc:
        raise RasterError(f"cannot decode {path.name}: {exc}") from exc


def on_white(img: Image.Image) -> Image.Image:
    """Composite any mode (palette, LA, RGBA, ...) onto an opaque white background -> RGB."""
    rgba = img.convert("RGBA")
    bg = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    return Image.alpha_composite(bg, rgba).convert("RGB")


def trim_white(img: Image.Image, tolerance: int = 8) -> Image.Image:
    """Crop an RGB image to the box of non-white pixels (unchanged if it is blank)."""
    bg = Image.new("RGB", img.size, (255, 255, 255))
    diff = ImageChops.difference(img, bg).convert("L").point(lambda v: 255 if v > tolerance else 0)
    box = diff.getbbox()
    return img.crop(box) if box else img


def square_fit(img: Image.Image, size: int, margin: float = 0.06) -> Image.Image:
    """Scale to fit a size x size white square with `margin` of the side left empty around it."""
    inner = max(1, round(size * (1 - 2 * margin)))
    scale = inner / max(img.width, img.height)
    w, h = max(1, round(img.width * scale)), max(1, round(img.height * scale))
    resized = img.resize((w, h), Image.Resampling.LANCZOS)
    canvas = Image.new("RGB", (size, size), (255, 255, 255))
    canvas.paste(resized, ((size - w) // 2, (size - h) // 2))
    return canvas


def has_transparency(img: Image.Image) -> bool:
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        return img.convert("RGBA").getchannel("A").getextrema()[0] < 255
    return False


def trim_transparent(img: Image.Image, threshold: int = 8) -> Image.Image:
    """Crop to the box of visible pixels (alpha above `threshold`)."""
    alpha = img.convert("RGBA").getchannel("A").point(lambda v: 255 if v > threshold else 0)
    box = alpha.getbbox()
    return img.crop(box) if box else img


def normalize(img: Image.Image, size: int) -> Image.Image | None:
    """Full pipeline; None for a blank (all white/transparent) image.

    Images with transparency are trimmed by alpha, which keeps opaque white parts (the white half of
    a flag, a white cup); trimming by whiteness would cut them off. Opaque images are trimmed by
    whiteness (scans and PNGs drawn on a white page)."""
    trimmed = on_white(trim_transparent(img)) if has_transparency(img) else trim_white(on_white(img))
    if ImageChops.difference(trimmed, Image.new("RGB", trimmed.size, (255, 255, 255))).getbbox() is None:
        return None
    return square_fit(trimmed, size)


def picture_from_png_or_svg(png: Path | None, svg: Path | None, size: int) -> Image.Image | None:
    """The PNG normalised if it exists and is of sane size, otherwise the SVG rendered directly at the
    target size (None for a blank picture)."""
    if png is not None and png.is_file() and png_pixels(png) <= MAX_DECODE_PIXELS:
        img = load_raster(png)
        if max(img.size) > 4 * size:
            img.thumbnail((4 * size, 4 * size))
        return normalize(img, size)
    if svg is not None and svg.is_file():
        return normalize(render_svg(svg.read_bytes(), 2 * size), size)
    raise RasterError("neither a usable PNG nor an SVG")


def content_hash(img: Image.Image) -> str:
    """sha256 of the decoded pixels (not of the PNG bytes, which depend on the encoder)."""
    h = hashlib.sha256()
    h.update(f"{img.mode}{img.size}".encode())
    h.update(img.tobytes())
    return h.hexdigest()


def write_unique(make: Callable[[], Image.Image | None], path: Path, seen: set[str], force: bool = False) -> str:
    """Render a picture to `path` unless it is a pixel duplicate of one in `seen` (updated).

    `make` is only called when `path` does not exist from an earlier run (or `force`). Returns
    "ok", "duplicate" or "failed" (unreadable, too large or blank), so a build can count them."""
    reuse = path.is_file() and not force
    try:
        img = load_raster(path) if reuse else make()
    except (RasterError, OSError, ValueError):
        return "failed"
    if img is None:
        return "failed"
    digest = content_hash(img)
    if digest in seen:
        return "duplicate"
    seen.add(digest)
    if not reuse:
        save_png(img, path)
    return "ok"


def write_picture(png: Path | None, svg: Path | None, size: int, path: Path, seen: set[str], force: bool, counts: dict[str, int]) -> bool:
    """``write_unique`` of the PNG (else the SVG) at ``size``, counting what was skipped in ``counts``
    (``render_failures`` or ``duplicates_dropped``). -> True when the picture was kept."""
    status = write_unique(partial(picture_from_png_or_svg, png, svg, size), path, seen, force)
    if status == "ok":
        return True
    counts["render_failures" if status == "failed" else "duplicates_dropped"] += 1
    log.debug("skip %s: %s", path.name, status)
    return False


def save_png(img: Image.Image, path: Path) -> None:
    """Atomic write: a reader (a training run) sees either the old or the new file, never half."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    img.save(tmp, format="PNG", compress_level=6)
    os.replace(tmp, path)
