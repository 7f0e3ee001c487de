"""Pages of a PDF through pypdfium2 (PDFium, the PDF engine of Chromium, in a wheel): each page rendered
to a picture and its text layer read, one page at a time.

Bounds: a page limit (the first ``max_pages`` pages are read, the rest reported by the caller), a
rendering size derived from the page's shape (the shorter side rendered at ``min_side`` pixels, the
longer side never beyond ``MAX_RENDER_SIDE``, so a page declared a kilometre wide renders no larger
than a sane one), and a cap on the text kept per page. An encrypted or malformed file is a
DecodeError with the reason PDFium gives.

PDFium is not thread-safe: every call into it in this process holds ``PDFIUM_LOCK`` (the HTTP API
renders thumbnails from several request threads; the indexer reads PDFs in worker processes).
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from typing import Callable, Iterator

from PIL import Image

from mmsearch.imaging.decode import DecodeError

log = logging.getLogger(__name__)

PDF_EXTS = frozenset({".pdf"})
MAX_RENDER_SIDE = 2048  # pixels: the longer side of a rendered page never exceeds this
OCR_MIN_SIDE = 1024  # pixels: a scanned page is rendered this large for OCR (the model's picture is far smaller)
MAX_PAGE_TEXT = 64 * 1024  # characters of a page's text layer kept (more adds nothing to an embedding)
PDFIUM_LOCK = threading.RLock()

# Reads the words in a rendered page that has no text layer (a scan); None when no OCR is configured.
PageOcr = Callable[[Image.Image], str]


@dataclass
class PdfPage:
    number: int  # 1-based, as viewers and `file.pdf#page=N` count
    image: Image.Image | None  # the rendered page, RGB (None when rendering was not asked for)
    text: str  # the page's text layer ("" for a scanned page without one), or its OCR text
    ocr: bool = False  # the text came from OCR, not from the text layer
    # Nothing on the page but its text layer (no picture, drawing or shading): its picture shows only the
    # words, which the text item says better, so the indexer embeds its text alone. A rendered page of
    # words otherwise answers picture queries ("a pizza" found a sales report about bread above the page
    # with the pizza on it).
    words_only: bool = False


def _reason(exc: Exception) -> str:
    text = str(exc)
    if "password" in text.lower():
        return "encrypted PDF (it needs a password)"
    if "PDFium:" in text:
        return "not a readable PDF: " + text.split("PDFium:", 1)[1].strip(" ).")
    return f"not a readable PDF: {text}"


def render_scale(width_pt: float, height_pt: float, min_side: int) -> float:
    """Pixels per point so the shorter side is ``min_side`` px and the longer at most MAX_RENDER_SIDE."""
    short, long = max(1e-3, min(width_pt, height_pt)), max(1e-3, width_pt, height_pt)
    return max(1e-4, min(min_side / short, MAX_RENDER_SIDE / long))


class PdfReader:
    """An open PDF: ``len(reader)`` pages, ``pages(limit)`` reads them in order. Use as a context manager."""

    def __init__(self, path: str) -> None:
        import pypdfium2 as pdfium

        self.path = path
        with PDFIUM_LOCK:
            try:
                self.doc = pdfium.PdfDocument(path)
                self.count = len(self.doc)
            except (pdfium.PdfiumError, OSError, ValueError) as exc:
                raise DecodeError(_reason(exc)) from exc
        if self.count == 0:
            self.close()
            raise DecodeError("the PDF has no pages")

    def __len__(self) -> int:
        return self.count

    def __enter__(self) -> "PdfReader":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        with PDFIUM_LOCK:
            self.doc.close()

    def page(self, number: int, *, min_side: int = 256, render: bool = True, ocr: PageOcr | None = None) -> PdfPage:
        """Page ``number`` (1-based): rendered picture and text. A page PDFium cannot read is DecodeError."""
        import pypdfium2 as pdfium

        if not 1 <= number <= self.count:
            raise DecodeError(f"the PDF has no page {number} (it has {self.count})")
        with PDFIUM_LOCK:
            page = None
            try:
                page = self.doc[number - 1]
                textpage = page.get_textpage()
                text = textpage.get_text_range()[:MAX_PAGE_TEXT].replace("\r\n", "\n").strip()
                textpage.close()
                width, height = page.get_size()
                words_only = bool(text) and _only_text_objects(page)
                image = self._render(page, render_scale(width, height, min_side)) if render else None
                scan = self._render(page, render_scale(width, height, OCR_MIN_SIDE)) if ocr is not None and not text else None
            except (pdfium.PdfiumError, OSError, ValueError) as exc:
                raise DecodeError(f"page {number}: {_reason(exc)}") from exc
            finally:
                if page is not None:
                    page.close()
        used_ocr = False
        if scan is not None:
            text, used_ocr = ocr(scan).strip()[:MAX_PAGE_TEXT], True
        return PdfPage(number, image, text, used_ocr, words_only)

    @staticmethod
    def _render(page, scale: float) -> Image.Image:
        bitmap = page.render(scale=scale, may_draw_forms=True)
        image = bitmap.to_pil().convert("RGB")
        bitmap.close()
        return image

    def pages(self, limit: int, *, min_side: int = 256, ocr: PageOcr | None = None) -> Iterator[PdfPage]:
        """The first ``limit`` pages, one at a time; a page that cannot be read is logged and skipped."""
        for number in range(1, min(limit, self.count) + 1):
            try:
                yield self.page(number, min_side=min_side, ocr=ocr)
            except DecodeError as exc:
                log.warning("%s: %s", self.path, exc)


def _only_text_objects(page) -> bool:
    """True when every object on the page (inside form XObjects too) is text."""
    import pypdfium2.raw as raw

    return all(obj.type == raw.FPDF_PAGEOBJ_TEXT for obj in page.get_objects(filter=None) if obj.type != raw.FPDF_PAGEOBJ_FORM)


def render_page(path: str, number: int, min_side: int = 256) -> Image.Image:
    """One page rendered (a search hit's thumbnail)."""
    with PdfReader(path) as reader:
        page = reader.page(number, min_side=min_side)
    if page.image is None:
        raise DecodeError(f"page {number} could not be rendered")
    return page.image
