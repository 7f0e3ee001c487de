"""A battery of broken and odd input files, built on the fly.

``build_battery(root)`` writes one file (or file pair) per kind into ``root`` and returns what each
is expected to do: ``good`` files must be indexed, ``bad`` files must be reported with a reason.
``Expect.check`` holds, for good images whose decoded pixels matter (rotation, transparency, bit
depth), a function over the RGB image the encoder was given.
"""

from __future__ import annotations

import io
import os
import struct
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
from PIL import Image

from dngfile import write_dng
from photofiles import avif_bytes, heic_bytes, multipage_tiff_bytes

ORIENTATION = 0x0112


@dataclass
class Expect:
    name: str  # file name (str; for a non-UTF-8 name, what the scanner reports)
    path: Path | bytes
    good: bool
    modality: str = "image"
    # for good images: the decoded image is recognised by its size (one of these), then its pixels checked
    sizes: tuple[tuple[int, int], ...] = ()
    check: Callable[[Image.Image], bool] | None = None
    reason: str = ""  # for bad files: a substring the reported reason must contain


@dataclass
class Battery:
    root: Path
    files: list[Expect] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # kinds this environment cannot produce, and why

    @property
    def good(self) -> list[Expect]:
        return [f for f in self.files if f.good]

    @property
    def bad(self) -> list[Expect]:
        return [f for f in self.files if not f.good]


def _jpeg_bytes(im: Image.Image, **kwargs) -> bytes:
    buf = io.BytesIO()
    im.save(buf, format="JPEG", **kwargs)
    return buf.getvalue()


def _png_bytes(im: Image.Image, **kwargs) -> bytes:
    buf = io.BytesIO()
    im.save(buf, format="PNG", **kwargs)
    return buf.getvalue()


def _png_with_size(width: int, height: int) -> bytes:
    """A tiny valid-looking PNG whose header declares ``width`` x ``height`` (a decompression bomb)."""
    data = bytearray(_png_bytes(Image.new("RGB", (8, 8), "white")))
    ihdr = 8  # after the signature: length(4) 'IHDR'(4) data(13) crc(4)
    data[ihdr + 8 : ihdr + 16] = struct.pack(">II", width, height)
    crc = zlib.crc32(bytes(data[ihdr + 4 : ihdr + 8 + 13])) & 0xFFFFFFFF
    data[ihdr + 21 : ihdr + 25] = struct.pack(">I", crc)
    return bytes(data)


