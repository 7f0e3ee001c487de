"""A real, minimal DNG (Adobe's open camera RAW format) written byte by byte, for RAW tests.

No registry package ships a camera RAW sample, so the tests make one: a Bayer mosaic (RGGB, 16-bit) in a
TIFF structure with the DNG tags LibRaw needs (CFA layout, colour matrix, white balance, levels), the
camera's Make/Model, an EXIF directory (capture time, exposure) and optionally a JPEG preview in IFD0 with
the mosaic in a SubIFD, which is how cameras and converters lay DNGs out.
"""

from __future__ import annotations

import io
import struct
from pathlib import Path

import numpy as np
from PIL import Image

BYTE, ASCII, SHORT, LONG, RATIONAL, UNDEFINED, SRATIONAL = 1, 2, 3, 4, 5, 7, 10
_SIZE = {BYTE: 1, ASCII: 1, SHORT: 2, LONG: 4, RATIONAL: 8, UNDEFINED: 1, SRATIONAL: 8}


class _Tiff:
    """Little-endian TIFF assembly: directories are laid out first, data blobs after them."""

    def __init__(self) -> None:
        self.blobs: list[bytes] = []

    @staticmethod
    def _pack(kind: int, values) -> bytes:
        if kind == ASCII:
            return values.encode("ascii") + b"\0"
        if kind in (BYTE, UNDEFINED):
            return bytes(values)
        if kind == SHORT:
            return struct.pack(f"<{len(values)}H", *values)
        if kind == LONG:
            return struct.pack(f"<{len(values)}I", *values)
        fmt = "<ii" if kind == SRATIONAL else "<II"
        return b"".join(struct.pack(fmt, n, d) for n, d in values)


def _ifd_bytes(entries: list[tuple[int, int, object]], at: int, next_ifd: int = 0) -> tuple[bytes, bytes]:
    """-> (directory bytes placed at offset ``at``, the out-of-line data that follows it directly)."""
    entries = sorted(entries, key=lambda e: e[0])
    size = 2 + 12 * len(entries) + 4
    data = bytearray()
    out = bytearray(struct.pack("<H", len(entries)))
    for tag, kind, values in entries:
        payload = _Tiff._pack(kind, values)
        count = len(payload) // _SIZE[kind]
        if len(payload) <= 4:
            out += struct.pack("<HHI", tag, kind, count) + payload.ljust(4, b"\0")
        else:
            if len(data) % 2:
                data += b"\0"
            out += struct.pack("<HHII", tag, kind, count, at + size + len(data))
            data += payload
    out += struct.pack("<I", next_ifd)
    return bytes(out), bytes(data)


def _layout(directories: list[list[tuple[int, int, object]]], blobs: list[bytes], start: int) -> tuple[bytes, list[int]]:
    """Place directories one after another from ``start``; -> (bytes, offset of each directory)."""
    out, offsets = bytearray(), []
    for entries in directories:
        at = start + len(out)
        offsets.append(at)
        ifd, data = _ifd_bytes(entries, at)
        out += ifd + data
        if len(out) % 2:
            out += b"\0"
    return bytes(out), offsets


