"""The colour words of a text ("a crimson dress", "navy shoes") as a vector over the basic colour names.

Why: the other half of the colour channel (``mmsearch.encoders.colour_pixels`` reads pictures). It is
read from the string, not from the text tower, so it needs no graph and no training; a text naming no
colour gets the zero vector, which leaves its ranking exactly as without the channel.

Only words that are colours whatever the sentence are listed (with common synonyms and "-ish" forms);
nouns that merely imply one ("lemon", "rose", "chocolate", "lime", "cream") are left out, so
"a lemon" is not turned into a colour query. Known limits: a homograph such as "orange" (the fruit) or
"black friday" reads as a colour, and a negation ("not red") is not understood.
"""

from __future__ import annotations

import re
from typing import Sequence

import numpy as np

from mmsearch.encoders.colour_pixels import COLOUR_NAMES

_BASE = {name: {name: 1.0} for name in COLOUR_NAMES}
_SYNONYMS: dict[str, dict[str, float]] = {
    "gray": {"grey": 1.0}, "greyish": {"grey": 1.0}, "grayish": {"grey": 1.0}, "silver": {"grey": 1.0}, "silvery": {"grey": 1.0},
    "charcoal": {"grey": 1.0, "black": 1.0},
    "reddish": {"red": 1.0}, "crimson": {"red": 1.0}, "scarlet": {"red": 1.0}, "vermilion": {"red": 1.0},
    "carmine": {"red": 1.0}, "ruby": {"red": 1.0}, "maroon": {"red": 1.0, "brown": 1.0}, "burgundy": {"red": 1.0, "purple": 0.5},
    "orangey": {"orange": 1.0}, "orangish": {"orange": 1.0}, "tangerine": {"orange": 1.0}, "amber": {"orange": 1.0, "yellow": 1.0},
    "yellowish": {"yellow": 1.0}, "gold": {"yellow": 1.0}, "golden": {"yellow": 1.0}, "mustard": {"yellow": 1.0, "brown": 0.5},
    "greenish": {"green": 1.0}, "emerald": {"green": 1.0}, "olive": {"green": 1.0, "brown": 0.5}, "jade": {"green": 1.0},
    "teal": {"green": 1.0, "blue": 1.0}, "turquoise": {"blue": 1.0, "green": 1.0}, "aqua": {"blue": 1.0, "green": 0.5},
    "bluish": {"blue": 1.0}, "blueish": {"blue": 1.0}, "navy": {"blue": 1.0}, "azure": {"blue": 1.0}, "cobalt": {"blue": 1.0},
    "cyan": {"blue": 1.0, "green": 0.3}, "indigo": {"blue": 1.0, "purple": 1.0},
    "purplish": {"purple": 1.0}, "violet": {"purple": 1.0}, "lilac": {"purple": 1.0, "pink": 0.5}, "mauve": {"purple": 1.0, "pink": 0.5},
    "magenta": {"purple": 1.0, "pink": 1.0}, "fuchsia": {"pink": 1.0, "purple": 0.5},
    "pinkish": {"pink": 1.0},
    "brownish": {"brown": 1.0}, "tan": {"brown": 1.0}, "beige": {"brown": 1.0, "white": 1.0}, "khaki": {"brown": 1.0},
    "bronze": {"brown": 1.0, "orange": 0.5},
    "blackish": {"black": 1.0}, "ebony": {"black": 1.0},
    "whitish": {"white": 1.0}, "ivory": {"white": 1.0},
}
COLOUR_WORDS: dict[str, dict[str, float]] = {**_BASE, **_SYNONYMS}
_INDEX = {name: i for i, name in enumerate(COLOUR_NAMES)}
_WORD = re.compile(r"[a-z]+")


def colour_words(text: str) -> list[str]:
    """The colour words of ``text``, in order ("Navy-blue shoes" -> ['navy', 'blue'])."""
    return [word for word in _WORD.findall(text.lower()) if word in COLOUR_WORDS]


def text_colour_vector(text: str) -> np.ndarray:
    """``text`` -> float32 [11] over COLOUR_NAMES: its colour words' names summed and L2-normalised (so
    "red and white" asks for both equally), or all zeros when it names no colour."""
    vector = np.zeros(len(COLOUR_NAMES), dtype=np.float32)
    for word in colour_words(text):
        for name, weight in COLOUR_WORDS[word].items():
            vector[_INDEX[name]] += weight
    norm = float(np.linalg.norm(vector))
    return vector / norm if norm > 0 else vector


def text_colour_vectors(texts: Sequence[str]) -> np.ndarray:
    """Strings -> float32 [n, 11] (see text_colour_vector)."""
    if not texts:
        return np.zeros((0, len(COLOUR_NAMES)), dtype=np.float32)
    return np.stack([text_colour_vector(t) for t in texts])
