"""Read Tux Paint stamp descriptions and turn them into captions.

Each stamp `NAME.png`/`NAME.svg` has a `NAME.txt` whose first line is the English description
("A frog.", "A “Stop” sign. Stop here, then go when it’s your turn.") followed by `lang.utf8=...`
translations. Pure functions apart from `read_english_description`, so the unit tests import this
module on its own.
"""
from __future__ import annotations

import re
from pathlib import Path

from textclean import caption_key, clean_caption, unique_captions

_SENTENCE_END = re.compile(r"(?<=[.!?…])\s+")
_QUOTES = str.maketrans({"“": "", "”": "", "‘": "'", "’": "'", '"': ""})
_DIGITS = re.compile(r"\d+")


def read_english_description(txt: Path) -> str:
    """The first non-empty line of a stamp's description file that is not a translation ('' if none)."""
    try:
        lines = txt.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return ""
    for line in lines:
        line = line.strip()
        if line and ".utf8=" not in line:
            return line
    return ""


def first_sentence(text: str) -> str:
    """'A “Stop” sign. Stop here, then go.' -> 'A Stop sign' (curly quotes, a leading dash and end punctuation dropped)."""
    plain = text.translate(_QUOTES).strip().lstrip("–-— ").strip()
    return clean_caption(_SENTENCE_END.split(plain, 1)[0].rstrip(".!?… "))


def name_caption(stem: str) -> str:
    """'helmeted_guineafowl' -> 'helmeted guineafowl', 'frog-1' -> 'frog', '025quarter' -> 'quarter'."""
    return clean_caption(" ".join(_DIGITS.sub(" ", stem).replace("-", " ").replace("_", " ").split()))


def stamp_captions(description: str, stem: str, folders: list[str]) -> tuple[str, list[str]] | None:
    """(primary caption, alternatives) or None when the stamp has no English description.

    The primary caption is the description's first sentence; the file name, the whole description
    and the folder names (e.g. 'animals', 'birds') become the alternatives."""
    primary = first_sentence(description)
    if not primary or len(caption_key(primary)) < 2:
        return None
    alts = [name_caption(stem), clean_caption(description.translate(_QUOTES)), *(clean_caption(f) for f in reversed(folders))]
    return primary, unique_captions(primary, alts, max_chars=200)