def _halves(size: tuple[int, int], first: str, second: str, vertical: bool = False) -> Image.Image:
    """Left/right (or top/bottom) halves in two colours: orientation shows in the pixels."""
    im = Image.new("RGB", size, first)
    w, h = size
    box = (0, h // 2, w, h) if vertical else (w // 2, 0, w, h)
    im.paste(Image.new("RGB", (box[2] - box[0], box[3] - box[1]), second), box[:2])
    return im


def _near(px, colour, tol: int = 40) -> bool:
    return all(abs(int(a) - int(b)) <= tol for a, b in zip(px, colour))


def write_big_jpeg(path: Path, side: int = 12000) -> None:
    """A real ``side`` x ``side`` photo-sized JPEG (quick to encode: large flat areas)."""
    im = _halves((side, side), "navy", "orange")
    im.save(path, format="JPEG", quality=70)


def build_battery(root: Path, big_side: int = 12000) -> Battery:
    root.mkdir(parents=True, exist_ok=True)
    b = Battery(root)

    def add(name: str, data: bytes | None, good: bool, **kw) -> Path:
        path = root / name
        if data is not None:
            path.write_bytes(data)
        b.files.append(Expect(name, path, good, **kw))
        return path

    base = _jpeg_bytes(_halves((64, 48), "red", "blue"))
    png = _png_bytes(_halves((64, 48), "red", "blue"))

    # --- broken: must be reported, never crash ---
    add("zero.jpg", b"", False, reason="")
    add("truncated.jpg", base[: len(base) // 3], False, reason="")
    add("truncated.png", png[: len(png) // 2], False, reason="")
    add("text_as.jpg", b"this is plain text, not a JPEG\n" * 20, False, reason="not a readable image")
    add("html_as.png", b"<!doctype html><html><body><img src=x></body></html>", False, reason="not a readable image")
    add("bomb.png", _png_with_size(100_000, 100_000), False, reason="above the cap")
    add("empty.txt", b"", False, modality="text", reason="empty text file")
    loop = root / "loop.jpg"
    os.symlink(loop.name, loop)  # points at itself: stat fails with ELOOP
    b.files.append(Expect("loop.jpg", loop, False, reason="cannot read file"))
    os.mkfifo(root / "pipe.jpg")  # reading a FIFO blocks until a writer comes: must be refused, not read
    b.files.append(Expect("pipe.jpg", root / "pipe.jpg", False, reason="not a regular file"))
    bad_name = os.fsencode(root) + b"/bad_name_\xff\xfe.png"
    with open(bad_name, "wb") as fh:
        fh.write(_png_bytes(Image.new("RGB", (20, 20), "green")))
    b.files.append(Expect("bad_name_\ufffd\ufffd.png", bad_name, False, reason="not valid UTF-8"))
    locked = add("locked.png", _png_bytes(Image.new("RGB", (21, 21), "purple")), False, reason="cannot read file")
    os.chmod(locked, 0)
    if os.access(locked, os.R_OK):  # root reads anything: this kind cannot be produced here
        b.files.pop()
        os.chmod(locked, 0o644)
        locked.unlink()
        b.skipped.append("unreadable file (running as root: permissions do not block reads)")

    # --- odd but good: must be indexed, pixels as a viewer shows them ---
    big = root / "huge_12000.jpg"
    write_big_jpeg(big, big_side)
    # decoded at 1/8 scale while reading (JPEG draft mode), not at full size and then shrunk
    b.files.append(Expect(big.name, big, True, sizes=((big_side // 8, big_side // 8),),
                          check=lambda im: _near(im.getpixel((10, 10)), (0, 0, 128)) and _near(im.getpixel((im.width - 10, 10)), (255, 165, 0))))
    add("cmyk.jpg", _jpeg_bytes(Image.new("CMYK", (33, 31), (0, 255, 255, 0))), True, sizes=((33, 31),),
        check=lambda im: _near(im.getpixel((16, 15)), (255, 0, 0), 60))
    add("gray16.png", _png_bytes(Image.fromarray(np.full((29, 27), 40000, dtype=np.uint16))), True, sizes=((27, 29),),
        check=lambda im: 145 < im.getpixel((5, 5))[0] < 165)
    pal = Image.new("P", (35, 25), 1)
    pal.putpalette([0, 0, 0, 0, 128, 0] + [0, 0, 0] * 254)
    pal.paste(0, (0, 0, 17, 25))  # left half: index 0, declared transparent
    add("palette_transparent.png", _png_bytes(pal, transparency=0), True, sizes=((35, 25),),
        check=lambda im: _near(im.getpixel((3, 12)), (255, 255, 255), 0) and _near(im.getpixel((30, 12)), (0, 128, 0), 0))
    frames = [Image.new("RGB", (37, 23), c) for c in ("red", "lime", "blue")]
    gif = io.BytesIO()
    frames[0].save(gif, format="GIF", save_all=True, append_images=frames[1:], duration=50, loop=0)
    add("animated.gif", gif.getvalue(), True, sizes=((37, 23),), check=lambda im: _near(im.getpixel((5, 5)), (255, 0, 0)))
    webp = io.BytesIO()
    frames = [Image.new("RGB", (39, 21), c) for c in ("blue", "red")]
    frames[0].save(webp, format="WEBP", save_all=True, append_images=frames[1:], duration=50, loop=0, lossless=True)
    add("animated.webp", webp.getvalue(), True, sizes=((39, 21),), check=lambda im: _near(im.getpixel((5, 5)), (0, 0, 255)))
    exif = Image.Exif()
    exif[ORIENTATION] = 6  # stored landscape, shown rotated 90 degrees clockwise
    stored = _halves((60, 30), "red", "blue")  # left red, right blue as stored
    add("rotated_exif.jpg", _jpeg_bytes(stored, exif=exif, quality=95), True, sizes=((30, 60),),
        # rotating 90 CW puts the stored left half on top
        check=lambda im: _near(im.getpixel((15, 10)), (255, 0, 0)) and _near(im.getpixel((15, 50)), (0, 0, 255)))
    add("gray.png", _png_bytes(Image.new("L", (41, 19), 200)), True, sizes=((41, 19),),
        check=lambda im: _near(im.getpixel((3, 3)), (200, 200, 200), 0))
    add("one_pixel.png", _png_bytes(Image.new("RGB", (1, 1), (10, 200, 30))), True, sizes=((1, 1),),
        check=lambda im: _near(im.getpixel((0, 0)), (10, 200, 30), 0))
    corrupt = bytearray(_jpeg_bytes(_halves((43, 17), "red", "blue"), exif=exif))
    at = corrupt.find(b"Exif\x00\x00") + 14
    corrupt[at : at + 16] = b"\xee" * 16  # garbage where the EXIF entries are
    add("corrupt_exif.jpg", bytes(corrupt), True, sizes=((43, 17), (17, 43)))
    add("latin1.txt", "Caf\xe9 cr\xe8me br\xfbl\xe9e, na\xefve fa\xe7ade".encode("latin-1"), True, modality="text")
    add("huge.txt", (b"all work and no play makes a dull index " * 200_000), True, modality="text")  # 8 MB
    dup = _png_bytes(_halves((45, 15), "yellow", "black"))
    add("dup_a.png", dup, True, sizes=((45, 15),))
    add("dup_b.png", dup, True, sizes=((45, 15),))
    _photo_formats(root, add)
    return b


def _with_box_size(data: bytes, side: int) -> bytes:
    """A HEIF/AVIF whose image-size boxes ('ispe') claim ``side`` x ``side`` pixels (a decompression bomb)."""
    patched = bytearray(data)
    at = patched.find(b"ispe")
    while at >= 0:
        patched[at + 8 : at + 16] = struct.pack(">II", side, side)
        at = patched.find(b"ispe", at + 4)
    return bytes(patched)


def _dng_claiming(path: Path, width: int, height: int) -> bytes:
    """A small DNG whose directory claims a ``width`` x ``height`` sensor (its data is far shorter)."""
    data = bytearray(write_dng(path, 64, 48).read_bytes())
    count = struct.unpack_from("<H", data, 8)[0]
    for n in range(count):
        entry = 10 + 12 * n
        tag = struct.unpack_from("<H", data, entry)[0]
        if tag in (256, 257):
            struct.pack_into("<I", data, entry + 8, width if tag == 256 else height)
    return bytes(data)


def _photo_formats(root: Path, add) -> None:
    """Phone and camera formats (issue 14): HEIC, AVIF, multi-page TIFF, camera RAW (DNG), good and broken."""
    heic, avif = heic_bytes(), avif_bytes()
    green, blue = (30, 160, 90), (40, 90, 200)
    # left half the colour, right half its inverse (tests/photofiles.picture); lossy codecs: loose tolerance
    add("phone.heic", heic, True, sizes=((64, 48),), check=lambda im: _near(im.getpixel((8, 24)), green, 60))
    add("phone_named.jpg", heic, True, sizes=((64, 48),))  # the content decides, not the name
    add("photo.avif", avif, True, sizes=((64, 48),), check=lambda im: _near(im.getpixel((8, 24)), blue, 60))
    add("pages.tiff", multipage_tiff_bytes((47, 29)), True, sizes=((47, 29),), check=lambda im: _near(im.getpixel((5, 5)), (255, 0, 0), 0))
    sensor = root / "sensor.dng"
    write_dng(sensor, 72, 52)  # no preview: demosaiced at half size; top half reddish, bottom bluish
    add(sensor.name, None, True, sizes=((36, 26),),
        check=lambda im: im.getpixel((18, 3))[0] > 150 > im.getpixel((18, 3))[2] and im.getpixel((18, 22))[2] > 150)
    add("jpeg_named.cr2", _jpeg_bytes(Image.new("RGB", (51, 27), "orange")), True, sizes=((51, 27),))  # LibRaw refuses; the content decides
    # broken phone and camera files: a reason each, never a crash or a hang
    add("zero.heic", b"", False, reason="not a readable image")
    add("truncated.heic", heic[: len(heic) // 2], False, reason="")
    add("truncated.avif", avif[: len(avif) // 2], False, reason="")
    add("text_as.heic", b"not a phone photo at all\n" * 20, False, reason="not a readable image")
    add("bomb.heic", _with_box_size(heic, 40_000), False, reason="above the decoder's size limit")
    add("bomb.avif", _with_box_size(avif, 12_000), False, reason="above the cap")
    add("zero.dng", b"", False, reason="RAW")
    whole = (root / "whole.dng.tmp")
    full = write_dng(whole, 64, 48).read_bytes()
    whole.unlink()
    add("truncated.dng", full[: len(full) // 2], False, reason="truncated or corrupt RAW data")
    add("text_as.nef", b"not a raw file\n" * 40, False, reason="not a readable image")
    bomb = root / "bomb.dng.tmp"
    add("bomb.dng", _dng_claiming(bomb, 20_000, 20_000), False, reason="above the cap")
    bomb.unlink()


# --- videos and PDFs (issue 15): hostile inputs for the frame and page readers ---

@dataclass
class MediaExpect:
    """A video or PDF and what indexing it must do: ``items`` within (low, high) (0 for a refused file),
    and, when ``reason`` is set, a reported reason containing it."""

    name: str
    path: Path
    items: tuple[int, int]
    reason: str | None = None


PDF_PAGE_LIMIT = 40  # the page limit the battery is indexed with (the 10,000-page PDF is cut there)


def _patch_avi_header(data: bytes, width: int, height: int, frames: int) -> bytes:
    """An MJPEG AVI whose headers, and every frame's JPEG header, declare another frame size and frame
    count than its (tiny) frames have: a decoder trusting them would allocate width x height pixels."""
    out = bytearray(data)
    sof = b"\xff\xc0\x00\x11\x08"  # baseline JPEG frame header: length 17, 8-bit samples, then height, width
    at = out.find(sof)
    while at >= 0:
        struct.pack_into(">HH", out, at + len(sof), height, width)
        at = out.find(sof, at + 1)
    avih = out.find(b"avih") + 8  # MainAVIHeader: ..., TotalFrames @16, ..., Width @32, Height @36
    struct.pack_into("<I", out, avih + 16, frames)
    struct.pack_into("<II", out, avih + 32, width, height)
    strh = out.find(b"strh") + 8  # AVIStreamHeader: ..., Length @32
    struct.pack_into("<I", out, strh + 32, frames)
    strf = out.find(b"strf") + 8  # BITMAPINFOHEADER: Size, Width @4, Height @8
    struct.pack_into("<ii", out, strf + 4, width, height)
    return bytes(out)


def build_media_battery(root: Path) -> list[MediaExpect]:
    """Broken and extreme videos and PDFs, written with PyAV and pypdfium2 themselves."""
    import pypdfium2 as pdfium

    from media_data import Page, Scene, write_audio_only, write_encrypted_pdf, write_pdf, write_scenes_video

    root.mkdir(parents=True, exist_ok=True)
    out: list[MediaExpect] = []
    scenes = [Scene(2, (220, 30, 30)), Scene(2, (30, 60, 220))]

    def add(name: str, data: bytes | None, items: tuple[int, int], reason: str | None = None) -> Path:
        path = root / name
        if data is not None:
            path.write_bytes(data)
        out.append(MediaExpect(name, path, items, reason))
        return path

    good = write_scenes_video(root / "_tmp.mp4", scenes, size=(96, 64)).read_bytes()
    (root / "_tmp.mp4").unlink()
    add("zero.mp4", b"", (0, 0), "not a readable video")
    # MP4 keeps its index (moov) at the end: cut short, nothing is playable
    add("truncated.mp4", good[: len(good) * 2 // 5], (0, 0), "not a readable video")
    add("text_as.mov", b"this is not a movie\n" * 50, (0, 0), "not a readable video")
    write_audio_only(root / "sound_only.mp4")
    out.append(MediaExpect("sound_only.mp4", root / "sound_only.mp4", (0, 0), "no video stream"))
    # Matroska streams: cut short, the frames before the cut are indexed
    mkv = write_scenes_video(root / "_tmp.mkv", scenes, size=(96, 64)).read_bytes()
    (root / "_tmp.mkv").unlink()
    add("truncated.mkv", mkv[: len(mkv) * 2 // 3], (1, 2))
    # every frame a keyframe (MJPEG), 100 frames a second, and a header claiming two billion frames
    mjpeg = write_scenes_video(root / "_tmp.avi", [Scene(30, (30, 200, 30))], size=(32, 32), fps=100, codec="mjpeg",
                               pix_fmt="yuvj420p").read_bytes()
    (root / "_tmp.avi").unlink()
    # bounded by time, not by the header: keyframes closer than 0.5 s are not decoded (at most 61 frames in 30 s)
    add("absurd_frame_count.avi", _patch_avi_header(mjpeg, 32, 32, 2_000_000_000), (3, 61))
    add("absurd_dimensions.avi", _patch_avi_header(mjpeg, 16_000, 16_000, 3000), (0, 0), "above the cap")

    add("zero.pdf", b"", (0, 0), "not a readable PDF")
    add("malformed.pdf", b"%PDF-1.7\n1 0 obj << /Type /Catalog /Pages 9 0 R >>\n" + os.urandom(2000), (0, 0), "not a readable PDF")
    write_encrypted_pdf(root / "encrypted.pdf")
    out.append(MediaExpect("encrypted.pdf", root / "encrypted.pdf", (0, 0), "encrypted PDF"))
    doc = pdfium.PdfDocument.new()
    for _ in range(10_000):
        doc.new_page(612, 792)
    doc.save(str(root / "pages_10000.pdf"))
    doc.close()
    out.append(MediaExpect("pages_10000.pdf", root / "pages_10000.pdf", (PDF_PAGE_LIMIT, PDF_PAGE_LIMIT),
                           f"only the first {PDF_PAGE_LIMIT} are indexed"))
    pdf = write_pdf(root / "_tmp.pdf", [Page(text=f"page {n}") for n in range(1, 6)]).read_bytes()
    (root / "_tmp.pdf").unlink()
    add("truncated.pdf", pdf[: len(pdf) * 3 // 4], (0, 0), "not a readable PDF")
    return out
