"""Read openclipart metadata (Dublin Core inside each SVG) and turn it into captions."""
from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

from textclean import caption_key, clean_caption, is_boilerplate, unique_captions

DC = "{http://purl.org/dc/elements/1.1/}"
RDF = "{http://www.w3.org/1999/02/22-rdf-syntax-ns#}"
_TRAILING_NUMBER = re.compile(r"[\s_-]*\d+$")
# Keywords that describe the file or the collection rather than the picture.
KEYWORD_STOPLIST = frozenset(
    {"unsorted", "clip art", "clipart", "media", "svg", "png", "public domain", "externalsource", "image", "icon",
     "icons", "cartoon", "drawing", "illustration", "color", "colour", "line art", "lineart", "black and white",
     "remix", "shape", "shapes", "symbol", "symbols", "etiquette icons", "flat icon collection", "new", "test",
     "openclipart", "pd", "cc0", "inkscape", "vector", "hash", "theme", "lemon theme icon", "flat theme",
     "etiquette theme", "mapsym", "magick", "special"}
)


@dataclass
class ClipartMeta:
    title: str = ""
    description: str = ""
    keywords: list[str] = field(default_factory=list)
    authors: list[str] = field(default_factory=list)
    license_url: str = ""


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def _agent_titles(elem: ET.Element | None) -> list[str]:
    if elem is None:
        return []
    return [t.text.strip() for t in elem.iter(DC + "title") if t.text and t.text.strip()]


def parse_metadata(svg_path: Path) -> ClipartMeta:
    """Dublin Core fields of the SVG's <cc:Work> (empty ClipartMeta if absent or unparsable)."""
    try:
        root = ET.parse(svg_path).getroot()
    except (ET.ParseError, OSError, ValueError):
        return ClipartMeta()
    work = next((e for e in root.iter() if _local(e.tag) == "Work"), None)
    if work is None:
        return ClipartMeta()
    meta = ClipartMeta()
    title = work.find(DC + "title")
    meta.title = (title.text or "").strip() if title is not None else ""
    desc = work.find(DC + "description")
    meta.description = (desc.text or "").strip() if desc is not None else ""
    subject = work.find(DC + "subject")
    if subject is not None:
        meta.keywords = [li.text.strip() for li in subject.iter(RDF + "li") if li.text and li.text.strip()]
    for role in ("creator", "publisher", "rights"):
        meta.authors.extend(_agent_titles(work.find(DC + role)))
    lic = next((e for e in work if _local(e.tag) == "license"), None)
    if lic is not None:
        meta.license_url = lic.get(RDF + "resource", "")
    return meta


_CARD_SUITS = {"h": "hearts", "d": "diamonds", "c": "clubs", "s": "spades"}
_CARD_RANKS = {"a": "ace", "j": "jack", "q": "queen", "k": "king", "2": "two", "3": "three", "4": "four", "5": "five",
               "6": "six", "7": "seven", "8": "eight", "9": "nine", "10": "ten"}


def playing_card_caption(stem: str) -> str:
    """'white_h_9' -> 'nine of hearts playing card' ('' if the name is not deck_suit_rank)."""
    parts = stem.lower().split("_")
    if len(parts) >= 3 and parts[-2] in _CARD_SUITS and parts[-1] in _CARD_RANKS:
        return f"{_CARD_RANKS[parts[-1]]} of {_CARD_SUITS[parts[-2]]} playing card"
    return ""


def filename_caption(stem: str, authors: list[str]) -> str:
    """'chemistry_flask_matthew__02' -> 'chemistry flask' (drops counters, codes such as
    '97pt07step', and author name parts)."""
    words = _TRAILING_NUMBER.sub("", stem).replace("_", " ").replace("-", " ").split()
    words = [w for w in (_TRAILING_NUMBER.sub("", w) for w in words) if w and not any(ch.isdigit() for ch in w)]
    author_words = [w.casefold() for a in authors for w in re.split(r"\W+", a) if len(w) > 2]
    kept = [w for w in words if not any(len(w) >= 3 and aw.startswith(w.casefold()) for aw in author_words)]
    while kept and len(kept[-1]) == 1:  # truncated name initials: 'cross hand drawn linda k'
        kept.pop()
    return clean_caption(" ".join(kept))


def _is_keyword(text: str) -> bool:
    return caption_key(text) not in KEYWORD_STOPLIST and not is_boilerplate(text)


def collection_titles(metas: list[ClipartMeta], min_count: int = 5) -> frozenset[str]:
    """Titles shared by at least `min_count` files: collection names ('UK roadsigns', 'card'), not
    descriptions of the individual picture. Returned as caption_key() forms."""
    counts: dict[str, int] = {}
    for m in metas:
        key = caption_key(m.title)
        counts[key] = counts.get(key, 0) + 1
    return frozenset(k for k, n in counts.items() if k and n >= min_count)


def clipart_captions(
    meta: ClipartMeta, stem: str, category: list[str], common_titles: frozenset[str] = frozenset()
) -> tuple[str, list[str]] | None:
    """(primary caption, alternatives) or None when nothing informative is known about the picture.

    Priority for the primary caption: a title that is not boilerplate nor an author's name, then a
    short description, then the cleaned file name. Keywords, description and folder names become
    the alternatives. Titles in `common_titles` (see collection_titles) count as boilerplate.
    """
    title = clean_caption(meta.title)
    if caption_key(title) in common_titles:
        title = ""
    desc = clean_caption(meta.description)
    from_name = playing_card_caption(stem) or filename_caption(stem, meta.authors)
    candidates = [
        playing_card_caption(stem),
        title if title and not is_boilerplate(title, meta.authors) else "",
        desc if desc and len(desc) <= 80 and not is_boilerplate(desc, meta.authors) else "",
        from_name if from_name and not is_boilerplate(from_name, meta.authors) else "",
    ]
    primary = next((c for c in candidates if c), "")
    if not primary:
        return None
    keywords = [k for k in (clean_caption(k) for k in meta.keywords) if k and _is_keyword(k)]
    long_desc = desc if desc and len(desc) <= 200 and not is_boilerplate(desc, meta.authors) else ""
    cats = [clean_caption(c) for c in category if c]
    alts = unique_captions(primary, [*candidates, long_desc, *keywords, *[c for c in cats if _is_keyword(c)]], max_chars=200)
    return primary, alts
