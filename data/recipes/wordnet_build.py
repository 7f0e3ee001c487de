"""Build the WordNet knowledge mmsearch-lite's bridge ships: enriched ImageNet class texts and a query lexicon.

    python data/recipes/wordnet_build.py --out mmsearch/encoders/weights/mmsearch-lite.wordnet.json.gz

Reads Debian `wordnet-base` (WordNet 3.0, /usr/share/wordnet) and the ImageNet synset lists inside the
`timm` wheel (timm/data/_info). Writes one gzipped JSON file with:

* ``class_texts``: per ImageNet-1k class (in timm's class order), the text whose MiniLM embedding stands
  for the class in the bridge: its synonyms, its hypernym chain and its gloss
  ("tabby, tabby cat, a kind of domestic cat, cat, feline: a cat with a grey or tawny coat ...");
* ``lexicon``: the nouns of ImageNet-21k (their WordNet lemmas) and of the 1000 classes' hypernyms,
  each mapped to the ImageNet-1k classes it reaches through the graph (``synsets`` holds each mapping
  once; ``lemmas`` maps a word's most frequent sense into it): a class itself, else the classes below it ("dog" -> the 118 dog
  breeds), else the classes below its nearest hypernym that has any ("zebu" -> "cattle" -> "ox").

Run time needs only this file (no WordNet package): the file is deterministic for a given WordNet and
timm, so rerunning the command rewrites the same bytes.
"""
from __future__ import annotations

import argparse
import gzip
import json
import logging
from pathlib import Path

from wordnet_meta import WORDNET_DIR, Synset, ancestors, hypernym_chain, read_exceptions, read_index, read_synsets

log = logging.getLogger(__name__)

CHAIN_DEPTH = 3  # hypernyms named in a class text
UP_STEPS = 2  # how far a query noun without classes below it climbs to find some
MAX_CLASSES = 160  # a noun reaching more classes than this ("organism") says nothing about a picture
MAX_CLASSES_ABOVE = 20  # the same for a noun that had to climb: its relatives must be few to be telling
FORMAT_VERSION = 1
COLOUR_LEMMAS = {"chromatic color", "achromatic color"}


def timm_info_dir() -> Path:
    import timm

    return Path(timm.__file__).resolve().parent / "data" / "_info"


def read_synset_ids(path: Path) -> list[int]:
    return [int(line.strip()[1:]) for line in path.read_text().splitlines() if line.strip()]


def class_text(synsets: dict[int, Synset], offset: int) -> str:
    """Synonyms, hypernym chain and gloss of one class: the text MiniLM embeds for it."""
    synset = synsets[offset]
    lemmas = list(dict.fromkeys(synset.lemmas))
    chain = [synsets[p].lemmas[0] for p in hypernym_chain(synsets, offset, CHAIN_DEPTH)]
    text = ", ".join(lemmas)
    if chain:
        text += ", a kind of " + ", ".join(chain)
    return f"{text}: {synset.gloss.split(';')[0].strip()}"


def classes_below(synsets: dict[int, Synset], classes: list[int]) -> dict[int, list[int]]:
    """synset -> the indices of the ImageNet-1k classes at or below it."""
    below: dict[int, list[int]] = {}
    for index, offset in enumerate(classes):
        below.setdefault(offset, []).append(index)
        for parent in ancestors(synsets, offset, 64):
            below.setdefault(parent, []).append(index)
    return below


def reach(synsets: dict[int, Synset], below: dict[int, list[int]], offset: int) -> list[int]:
    """The classes a noun sense reaches: at or below it, else below its nearest hypernym that has some."""
    if offset in below:
        found = set(below[offset])
        return sorted(found) if len(found) <= MAX_CLASSES else []
    up = ancestors(synsets, offset, UP_STEPS)
    for distance in range(1, UP_STEPS + 1):
        found = {c for parent, d in up.items() if d == distance for c in below.get(parent, ())}
        if found:
            return sorted(found) if len(found) <= MAX_CLASSES_ABOVE else []
    return []


def build(wordnet: Path, info: Path) -> dict:
    synsets = read_synsets(wordnet)
    classes = read_synset_ids(info / "imagenet_synsets.txt")
    vocabulary = set(read_synset_ids(info / "imagenet21k_goog_synsets.txt")) | set(classes)
    for offset in classes:
        vocabulary |= set(ancestors(synsets, offset, 64))
    below = classes_below(synsets, classes)
    mappings: list[list[int]] = []
    mapping_index: dict[tuple[int, ...], int] = {}
    lemmas: dict[str, int] = {}
    colours = {o for o, synset in synsets.items() if set(synset.lemmas) & COLOUR_LEMMAS}
    words = {lemma.lower() for offset in vocabulary if offset in synsets for lemma in synsets[offset].lemmas}
    for word, senses in read_index(wordnet).items():
        if word not in words:
            continue
        # A word's most frequent sense among the pictured ones decides (index.noun lists senses by
        # frequency; the vocabulary holds the senses ImageNet pictures): "shoe" is footwear, not a
        # brake shoe; "tiger" is the cat, not "a fierce person", which ImageNet does not picture.
        # Colour words are left to the colour channel: "red" would otherwise reach the Cincinnati Reds.
        if any(colour in ancestors(synsets, senses[0], 64) for colour in colours):
            continue
        pictured = [offset for offset in senses if offset in vocabulary]
        found = tuple(reach(synsets, below, pictured[0])) if pictured else ()
        if not found:
            continue
        slot = mapping_index.setdefault(found, len(mappings))
        if slot == len(mappings):
            mappings.append(list(found))
        lemmas[word] = slot
    plurals = {k: v for k, v in read_exceptions(wordnet).items() if v.lower() in lemmas}
    log.info("wordnet: %d classes, %d lemmas, %d class sets, %d irregular plurals", len(classes), len(lemmas), len(mappings), len(plurals))
    return {
        "format": FORMAT_VERSION,
        "source": "WordNet 3.0 (Debian wordnet-base) + timm ImageNet synset lists",
        "class_texts": [class_text(synsets, offset) for offset in classes],
        "synsets": mappings,
        "lemmas": dict(sorted(lemmas.items())),
        "plurals": dict(sorted(plurals.items())),
    }


def write(data: dict, out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    payload = json.dumps(data, separators=(",", ":"), sort_keys=True).encode()
    with open(tmp, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0, filename="") as fh:
        fh.write(payload)
    tmp.replace(out)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", type=Path, required=True, help="the .json.gz file to write")
    p.add_argument("--wordnet", type=Path, default=WORDNET_DIR, help="WordNet 3.0 dict folder (default /usr/share/wordnet)")
    args = p.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    write(build(args.wordnet, timm_info_dir()), args.out)
    log.info("wrote %s (%d bytes)", args.out, args.out.stat().st_size)


if __name__ == "__main__":
    main()
