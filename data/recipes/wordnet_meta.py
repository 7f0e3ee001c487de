"""Read the WordNet 3.0 noun database (Debian `wordnet-base`) into a small in-memory graph.

Why WordNet: ImageNet's class ids *are* WordNet 3.0 noun offsets (n02403003 = "ox"), so every
class has its synonyms, its gloss and its hypernym chain (tabby > domestic cat > cat > feline), and
any noun a user types ("zebu") reaches the 1000 classes through the graph ("zebu" is a kind of
"cattle", whose kinds include the class "ox"). Only the noun part is read (`data.noun`,
`index.noun`, `noun.exc`); the file format is documented in wndb(5).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

WORDNET_DIR = Path("/usr/share/wordnet")
HYPERNYM_POINTERS = ("@", "@i")  # hypernym, instance hypernym


@dataclass
class Synset:
    offset: int
    lemmas: list[str]  # in WordNet's order, '_' -> ' '
    gloss: str
    hypernyms: list[int] = field(default_factory=list)


def parse_data_line(line: str) -> Synset | None:
    """One line of data.noun -> Synset (None for the licence header)."""
    if not line or line.startswith(" "):
        return None
    body, _, gloss = line.partition(" | ")
    fields = body.split()
    offset, words = int(fields[0]), int(fields[3], 16)
    lemmas = [fields[4 + 2 * i].replace("_", " ") for i in range(words)]
    at = 4 + 2 * words
    pointers = int(fields[at])
    hypernyms = []
    for i in range(pointers):
        symbol, target, pos = fields[at + 1 + 4 * i : at + 4 + 4 * i]
        if symbol in HYPERNYM_POINTERS and pos == "n":
            hypernyms.append(int(target))
    return Synset(offset, [_strip_marker(lemma) for lemma in lemmas], gloss.strip(), hypernyms)


def _strip_marker(lemma: str) -> str:
    """Adjective-style markers such as '(p)' never occur on nouns, but syntactic markers like
    'mouse(a)' would; drop anything from '(' on."""
    return lemma.split("(")[0].strip()


def read_synsets(folder: Path = WORDNET_DIR) -> dict[int, Synset]:
    synsets = {}
    with open(folder / "data.noun", encoding="latin-1") as fh:
        for line in fh:
            synset = parse_data_line(line.rstrip("\n"))
            if synset is not None:
                synsets[synset.offset] = synset
    return synsets


def read_index(folder: Path = WORDNET_DIR) -> dict[str, list[int]]:
    """lemma (lower case, spaces) -> its noun synsets, most frequent sense first (index.noun order)."""
    index = {}
    with open(folder / "index.noun", encoding="latin-1") as fh:
        for line in fh:
            if line.startswith(" "):
                continue
            fields = line.split()
            lemma, synset_count, pointer_count = fields[0], int(fields[2]), int(fields[3])
            offsets = fields[4 + pointer_count + 2 : 4 + pointer_count + 2 + synset_count]
            index[lemma.replace("_", " ")] = [int(o) for o in offsets]
    return index


def read_exceptions(folder: Path = WORDNET_DIR) -> dict[str, str]:
    """Irregular plurals: 'mice' -> 'mouse', 'geese' -> 'goose'."""
    exceptions = {}
    with open(folder / "noun.exc", encoding="latin-1") as fh:
        for line in fh:
            fields = line.split()
            if len(fields) >= 2:
                exceptions.setdefault(fields[0].replace("_", " "), fields[1].replace("_", " "))
    return exceptions


def hypernym_chain(synsets: dict[int, Synset], offset: int, depth: int) -> list[int]:
    """The first-hypernym path upwards, at most ``depth`` steps (tabby -> domestic cat -> cat)."""
    chain = []
    current = synsets.get(offset)
    while current is not None and current.hypernyms and len(chain) < depth:
        chain.append(current.hypernyms[0])
        current = synsets.get(current.hypernyms[0])
    return chain


def ancestors(synsets: dict[int, Synset], offset: int, depth: int) -> dict[int, int]:
    """Every hypernym up to ``depth`` steps (all paths) -> its distance."""
    found: dict[int, int] = {}
    frontier = [offset]
    for distance in range(1, depth + 1):
        nxt = []
        for node in frontier:
            for parent in synsets[node].hypernyms if node in synsets else ():
                if parent not in found:
                    found[parent] = distance
                    nxt.append(parent)
        frontier = nxt
    return found
