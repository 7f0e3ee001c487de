"""Write the derived manifests the shipped mmsearch-lite heads are trained and chosen on.

    python data/recipes/derived_manifests.py --manifests data/build/manifests

Why a script: the heads' release is made from manifests that no build writes directly, and a model card
that says "these were the training rows" must be reproducible. Written into ``MANIFESTS/derived/``
(image paths made absolute, so the files can be read from anywhere):

* ``train_no_emojione.jsonl``, ``val_combined.jsonl``: the emoji training rows without the emojione
  style, and the emoji validation concepts without emojione plus every emojione training row (an
  unseen-style validation set, as for the heads of release 4329569433b3).
* ``vs_A.jsonl``, ``vs_B.jsonl``: ``val_stamps`` halved by concept (salt ``mmsearch-data-v1:stamps-cv``)
  for two-fold cross-validation: heads trained with one half are scored on the other, which chose the
  mix, checked the colour weight and fitted the merged-list calibration of the photo-trained release.
* ``train_plus_A.jsonl``, ``train_plus_B.jsonl``, ``train_plus_vs.jsonl``: the emoji training rows plus
  the photos of one half, of the other, of all of ``val_stamps`` (the shipped heads). Photo rows keep
  only their own name as alternative text: the folder keywords a stamp also carries ("birds",
  "animals") are shared by many pictures, so as captions they would teach that unrelated pictures match.
* ``valc_plus_A.jsonl``, ``valc_plus_B.jsonl``: ``val_combined`` plus the half a fold did not train on
  (the trainer keeps the epoch best on it).

``test_stamps_split`` is never written into any of them: it stays the once-only test of the photo side.
"""
from __future__ import annotations

import argparse
import logging
from pathlib import Path

from manifests import read_jsonl, write_jsonl
from splits import stable_fraction

log = logging.getLogger("derived_manifests")

CV_SALT = "mmsearch-data-v1:stamps-cv"
HELD_OUT_STYLE = "emojione"


def absolute(rows: list[dict], folder: Path) -> list[dict]:
    """Rows with ``image`` resolved against the manifest's folder (manifests store it relative)."""
    return [{**row, "image": str((folder / row["image"]).resolve())} for row in rows]


def stamps_half(row: dict) -> str:
    """"A" or "B": a stable half by concept, so no concept is in both folds."""
    return "A" if stable_fraction(row["concept"], CV_SALT) < 0.5 else "B"


def for_training(row: dict) -> dict:
    """A photo row as a training pair: its own name only, without the folder keywords."""
    return {**row, "texts": list(row.get("texts", []))[:1]}


def derive(folder: Path) -> dict[str, list[dict]]:
    train = absolute(read_jsonl(folder / "train.jsonl"), folder)
    val = absolute(read_jsonl(folder / "val.jsonl"), folder)
    stamps = absolute(read_jsonl(folder / "val_stamps.jsonl"), folder)
    train_no_held = [r for r in train if r["style"] != HELD_OUT_STYLE]
    val_combined = [r for r in val if r["style"] != HELD_OUT_STYLE] + [r for r in train if r["style"] == HELD_OUT_STYLE]
    halves = {h: [r for r in stamps if stamps_half(r) == h] for h in "AB"}
    return {
        "train_no_emojione": train_no_held,
        "val_combined": val_combined,
        "vs_A": halves["A"],
        "vs_B": halves["B"],
        "train_plus_A": train_no_held + [for_training(r) for r in halves["A"]],
        "train_plus_B": train_no_held + [for_training(r) for r in halves["B"]],
        "train_plus_vs": train_no_held + [for_training(r) for r in stamps],
        "valc_plus_A": val_combined + halves["A"],
        "valc_plus_B": val_combined + halves["B"],
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--manifests", type=Path, required=True, help="the build's manifests folder (data/build/manifests)")
    args = p.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    for name, rows in derive(args.manifests).items():
        n = write_jsonl(args.manifests / "derived" / f"{name}.jsonl", rows)
        log.info("%s: %d rows", name, n)


if __name__ == "__main__":
    main()