def bayer_mosaic(width: int, height: int, top=(200, 40, 40), bottom=(40, 40, 200)) -> np.ndarray:
    """An RGGB mosaic of a picture whose top half is ``top`` and bottom half ``bottom`` (8-bit colours)."""
    mosaic = np.zeros((height, width), dtype=np.uint16)
    for half, colour in ((slice(0, height // 2), top), (slice(height // 2, height), bottom)):
        r, g, b = (int(c) * 257 for c in colour)
        block = mosaic[half]
        block[0::2, 0::2] = r
        block[0::2, 1::2] = g
        block[1::2, 0::2] = g
        block[1::2, 1::2] = b
    return mosaic


def write_dng(path: Path, width: int = 64, height: int = 48, *, make: str = "Testcam", model: str = "Testcam RX1",
              taken: str = "2024:05:17 09:30:00", preview: tuple[int, int] | None = None) -> Path:
    """Write a DNG of a two-colour picture (reddish top, bluish bottom). ``preview`` adds a JPEG preview of
    that size in IFD0 (the mosaic then moves to a SubIFD)."""
    mosaic = bayer_mosaic(width, height).tobytes()
    jpeg = b""
    if preview:
        im = Image.new("RGB", preview, (200, 40, 40))
        im.paste(Image.new("RGB", (preview[0], preview[1] - preview[1] // 2), (40, 40, 200)), (0, preview[1] // 2))
        buf = io.BytesIO()
        im.save(buf, format="JPEG", quality=90)
        jpeg = buf.getvalue()
    camera = [
        (271, ASCII, make), (272, ASCII, model), (274, SHORT, [1]),
        (50706, BYTE, [1, 4, 0, 0]), (50707, BYTE, [1, 1, 0, 0]), (50708, ASCII, f"{make} {model}"),
        (50721, SRATIONAL, [(10000, 10000), (0, 10000), (0, 10000), (0, 10000), (10000, 10000), (0, 10000),
                            (0, 10000), (0, 10000), (10000, 10000)]),  # ColorMatrix1: identity
        (50728, RATIONAL, [(1, 1), (1, 1), (1, 1)]),  # AsShotNeutral
        (50778, SHORT, [21]),  # CalibrationIlluminant1: D65
    ]
    raw_entries = [
        (254, LONG, [0]), (256, LONG, [width]), (257, LONG, [height]), (258, SHORT, [16]), (259, SHORT, [1]),
        (262, SHORT, [32803]), (277, SHORT, [1]), (278, LONG, [height]), (284, SHORT, [1]),
        (33421, SHORT, [2, 2]), (33422, BYTE, [0, 1, 1, 2]),
        (50714, SHORT, [0]), (50717, SHORT, [65535]),  # BlackLevel, WhiteLevel
    ]
    exif_entries = [(36867, ASCII, taken), (33434, RATIONAL, [(1, 250)]), (33437, RATIONAL, [(28, 10)]),
                    (34855, SHORT, [200]), (37386, RATIONAL, [(35, 1)])]
    header = 8
    # pass 1 with placeholder offsets to learn sizes; pass 2 with real ones (sizes do not depend on values)
    for _ in range(2):
        if preview:
            ifd0 = camera + [(254, LONG, [1]), (256, LONG, [preview[0]]), (257, LONG, [preview[1]]), (258, SHORT, [8, 8, 8]),
                             (259, SHORT, [7]), (262, SHORT, [6]), (277, SHORT, [3]), (278, LONG, [preview[1]]),
                             (273, LONG, [0]), (279, LONG, [len(jpeg)]), (330, LONG, [0]), (34665, LONG, [0])]
            raw_ifd = raw_entries + [(273, LONG, [0]), (279, LONG, [len(mosaic)])]
            dirs = [ifd0, raw_ifd, exif_entries]
        else:
            ifd0 = camera + [e for e in raw_entries] + [(273, LONG, [0]), (279, LONG, [len(mosaic)]), (34665, LONG, [0])]
            dirs = [ifd0, exif_entries]
        body, offsets = _layout(dirs, [], header)
        pixels_at = header + len(body)
        jpeg_at = pixels_at + len(mosaic)
        if preview:
            ifd0 = [e for e in ifd0 if e[0] not in (273, 330, 34665)] + [
                (273, LONG, [jpeg_at]), (330, LONG, [offsets[1]]), (34665, LONG, [offsets[2]])]
            raw_ifd = [e for e in raw_ifd if e[0] != 273] + [(273, LONG, [pixels_at])]
            dirs = [ifd0, raw_ifd, exif_entries]
        else:
            ifd0 = [e for e in ifd0 if e[0] not in (273, 34665)] + [(273, LONG, [pixels_at]), (34665, LONG, [offsets[1]])]
            dirs = [ifd0, exif_entries]
        body, offsets2 = _layout(dirs, [], header)
        assert offsets2 == offsets
    path.write_bytes(b"II*\0" + struct.pack("<I", header) + body + mosaic + jpeg)
    return path
