"""Concept keys and deterministic, hash-based split assignment.

Pure functions only. A split depends on nothing but the concept key and a salt, so it is the same on
every machine, for every package version, and independent of iteration order or of which styles
could be fetched.
"""
from __future__ import annotations

import hashlib

SKIN_TONE_CODEPOINTS = frozenset({0x1F3FB, 0x1F3FC, 0x1F3FD, 0x1F3FE, 0x1F3FF})
VARIATION_SELECTOR_16 = 0xFE0F
SPLIT_SALT = "mmsearch-data-v1"

TRAIN = "train"
VAL = "val"
TEST_CONCEPTS = "test_concepts"


def parse_codepoints(hexcode: str) -> list[int]:
    """'1F44B-1F3FB' / '1f44b_1f3fb' / 'emoji_u1f44b' -> [0x1F44B, 0x1F3FB]."""
    s = hexcode.strip().lower()
    for prefix in ("emoji_u", "u+"):
        if s.startswith(prefix):
            s = s[len(prefix) :]
    parts = [p for p in s.replace("_", "-").replace(" ", "-").split("-") if p]
    return [int(p, 16) for p in parts]


def format_codepoints(cps: list[int]) -> str:
    return "-".join(f"{cp:04X}" for cp in cps)


def normalize_hexcode(hexcode: str) -> str:
    """Canonical sequence key: upper-case, 4+ digits, without VS16 (FE0F), skin tones kept."""
    return format_codepoints([cp for cp in parse_codepoints(hexcode) if cp != VARIATION_SELECTOR_16])


def concept_key(hexcode: str) -> str:
    """Stable concept key of an emoji: the normalised sequence without VS16 and without skin tones,
    so every skin-tone variant of 'waving hand' is the same concept ('1F44B')."""
    return format_codepoints(
        [cp for cp in parse_codepoints(hexcode) if cp != VARIATION_SELECTOR_16 and cp not in SKIN_TONE_CODEPOINTS]
    )


def has_skin_tone(hexcode: str) -> bool:
    return any(cp in SKIN_TONE_CODEPOINTS for cp in parse_codepoints(hexcode))


def stable_fraction(key: str, salt: str = SPLIT_SALT) -> float:
    """Uniform number in [0, 1) derived from sha256(salt:key); the basis of every split decision."""
    digest = hashlib.sha256(f"{salt}:{key}".encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def concept_split(key: str, val_fraction: float = 0.05, test_fraction: float = 0.10, salt: str = SPLIT_SALT) -> str:
    """train / val / test_concepts for a concept key. Fractions are of concepts, not of images."""
    if val_fraction < 0 or test_fraction < 0 or val_fraction + test_fraction >= 1:
        raise ValueError("val_fraction and test_fraction must be >= 0 and sum to less than 1")
    u = stable_fraction(key, salt)
    if u < test_fraction:
        return TEST_CONCEPTS
    if u < test_fraction + val_fraction:
        return VAL
    return TRAIN


def pick_stable(key: str, options: list[str], salt: str = SPLIT_SALT) -> str:
    """Deterministically pick one of `options` for `key` (used to choose which skin tone to include)."""
    if not options:
        raise ValueError("no options to pick from")
    ordered = sorted(options)
    return ordered[int(stable_fraction(key, salt + ":pick") * len(ordered))]
