"""Test videos and PDFs written on the fly by PyAV and pypdfium2 (the very libraries mmsearch reads
them with), so the tests need no binary fixtures.

* :func:`write_scenes_video` - a video of distinct scenes (a solid colour or a picture each), with a
  shape moving across every scene and optionally a caption drawn into the frames;
* :func:`write_pdf` - a PDF whose pages carry a text layer (standard Helvetica), a picture, or both;
* :func:`write_encrypted_pdf` - a PDF protected by a user password that nobody knows.
"""

from __future__ import annotations

import ctypes
import io
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont


@dataclass(frozen=True)
class Scene:
    """``seconds`` of one picture (a path, an RGB colour, or a PIL image), a shape moving over it."""

    seconds: float
    picture: "str | Path | tuple[int, int, int] | Image.Image"
    caption: str | None = None


def _scene_canvas(picture, size: tuple[int, int]) -> Image.Image:
    if isinstance(picture, tuple):
        return Image.new("RGB", size, picture)
    image = picture if isinstance(picture, Image.Image) else Image.open(picture)
    image = image.convert("RGBA")
    canvas = Image.new("RGBA", size, (255, 255, 255, 255))
    scale = min(size[0] * 0.8 / image.width, size[1] * 0.8 / image.height)  # fill most of the frame, small pictures too
    image = image.resize((max(1, round(image.width * scale)), max(1, round(image.height * scale))), Image.LANCZOS)
    canvas.alpha_composite(image, ((size[0] - image.width) // 2, (size[1] - image.height) // 2))
    return canvas.convert("RGB")


def _caption(draw: ImageDraw.ImageDraw, text: str, size: tuple[int, int]) -> None:
    font = ImageFont.load_default(size=max(12, size[1] // 12))
    box = draw.textbbox((0, 0), text, font=font)
    x, y = (size[0] - (box[2] - box[0])) // 2, size[1] - (box[3] - box[1]) - size[1] // 20
    draw.rectangle((x - 6, y - 6, x + box[2] - box[0] + 6, y + box[3] - box[1] + 10), fill=(0, 0, 0))
    draw.text((x, y), text, fill=(255, 255, 255), font=font)


def scene_frames(scenes: Sequence[Scene], size: tuple[int, int], fps: int):
    """Yield (scene index, RGB array) for every frame of the video, one frame at a time."""
    for index, scene in enumerate(scenes):
        base = _scene_canvas(scene.picture, size)
        count = max(1, round(scene.seconds * fps))
        r = max(4, size[1] // 14)
        for n in range(count):
            frame = base.copy()
            draw = ImageDraw.Draw(frame)
            x = int((size[0] - 2 * r) * n / max(1, count - 1)) + r
            draw.ellipse((x - r, r, x + r, 3 * r), fill=(250, 250, 250), outline=(0, 0, 0))
            if scene.caption:
                _caption(draw, scene.caption, size)
            yield index, np.asarray(frame)


def write_scenes_video(path: Path, scenes: Sequence[Scene], *, size: tuple[int, int] = (320, 240), fps: int = 12,
                       codec: str = "libx264", options: dict | None = None, audio: bool = False,
                       pix_fmt: str = "yuv420p") -> Path:
    """Encode ``scenes`` into ``path`` (container from the suffix). -> path. libx264 puts a keyframe at
    every scene cut on its own, as real encoders do; ``options`` go to the encoder."""
    import av

    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=fps)
        stream.width, stream.height = size
        stream.pix_fmt = pix_fmt
        if options:
            stream.options = dict(options)
        audio_stream = container.add_stream("aac", rate=8000) if audio else None
        for _, array in scene_frames(scenes, size, fps):
            for packet in stream.encode(av.VideoFrame.from_ndarray(array, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
        if audio_stream is not None:
            _write_silence(container, audio_stream, sum(s.seconds for s in scenes))
    return path


def _write_silence(container, stream, seconds: float) -> None:
    import av

    samples = int(8000 * seconds)
    frame = av.AudioFrame.from_ndarray(np.zeros((1, samples), dtype=np.float32), format="fltp", layout="mono")
    frame.sample_rate = 8000
    for packet in stream.encode(frame):
        container.mux(packet)
    for packet in stream.encode():
        container.mux(packet)


def write_audio_only(path: Path, seconds: float = 2.0) -> Path:
    """A media file with a sound track and no picture."""
    import av

    with av.open(str(path), "w") as container:
        _write_silence(container, container.add_stream("aac", rate=8000), seconds)
    return path


# --- PDF ---

@dataclass(frozen=True)
class Page:
    """One PDF page: lines of text (a real text layer) and/or a picture filling most of the page."""

    text: str | None = None
    picture: "str | Path | Image.Image | None" = None


def _jpeg(picture) -> bytes:
    image = picture if isinstance(picture, Image.Image) else Image.open(picture)
    rgba = image.convert("RGBA")
    flat = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    flat.alpha_composite(rgba)
    buf = io.BytesIO()
    flat.convert("RGB").save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def _add_text(pdfium, raw, pdf, page, text: str, top: float) -> None:
    font_size = 18.0
    for n, line in enumerate(text.splitlines()):
        obj = raw.FPDFPageObj_NewTextObj(pdf, b"Helvetica", ctypes.c_float(font_size))
        encoded = (line + "\x00").encode("utf-16-le")
        raw.FPDFText_SetText(obj, ctypes.cast(ctypes.create_string_buffer(encoded), ctypes.POINTER(raw.FPDF_WCHAR)))
        raw.FPDFPageObj_Transform(obj, 1, 0, 0, 1, 50, top - n * font_size * 1.4)
        raw.FPDFPage_InsertObject(page, obj)


def write_pdf(path: Path, pages: Sequence[Page], size: tuple[float, float] = (612, 792)) -> Path:
    """A PDF of ``pages`` (US letter by default): text lines at the top, a picture below them."""
    import pypdfium2 as pdfium
    import pypdfium2.raw as raw

    pdf = pdfium.PdfDocument.new()
    width, height = size
    for spec in pages:
        page = pdf.new_page(width, height)
        if spec.picture is not None:
            image = pdfium.PdfImage.new(pdf)
            image.load_jpeg(io.BytesIO(_jpeg(spec.picture)))
            side = min(width, height) * 0.7
            image.set_matrix(pdfium.PdfMatrix().scale(side, side).translate((width - side) / 2, 60))
            page.insert_obj(image)
        if spec.text:
            _add_text(pdfium, raw, pdf, page.raw, spec.text, height - 60)
        page.gen_content()
    pdf.save(str(path))
    return path


def write_encrypted_pdf(path: Path) -> Path:
    """A one-page PDF behind the standard security handler with an unknown user password."""
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 200 200] >>",
        b"<< /Filter /Standard /V 1 /R 2 /O <" + b"ab" * 32 + b"> /U <" + b"cd" * 32 + b"> /P -4 >>",
    ]
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for number, body in enumerate(objects, 1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % number + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % o for o in offsets)
    out += (b"trailer\n<< /Size %d /Root 1 0 R /Encrypt 4 0 R /ID [<0123456789abcdef0123456789abcdef> "
            b"<0123456789abcdef0123456789abcdef>] >>\nstartxref\n%d\n%%%%EOF\n" % (len(objects) + 1, xref))
    path.write_bytes(bytes(out))
    return path
