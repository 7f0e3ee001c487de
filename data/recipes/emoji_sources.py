"""Emoji concepts (labels, tags, short names) and the emoji art styles that draw them.

The concept catalogue comes from emojibase-data (CLDR labels and tags) enriched with short names from
emojibase's shortcode sets, emoji-datasource and openmoji's own annotations. Each art style is a
package whose images are matched to concepts by their normalised codepoint sequence.
"""
from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from fetch import FetchedPackage
from PIL import Image
from raster import render_svg
from splits import concept_key, has_skin_tone, normalize_hexcode, pick_stable
from textclean import emoji_label_caption, is_skin_tone_code, split_tag_string, unique_captions

log = logging.getLogger(__name__)



@dataclass
class EmojiEntry:
    """One emoji sequence (a base emoji or one of its skin-tone variants)."""

    hexcode: str  # normalised sequence (no FE0F)
    concept: str  # concept key (no FE0F, no skin tones)
    text: str
    texts: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class StyleImage:
    """An image of one emoji sequence in one art style; `load` renders it at about `size` px."""

    hexcode: str
    load: Callable[[int], Image.Image]


@dataclass(frozen=True)
class EmojiStyle:
    name: str
    package: FetchedPackage
    license: str
    images: dict[str, StyleImage]  # normalised hexcode -> image


def _shortcode_names(value: str | list[str] | None) -> list[str]:
    if value is None:
        return []
    return [value] if isinstance(value, str) else list(value)


def _load_shortcodes(emojibase_root: Path) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for name in ("github", "emojibase", "iamcal", "cldr"):
        path = emojibase_root / "en" / "shortcodes" / f"{name}.json"
        if not path.exists():
            continue
        for hexcode, value in json.loads(path.read_text(encoding="utf-8")).items():
            out.setdefault(normalize_hexcode(hexcode), []).extend(_shortcode_names(value))
    return out


def _load_datasource_names(datasource_root: Path | None) -> dict[str, list[str]]:
    if datasource_root is None:
        return {}
    out: dict[str, list[str]] = {}
    for e in json.loads((datasource_root / "emoji.json").read_text(encoding="utf-8")):
        out.setdefault(normalize_hexcode(e["unified"]), []).extend([e.get("name") or "", *e.get("short_names", [])])
    return out


def _load_openmoji_texts(openmoji_root: Path | None) -> dict[str, list[str]]:
    if openmoji_root is None:
        return {}
    out: dict[str, list[str]] = {}
    for e in json.loads((openmoji_root / "data" / "openmoji.json").read_text(encoding="utf-8")):
        texts = [e.get("annotation") or "", *split_tag_string(e.get("tags")), *split_tag_string(e.get("openmoji_tags"))]
        out.setdefault(normalize_hexcode(e["hexcode"]), []).extend(texts)
    return out


def build_catalogue(emojibase_root: Path, datasource_root: Path | None, openmoji_root: Path | None) -> dict[str, EmojiEntry]:
    """Every emoji sequence emojibase knows (regional indicator letters excluded), keyed by hexcode."""
    shortcodes = _load_shortcodes(emojibase_root)
    ds_names = _load_datasource_names(datasource_root)
    om_texts = _load_openmoji_texts(openmoji_root)
    entries: dict[str, EmojiEntry] = {}
    for e in json.loads((emojibase_root / "en" / "data.json").read_text(encoding="utf-8")):
        if "group" not in e:  # regional indicator letters: not pictures of anything
            continue
        base_hex = normalize_hexcode(e["hexcode"])
        base_text = emoji_label_caption(e["label"])
        extra = [
            *e.get("tags", []),
            *shortcodes.get(base_hex, []),
            *ds_names.get(base_hex, []),
            *om_texts.get(base_hex, []),
        ]
        extra = [t for t in extra if not is_skin_tone_code(t)]
        entries[base_hex] = EmojiEntry(base_hex, concept_key(base_hex), base_text, unique_captions(base_text, extra))
        for skin in e.get("skins", []):
            hexcode = normalize_hexcode(skin["hexcode"])
            text = emoji_label_caption(skin["label"])
            alt = [e["label"], *shortcodes.get(hexcode, []), *ds_names.get(hexcode, []), *extra]
            alt = [t for t in alt if not is_skin_tone_code(t)]
            entries[hexcode] = EmojiEntry(hexcode, concept_key(hexcode), text, unique_captions(text, alt))
    return entries


# --- art styles -------------------------------------------------------------------------------------


def _svg_file_loader(path: Path) -> Callable[[int], Image.Image]:
    return lambda size: render_svg(path.read_bytes(), size)


def _svg_dir_images(folder: Path, strip_prefix: str = "") -> dict[str, StyleImage]:
    """Images from a folder of '<hexcode>.svg' files (twemoji, openmoji, emojione)."""
    images: dict[str, StyleImage] = {}
    for path in sorted(folder.glob("*.svg")):
        stem = path.stem[len(strip_prefix) :] if strip_prefix and path.stem.startswith(strip_prefix) else path.stem
        try:
            hexcode = normalize_hexcode(stem)
        except ValueError:  # non-codepoint names (openmoji extras such as 'E000')
            continue
        images.setdefault(hexcode, StyleImage(hexcode, _svg_file_loader(path)))
    return images


