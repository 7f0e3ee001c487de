"""Read the text inside an image (OCR): ``read_text(image) -> OcrResult`` with the text in reading order and
each word's box (image pixels) and confidence.

The engine is RapidOCR (PyPI ``rapidocr-onnxruntime``: PaddleOCR's PP-OCRv4 detector and recogniser and a
text-direction classifier as ONNX models inside the wheel, so it works offline). It was measured against
Tesseract 5 (Debian ``tesseract-ocr`` through ``pytesseract``) on the rendered set of ``bench/ocr_data.py``
(``python -m bench.ocr``): RapidOCR reads rotated text natively (the detector finds lines at any angle,
tall lines are turned, and the classifier turns upside-down ones), and keeps its recall on photo
backgrounds, where Tesseract loses most words; Tesseract needs one full pass per rotation to find turned
text. Only RapidOCR is kept (docs/search.md has the figures).

Every image gets a budget (:class:`OcrBudget`): the detector sees at most ``max_side`` pixels on the long
side (small images are enlarged to a short side of 736 within that), at most ``max_lines`` lines are read (the largest ones when there are more) and reading stops at
``seconds``; a result cut short says why in ``truncated``. So a page of tiny text costs bounded time and
memory and never stalls indexing.

Imported only when OCR is asked for: the engine's import and model load take a second or so.
"""

from __future__ import annotations

import functools
import logging
import re
import time
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
from PIL import Image

from mmsearch.errors import ConfigError

log = logging.getLogger(__name__)

MIN_SIDE = 8  # an image thinner than this holds no legible line
DETECT_SHORT_SIDE = 736  # small images are enlarged to this short side for the detector (as RapidOCR does), within max_side
STORED_WORDS = 1000  # word boxes kept per item (the whole text is kept whatever its length)


class OcrUnavailableError(ConfigError):
    """The OCR engine (PyPI ``rapidocr-onnxruntime``) is not installed or cannot load its models."""


@dataclass(frozen=True)
class OcrBudget:
    """What one image may cost. The defaults read a phone screenshot or a poster fully on one core in a
    few seconds, and stop a 4000x4000 page of tiny text after ``seconds``."""

    max_side: int = 1600
    max_lines: int = 300
    seconds: float = 20.0


@dataclass(frozen=True)
class OcrWord:
    text: str
    box: tuple[int, int, int, int]  # x0, y0, x1, y1 in the pixels of the image that was read
    confidence: float  # 0..1, the recogniser's mean character probability


@dataclass(frozen=True)
class OcrResult:
    text: str  # the lines in reading order (top to bottom, left to right), one per line
    words: tuple[OcrWord, ...]
    size: tuple[int, int]  # (width, height) of the image the boxes refer to
    seconds: float
    truncated: str | None = None  # why reading stopped before the end (the budget); None when all was read
    lines: int = field(default=0)

    @property
    def has_text(self) -> bool:
        return bool(self.text.strip())

    def to_meta(self, max_words: int = STORED_WORDS) -> dict:
        """The item metadata fields: ``ocr_text`` (searched by keyword), ``has_text`` (a filter),
        ``ocr_words`` ([[word, x0, y0, x1, y1], ...], at most ``max_words``) and ``ocr_size`` [w, h] for
        highlighting words on a thumbnail of any size."""
        meta: dict = {"has_text": self.has_text}
        if self.has_text:
            meta["ocr_text"] = self.text
            meta["ocr_words"] = [[w.text, *w.box] for w in self.words[:max_words]]
            meta["ocr_size"] = list(self.size)
        return meta


OCR_FIELDS = ("has_text", "ocr_text", "ocr_words", "ocr_size")  # what to_meta may write on an item


@functools.lru_cache(maxsize=4)
def _engine(threads: int):
    """One engine per process and thread count: its ONNX sessions take ~1 s to load and are reused."""
    try:
        from rapidocr_onnxruntime import RapidOCR
    except ImportError as exc:
        raise OcrUnavailableError(f"OCR needs the PyPI package rapidocr-onnxruntime ({exc})") from exc
    try:
        import cv2

        cv2.setNumThreads(threads)  # crops and resizes: the worker owns one core
        engine = RapidOCR(intra_op_num_threads=threads, inter_op_num_threads=1, print_verbose=False)
        _scale_detection_ourselves(engine)
        return engine
    except Exception as exc:  # a broken install: missing or unreadable model files
        raise OcrUnavailableError(f"the OCR engine cannot load its models: {type(exc).__name__}: {exc}") from exc


def _scale_detection_ourselves(engine) -> None:
    """The detector would enlarge any image to a short side of 736 whatever its long side (a 100x4000
    banner would become 736x29440); :func:`read_text` picks the scale within the budget instead, and the
    detector only rounds the sides to its multiple of 32."""
    from rapidocr_onnxruntime.ch_ppocr_det.utils import DetPreProcess

    detector = engine.text_det
    detector.get_preprocess = lambda _longest: DetPreProcess(2**31, "max", detector.mean, detector.std)


