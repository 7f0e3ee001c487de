"""The colour test: does "a red lit candle" rank the red candle first among the candle's colourings?

    python -m mmsearch.train.colour_eval /work/data-build/manifests/colour_test.jsonl \\
        --model mmsearch-lite --baseline mmsearch-lite:bridge

The manifest (data/recipes/colour_build.py) holds each object drawn in several colours; rows carry
``image``, ``text`` ("a red lit candle"), ``concept`` (the object) and ``colour``. For every row's text
the object's own versions are ranked by the model's similarity; a hit is the asked colour ranked first.
Only the colour differs between the versions, so chance is 1 / (colours per object) and anything above
it is the model reading colour. Also reported: which colour the model prefers when it is wrong (a model
blind to colour tends to favour one colouring whatever is asked).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
from collections import Counter
from pathlib import Path
from typing import Sequence

import numpy as np

from mmsearch.train.data import load_examples

log = logging.getLogger(__name__)

ENCODE_BATCH = 32


def colour_first_rate(image_embeddings: np.ndarray, text_embeddings: np.ndarray, objects: Sequence[str], colours: Sequence[str]) -> dict:
    """Row i's text against the images of row i's object: the share ranked right, chance, wrong picks."""
    by_object: dict[str, list[int]] = {}
    for i, obj in enumerate(objects):
        by_object.setdefault(obj, []).append(i)
    hits, chance, wrong = [], [], Counter()
    for i, obj in enumerate(objects):
        versions = by_object[obj]
        scores = image_embeddings[versions] @ text_embeddings[i]
        picked = colours[versions[int(np.argmax(scores))]]
        hits.append(picked == colours[i])
        chance.append(1 / len(versions))
        if picked != colours[i]:
            wrong[picked] += 1
    return {"queries": len(hits), "objects": len(by_object), "asked_colour_first": round(float(np.mean(hits)), 4) if hits else 0.0,
            "chance": round(float(np.mean(chance)), 4) if chance else 0.0, "wrong_picks": dict(wrong.most_common())}


def evaluate_colours(manifest: Path, spec: str, encoder_factory=None) -> dict:
    """Embed the manifest's pictures and texts with ``spec`` and score the colour test."""
    from mmsearch.imaging.decode import open_image

    examples = load_examples(manifest)
    colours = [str(ex.meta.get("colour", "")) for ex in examples]
    if not all(colours):
        raise ValueError(f"{manifest}: every row needs a 'colour' column (build it with data/recipes/colour_build.py)")
    if encoder_factory is None:
        from mmsearch.encoders import load_encoder

        encoder_factory = load_encoder
    encoder = encoder_factory(spec)
    images = np.concatenate([encoder.encode_images([open_image(ex.image_path) for ex in examples[s : s + ENCODE_BATCH]])
                             for s in range(0, len(examples), ENCODE_BATCH)])
    texts = encoder.encode_texts([ex.caption for ex in examples])
    result = colour_first_rate(images, texts, [ex.concept or ex.image_path for ex in examples], colours)
    return {"spec": spec, "model_id": encoder.model_id, **result}


def main() -> None:
    p = argparse.ArgumentParser(description="the colour test: asked colour ranked first among an object's colourings")
    p.add_argument("manifest", type=Path)
    p.add_argument("--model", default="mmsearch-lite")
    p.add_argument("--baseline", action="append", default=[], help="more models to score the same way (repeatable)")
    p.add_argument("--json-out", type=Path)
    args = p.parse_args()
    logging.basicConfig(level=logging.WARNING)
    results = [evaluate_colours(args.manifest, spec) for spec in [args.model, *args.baseline]]
    for r in results:
        print(f"{r['spec']}: asked colour first {r['asked_colour_first']:.3f} (chance {r['chance']:.3f}, {r['queries']} queries, "
              f"{r['objects']} objects); wrong picks {r['wrong_picks']}")
    if args.json_out:
        args.json_out.write_text(json.dumps({"manifest": os.fspath(args.manifest), "models": results}, indent=2))


if __name__ == "__main__":
    main()