def _iconify_svg(data: dict, name: str) -> tuple[str, bool, bool, int]:
    """SVG source of an Iconify icon, resolving aliases; returns (svg, hflip, vflip, quarter turns)."""
    hflip = vflip = False
    rotate = 0
    seen = set()
    while name in data.get("aliases", {}) and name not in seen:
        seen.add(name)
        alias = data["aliases"][name]
        hflip ^= bool(alias.get("hFlip"))
        vflip ^= bool(alias.get("vFlip"))
        rotate += int(alias.get("rotate", 0))
        name = alias["parent"]
    icon = data["icons"][name]
    hflip ^= bool(icon.get("hFlip"))
    vflip ^= bool(icon.get("vFlip"))
    rotate += int(icon.get("rotate", 0))
    w = icon.get("width", data.get("width", 16))
    h = icon.get("height", data.get("height", 16))
    left, top = icon.get("left", data.get("left", 0)), icon.get("top", data.get("top", 0))
    svg = (
        f'<svg xmlns="http://www.w3.org/2000/svg" xmlns:xlink="http://www.w3.org/1999/xlink" '
        f'width="{w}" height="{h}" viewBox="{left} {top} {w} {h}">{icon["body"]}</svg>'
    )
    return svg, hflip, vflip, rotate % 4


def _iconify_loader(data: dict, name: str) -> Callable[[int], Image.Image]:
    def load(size: int) -> Image.Image:
        svg, hflip, vflip, turns = _iconify_svg(data, name)
        img = render_svg(svg, size)
        if hflip:
            img = img.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        if vflip:
            img = img.transpose(Image.Transpose.FLIP_TOP_BOTTOM)
        for _ in range(turns):
            img = img.transpose(Image.Transpose.ROTATE_270)
        return img

    return load


def _iconify_images(root: Path) -> dict[str, StyleImage]:
    """Images of an @iconify-json emoji set: chars.json maps codepoints to icon names."""
    data = json.loads((root / "icons.json").read_text(encoding="utf-8"))
    chars = json.loads((root / "chars.json").read_text(encoding="utf-8"))
    images: dict[str, StyleImage] = {}
    for seq, name in sorted(chars.items()):
        hexcode = normalize_hexcode(seq)
        if name in data["icons"] or name in data.get("aliases", {}):
            images.setdefault(hexcode, StyleImage(hexcode, _iconify_loader(data, name)))
    return images


def _png_dir_images(folder: Path) -> dict[str, StyleImage]:
    images: dict[str, StyleImage] = {}
    for path in sorted(folder.glob("*.png")):
        hexcode = normalize_hexcode(path.stem)
        images.setdefault(hexcode, StyleImage(hexcode, lambda size, p=path: Image.open(p)))
    return images


# Style name -> (registry, package, license, function from the unpacked root to its images).
STYLE_SPECS: dict[str, tuple[str, str, str, Callable[[Path], dict[str, StyleImage]]]] = {
    "noto": ("npm", "@iconify-json/noto", "Apache-2.0", _iconify_images),
    "twemoji": ("npm", "@twemoji/svg", "CC-BY-4.0", _svg_dir_images),
    "fluent-flat": ("npm", "@iconify-json/fluent-emoji-flat", "MIT", _iconify_images),
    "emojione": (
        "deb",
        "ruby-gemojione",
        "CC-BY-SA-4.0",
        lambda root: _svg_dir_images(next(root.glob("usr/share/rubygems-integration/all/gems/gemojione-*/assets/svg"))),
    ),
    "openmoji": ("npm", "openmoji", "CC-BY-SA-4.0", lambda root: _svg_dir_images(root / "color" / "svg")),
    # Same Noto art as "noto" at 64 px only: used when @iconify-json/noto cannot be fetched.
    "google": ("npm", "emoji-datasource-google", "Apache-2.0", lambda root: _png_dir_images(root / "img" / "google" / "64")),
}


def select_images(style: EmojiStyle, catalogue: dict[str, EmojiEntry], skin_tones_per_concept: int) -> Iterator[tuple[EmojiEntry, StyleImage]]:
    """Base image of every catalogued concept the style draws, plus up to N skin-tone variants
    per concept chosen deterministically (different styles get different tones)."""
    toned: dict[str, list[str]] = {}
    for hexcode in style.images:
        entry = catalogue.get(hexcode)
        if entry is not None and has_skin_tone(hexcode):
            toned.setdefault(entry.concept, []).append(hexcode)
    for hexcode in sorted(style.images):
        entry = catalogue.get(hexcode)
        if entry is None or has_skin_tone(hexcode):
            continue
        yield entry, style.images[hexcode]
        options = toned.get(entry.concept, [])
        for i in range(min(skin_tones_per_concept, len(options))):
            pick = pick_stable(f"{entry.concept}:{style.name}:{i}", options)
            options = [o for o in options if o != pick]
            yield catalogue[pick], style.images[pick]