def check_available() -> None:
    """Fail now, with a clear error, when the engine is not installed (without loading it)."""
    import importlib.util

    if importlib.util.find_spec("rapidocr_onnxruntime") is None:
        raise OcrUnavailableError("OCR needs the PyPI package rapidocr-onnxruntime: pip install rapidocr-onnxruntime")


def read_text(image: Image.Image | np.ndarray, budget: OcrBudget | None = None, *, threads: int = 1) -> OcrResult:
    """The text in ``image`` (PIL image or HxWx3 RGB uint8 array), with word boxes in its pixels.

    ``threads`` is the engine's intra-op thread count: 1 in indexing workers (each owns a core)."""
    budget = budget or OcrBudget()
    started = time.monotonic()
    rgb = np.asarray(image.convert("RGB") if isinstance(image, Image.Image) else image, dtype=np.uint8)
    height, width = rgb.shape[:2]
    if min(height, width) < MIN_SIDE:
        return OcrResult("", (), (width, height), 0.0)
    engine = _engine(threads)
    scale = min(budget.max_side / max(height, width), max(1.0, DETECT_SHORT_SIDE / min(height, width)))
    bgr = np.ascontiguousarray(rgb[:, :, ::-1])
    if scale != 1.0:
        import cv2

        size = (max(MIN_SIDE, round(width * scale)), max(MIN_SIDE, round(height * scale)))
        bgr = cv2.resize(bgr, size, interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
    boxes, _ = engine.text_det(bgr)
    if boxes is None or len(boxes) == 0:
        return OcrResult("", (), (width, height), round(time.monotonic() - started, 3))
    boxes, truncated = _keep_largest(list(boxes), budget.max_lines)
    boxes = engine.sorted_boxes(np.asarray(boxes))
    crops = engine.get_crop_img_list(bgr, boxes)
    crops, directions, _ = engine.text_cls(crops)
    flipped = [label == "180" and score > engine.text_cls.cls_thresh for label, score in directions]
    recognised, stopped = _recognise(engine, crops, started + budget.seconds)
    truncated = "; ".join(r for r in (truncated, stopped) if r) or None
    lines, words = [], []
    for box, crop, flip, rec in zip(boxes, crops, flipped, recognised):
        if rec is None or rec.score < engine.text_score:
            continue
        line_words = _words(rec, _ReadingAxis(np.asarray(box, dtype=np.float32) / scale, flip), (width, height))
        if line_words:
            lines.append(" ".join(w.text for w in line_words))
            words.extend(line_words)
    seconds = round(time.monotonic() - started, 3)
    if truncated:
        truncated = f"{truncated} (read {len(lines)} lines in {seconds:.1f}s)"
    return OcrResult("\n".join(lines), tuple(words), (width, height), seconds, truncated, len(lines))


def _keep_largest(boxes: list[np.ndarray], limit: int) -> tuple[list[np.ndarray], str | None]:
    """At most ``limit`` detected lines: the largest (most legible) ones when there are more."""
    if len(boxes) <= limit:
        return boxes, None
    areas = [_box_area(b) for b in boxes]
    keep = sorted(np.argsort(areas)[::-1][:limit])
    return [boxes[i] for i in keep], f"{len(boxes)} text lines found, the budget reads the {limit} largest"


def _box_area(box: np.ndarray) -> float:
    """Area of a 4-point box (shoelace formula)."""
    x, y = np.asarray(box, dtype=np.float64).T
    return float(abs(np.dot(x, np.roll(y, 1)) - np.dot(y, np.roll(x, 1))) / 2)


@dataclass(frozen=True)
class _Line:
    """One recognised line: its text, mean character probability, and where each character sits along it
    (0 = start of reading, 1 = end), with each character's probability."""

    text: str
    score: float
    positions: tuple[tuple[float, float], ...]  # (start, end) of each character of ``text``
    probs: tuple[float, ...]


SPACE_PROB = 0.05  # a blank gap between two characters whose space probability passes this is a space


def _recognise(engine, crops: Sequence[np.ndarray], deadline: float) -> tuple[list, str | None]:
    """Recognise the line crops a batch at a time (similar widths together, as the engine does), stopping
    at ``deadline``: -> (a :class:`_Line` per crop, None for lines not reached; why it stopped)."""
    results: list = [None] * len(crops)
    rec = engine.text_rec
    _, target_h, target_w = rec.rec_image_shape
    done = 0
    for chunk in _batches(crops, int(rec.rec_batch_num) * target_w / target_h):
        if time.monotonic() > deadline:
            return results, f"time budget reached after {done} of {len(crops)} lines"
        done += len(chunk)
        ratios = [crops[i].shape[1] / max(1, crops[i].shape[0]) for i in chunk]
        widest = max(target_w / target_h, *ratios)
        batch = np.stack([rec.resize_norm_img(crops[i], widest) for i in chunk]).astype(np.float32)
        preds = rec.session(batch)[0]
        for i, ratio, pred in zip(chunk, ratios, preds):
            results[i] = _decode(pred, rec.postprocess_op.character, min(1.0, ratio / widest))
    return results, None


def _batches(crops: Sequence[np.ndarray], max_width: float) -> list[list[int]]:
    """Crop indexes in batches of similar width (narrowest first), each batch padded to its widest line
    costing at most ``max_width`` (in line heights) unless it is one line: the time budget is checked
    between batches, so no batch may run long (a page-wide line of small print is 100 heights wide)."""
    ratios = [c.shape[1] / max(1, c.shape[0]) for c in crops]
    batches: list[list[int]] = []
    for i in np.argsort(ratios):
        i = int(i)
        if batches and ratios[i] * (len(batches[-1]) + 1) <= max_width:
            batches[-1].append(i)
        else:
            batches.append([i])
    return batches


def _decode(pred: np.ndarray, alphabet: Sequence[str], filled: float) -> _Line:
    """Greedy CTC decoding that also restores the spaces the recogniser (trained mostly on Chinese, where
    lines have none) tends to drop between words: a run of blanks between two characters becomes a
    space when the space symbol is likely enough anywhere in it (``SPACE_PROB``). ``filled`` is the share
    of the recogniser's input width the line occupies (the rest is padding)."""
    best = pred.argmax(axis=1)
    space = len(alphabet) - 1  # the engine appends " " as the last symbol (and the CTC blank first)
    columns = len(best) * filled or 1.0
    chars: list[str] = []
    positions: list[tuple[float, float]] = []
    probs: list[float] = []
    gap_space = 0.0
    previous = 0
    for column, symbol in enumerate(best):
        symbol = int(symbol)
        if symbol == 0:  # blank: remember how likely a space was in this gap
            gap_space = max(gap_space, float(pred[column, space]))
            previous = 0
            continue
        if symbol == previous:  # the same character continued over another column
            positions[-1] = (positions[-1][0], (column + 1) / columns)
            continue
        if chars and chars[-1] != " " and symbol != space and gap_space >= SPACE_PROB:
            chars.append(" ")
            positions.append((positions[-1][1], column / columns))
            probs.append(gap_space)
        chars.append(alphabet[symbol])
        positions.append((column / columns, (column + 1) / columns))
        probs.append(float(pred[column, symbol]))
        gap_space, previous = 0.0, symbol
    text = "".join(chars)
    score = float(np.mean([p for c, p in zip(chars, probs) if c != " "])) if text.strip() else 0.0
    return _Line(text, score, tuple(positions), tuple(probs))


class _ReadingAxis:
    """Maps a position along a recognised line (0 = start of reading, 1 = end) to points of its detected
    box in image pixels. The engine turns tall boxes a quarter turn counter-clockwise before reading them,
    and upside-down lines half a turn, so where reading starts depends on both."""

    def __init__(self, box: np.ndarray, flipped: bool) -> None:
        p0, p1, p2, p3 = box
        width = max(np.linalg.norm(p0 - p1), np.linalg.norm(p2 - p3))
        height = max(np.linalg.norm(p0 - p3), np.linalg.norm(p1 - p2))
        if height >= 1.5 * max(width, 1e-6):  # read along p0 -> p3 (the crop was turned)
            self.edges = ((p0, p3), (p1, p2))
        else:  # read along p0 -> p1
            self.edges = ((p0, p1), (p3, p2))
        self.flipped = flipped

    def span(self, t0: float, t1: float, size: tuple[int, int]) -> tuple[int, int, int, int]:
        """The axis-aligned box of the part of the line between reading positions ``t0`` and ``t1``."""
        if self.flipped:
            t0, t1 = 1.0 - t1, 1.0 - t0
        points = [a + (b - a) * t for t in (t0, t1) for a, b in self.edges]
        xs, ys = [p[0] for p in points], [p[1] for p in points]
        width, height = size
        return (int(max(0, min(xs))), int(max(0, min(ys))), int(min(width, round(max(xs)))), int(min(height, round(max(ys)))))


def _words(line: _Line, axis: _ReadingAxis, size: tuple[int, int]) -> list[OcrWord]:
    """Split one recognised line into words, each with its box and mean character probability."""
    words = []
    for match in re.finditer(r"\S+", line.text):
        first, last = match.start(), match.end() - 1
        token = _fix_digit_letters(match.group())
        if not re.search(r"\w", token):
            continue
        confidence = float(np.mean(line.probs[first : last + 1]))
        # the recogniser emits a character around its middle: widen by half a character on each side
        half = (line.positions[last][1] - line.positions[first][0]) / (2 * (last - first + 1))
        box = axis.span(max(0.0, line.positions[first][0] - half), min(1.0, line.positions[last][1] + half * 0.5), size)
        words.append(OcrWord(token, box, round(confidence, 3)))
    return words


def _fix_digit_letters(token: str) -> str:
    """The recogniser (trained mostly on Chinese) sometimes reads the letter o as a zero inside a word
    ("0rder", "hell0"); a zero in a word that is otherwise letters is the letter."""
    letters = sum(ch.isalpha() for ch in token)
    digits = [ch for ch in token if ch.isdigit()]
    if letters >= 2 and digits and set(digits) == {"0"}:
        lower = any(ch.islower() for ch in token)
        return token.replace("0", "o" if lower else "O")
    return token
