"""A rendered OCR test set: known words printed in Debian's fonts at several sizes, colours, backgrounds
(flat, gradient, photo-like) and rotations (0/90/180/270), so OCR accuracy is measured against exact
ground truth that the tests and benchmarks make themselves.

Fonts come from the Debian packages ``fonts-dejavu-core`` and ``fonts-liberation`` (CI installs them,
see ``.ci/run``); :func:`available_fonts` lists those present. Word recall is the share of printed words
found among the recognised words (case-insensitive, punctuation ignored, each printed word counted once
per occurrence).
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from bench.photos import make_photo

FONT_DIRS = (Path("/usr/share/fonts/truetype/dejavu"), Path("/usr/share/fonts/truetype/liberation"))
FONT_FILES = (
    "DejaVuSans.ttf", "DejaVuSerif.ttf", "DejaVuSans-Bold.ttf", "DejaVuSansMono.ttf",
    "LiberationSans-Regular.ttf", "LiberationSerif-Regular.ttf", "LiberationSans-Bold.ttf", "LiberationMono-Regular.ttf",
)
ROTATIONS = (0, 90, 180, 270)
SIZES = (18, 26, 40, 60)  # text height in pixels: small print on a screenshot up to a sign
BACKGROUNDS = ("flat", "gradient", "photo")

# Everyday words of 3-10 letters: what people type to find a sign, a receipt or a screenshot.
VOCABULARY = (
    "apple harbour station market garden window bakery coffee ticket museum river bridge castle summer winter "
    "orange yellow purple silver golden morning evening holiday weekend library theatre kitchen bicycle "
    "mountain forest island village street avenue office school hospital airport parking entrance exit closed "
    "open sale price total receipt invoice number account password welcome hello thanks please friday monday "
    "tuesday sunday january march april october december pizza pasta salad bread cheese butter honey lemon "
    "tomato potato carrot pepper dinner lunch breakfast menu special today free fresh local north south east west "
    "central public private danger warning notice delivery package order customer service support online "
    "mobile camera picture travel journey ocean beach sunset planet rocket signal marble copper velvet"
).split()


@dataclass(frozen=True)
class Sample:
    """One rendered image and the words printed on it."""

    name: str
    image: Image.Image
    words: tuple[str, ...]
    rotation: int
    font: str
    size: int
    background: str


def available_fonts() -> list[Path]:
    """The test fonts installed on this machine (empty without the Debian font packages)."""
    found = []
    for name in FONT_FILES:
        for folder in FONT_DIRS:
            if (folder / name).is_file():
                found.append(folder / name)
                break
    return found


def _background(kind: str, size: tuple[int, int], rng: np.random.Generator, seed: int) -> Image.Image:
    width, height = size
    if kind == "photo":
        return make_photo(seed, size)
    base = rng.integers(0, 256, size=3)
    if kind == "flat":
        return Image.new("RGB", size, tuple(int(v) for v in base))
    other = rng.integers(0, 256, size=3)
    t = np.linspace(0.0, 1.0, width, dtype=np.float32)[None, :, None]
    pixels = base[None, None, :] * (1 - t) + other[None, None, :] * t
    return Image.fromarray(np.repeat(pixels, height, axis=0).clip(0, 255).astype(np.uint8))


def _luminance(rgb) -> float:
    r, g, b = (float(v) for v in rgb)
    return 0.299 * r + 0.587 * g + 0.114 * b


def _ink_for(region: Image.Image, rng: np.random.Generator) -> tuple[int, int, int]:
    """A text colour that contrasts with the region it is printed on (as people design signs): a dark
    colour on a light background, a light one on a dark background, hue at random."""
    mean = np.asarray(region, dtype=np.float32).reshape(-1, 3).mean(axis=0)
    light_background = _luminance(mean) >= 128
    for _ in range(50):
        ink = rng.integers(0, 256, size=3)
        if abs(_luminance(ink) - _luminance(mean)) >= 110 and (_luminance(ink) < 100) == light_background:
            return tuple(int(v) for v in ink)
    return (0, 0, 0) if light_background else (255, 255, 255)


def render_sample(index: int, fonts: list[Path], *, rotation: int | None = None, canvas: tuple[int, int] = (640, 400)) -> Sample:
    """Sample ``index`` of the set (deterministic): 2-3 lines of 2-3 words, one font/size/background/
    rotation chosen from ``index`` so that any 48 consecutive indexes cover every combination of rotation,
    size and background once."""
    if not fonts:
        raise FileNotFoundError("no test fonts: install the Debian packages fonts-dejavu-core and fonts-liberation")
    rng = np.random.default_rng(1000 + index)
    # mixed radix: 4 rotations x 4 sizes x 3 backgrounds in 48 consecutive indexes, fonts interleaved
    rotation = ROTATIONS[index % len(ROTATIONS)] if rotation is None else rotation
    size = SIZES[(index // len(ROTATIONS)) % len(SIZES)]
    background = BACKGROUNDS[(index // (len(ROTATIONS) * len(SIZES))) % len(BACKGROUNDS)]
    font_path = fonts[(index + index // len(ROTATIONS) + index // (len(ROTATIONS) * len(SIZES))) % len(fonts)]
    font = ImageFont.truetype(str(font_path), size)
    image = _background(background, canvas, rng, seed=50_000 + index)
    draw = ImageDraw.Draw(image)
    words: list[str] = []
    y = int(rng.integers(12, 40))
    for _ in range(int(rng.integers(2, 4))):
        line = [str(w) for w in rng.choice(VOCABULARY, size=int(rng.integers(2, 4)), replace=False)]
        if rng.random() < 0.3:
            line = [w.capitalize() for w in line]
        text = " ".join(line)
        left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
        if right - left > canvas[0] - 24:  # keep the whole line on the canvas: drop its last word
            line = line[:-1]
            text = " ".join(line)
            left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
        if y + bottom > canvas[1] - 8:
            break
        x = int(rng.integers(12, max(13, canvas[0] - right - 12)))
        region = image.crop((x + left, y + top, x + right, y + bottom))
        draw.text((x, y), text, font=font, fill=_ink_for(region, rng))
        words += line
        y += int((bottom - top) * 1.6) + int(rng.integers(4, 16))
    turned = image.rotate(rotation, expand=True) if rotation else image
    name = f"ocr_{index:04d}_{font_path.stem}_{size}px_{background}_r{rotation}"
    return Sample(name, turned, tuple(words), rotation, font_path.stem, size, background)


def render_set(count: int, fonts: list[Path] | None = None) -> list[Sample]:
    fonts = available_fonts() if fonts is None else fonts
    return [render_sample(i, fonts) for i in range(count)]


def normalise_words(text: str) -> list[str]:
    """Lower-cased words of letters and digits; everything else separates words."""
    return re.findall(r"[0-9a-z]+", text.lower())


def word_recall(printed: tuple[str, ...] | list[str], recognised_text: str) -> tuple[int, int]:
    """-> (printed words found, printed words) with multiplicity: a word printed twice must be read twice."""
    truth = Counter(w for word in printed for w in normalise_words(word))
    found = Counter(normalise_words(recognised_text))
    return sum(min(n, found[w]) for w, n in truth.items()), sum(truth.values())
