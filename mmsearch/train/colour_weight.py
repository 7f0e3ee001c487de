"""Choose the colour channel's weight on validation data and write ``mmsearch-lite.colour.json``.

    python -m mmsearch.train.colour_weight --colour /work/data-build/manifests/colour_val.jsonl \\
        --retrieval /work/data-build/manifests/val_stamps.jsonl

Why a command: the weight trades reading colour (the colour test, data/recipes/colour_build.py) against
ordinary retrieval (a strong weight lets any red picture outrank the asked object), and it must be chosen
on validation data only and be reproducible. The towers run once (channel off); each weight of the grid
is then scored on the cached embeddings, with the same fusion the encoder uses
(mmsearch.encoders.colour_channel): the colour test's "asked colour first" on ``--colour``, and
text->image R@10 and image->text R@1 and R@10 on ``--retrieval`` (unique captions, relevance by
concept, as ``mmsearch eval`` counts them; repeatable) plus, on the colour set itself, whether the asked
object (in any colour) is in the top 10 among all its pictures. Allowed are the weights under which no
recall falls more than ``--tolerance`` below the channel off; of those, the smallest whose colour score
is within ``--colour-slack`` of the best is chosen (see ``choose``).
Report the test splits once afterwards with ``mmsearch.train.colour_eval`` and ``mmsearch eval``.
"""

from __future__ import annotations

import argparse
import logging
import math
from pathlib import Path
from typing import Sequence

import numpy as np

from mmsearch.encoders.base import l2_normalise
from mmsearch.encoders.colour_pixels import DESCRIPTOR_VERSION
from mmsearch.encoders.colour_words import text_colour_vectors
from mmsearch.train.colour_eval import colour_first_rate
from mmsearch.train.data import caption_groups, group_keys, load_examples

log = logging.getLogger(__name__)

GRID = (0.0, 0.02, 0.05, 0.075, 0.1, 0.125, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0)
BATCH = 32


def fuse(embeddings: np.ndarray, colours: np.ndarray, weight: float) -> np.ndarray:
    """What ColourChannelEncoder returns for these inner embeddings and colour vectors."""
    return l2_normalise(np.concatenate([embeddings, math.sqrt(weight) * colours], axis=1))


def recalls(image_vectors: np.ndarray, text_vectors: np.ndarray, image_groups: Sequence[str],
            text_groups: Sequence[set[str]]) -> dict[str, float]:
    """Text->image R@10 (a picture of the text's group in its top 10) and image->text R@1 and R@10 (a text
    of the picture's group first / in its top 10), as ``mmsearch eval`` counts them."""
    scores = text_vectors @ image_vectors.T
    t2i = np.argsort(-scores, axis=1, kind="stable")[:, :10]
    i2t = np.argsort(-scores.T, axis=1, kind="stable")[:, :10]
    return {"t2i_r10": float(np.mean([any(image_groups[j] in groups for j in row) for row, groups in zip(t2i, text_groups)])),
            "i2t_r1": float(np.mean([image_groups[i] in text_groups[row[0]] for i, row in enumerate(i2t)])),
            "i2t_r10": float(np.mean([any(image_groups[i] in text_groups[j] for j in row) for i, row in enumerate(i2t)]))}


class EmbeddedSet:
    """A manifest's pictures and texts embedded once with the channel off, plus their colour vectors."""

    def __init__(self, manifest: Path, encoder) -> None:
        import torch

        from mmsearch.imaging.decode import open_image

        examples = load_examples(manifest)
        self.examples = examples
        self.groups = group_keys(examples)
        transform = encoder.image_transform
        vectors, colours = [], []
        for start in range(0, len(examples), BATCH):
            pixels = torch.stack([transform(open_image(ex.image_path)) for ex in examples[start : start + BATCH]])
            vectors.append(encoder.inner.encode_image_tensors(pixels))
            colours.append(encoder.colour_of_pixels(pixels))
        self.image_vectors, self.image_colours = np.concatenate(vectors), np.concatenate(colours)
        by_caption = caption_groups(examples, self.groups)
        self.captions, self.caption_groups = list(by_caption), list(by_caption.values())
        self.caption_vectors = encoder.inner.encode_texts(self.captions)
        self.caption_colours = text_colour_vectors(self.captions)

    def recalls(self, weight: float) -> dict[str, float]:
        return recalls(fuse(self.image_vectors, self.image_colours, weight), fuse(self.caption_vectors, self.caption_colours, weight),
                       self.groups, self.caption_groups)

    def colour_first(self, weight: float) -> float:
        rows = [self.captions.index(ex.caption) for ex in self.examples]
        texts = fuse(self.caption_vectors, self.caption_colours, weight)[rows]
        result = colour_first_rate(fuse(self.image_vectors, self.image_colours, weight), texts,
                                   [ex.concept or ex.image_path for ex in self.examples], [str(ex.meta.get("colour")) for ex in self.examples])
        return float(result["asked_colour_first"])


def choose(colour_set: EmbeddedSet, retrieval: dict[str, EmbeddedSet], grid: Sequence[float], tolerance: float,
           colour_slack: float) -> tuple[float, list[dict]]:
    """-> (chosen weight, one row of scores per weight of ``grid``, which must hold 0).

    Allowed: weights under which no recall (text->image R@10, image->text R@1 and R@10 of each
    ``retrieval`` set, and the colour set's own object R@10) falls more than ``tolerance`` below the
    channel off. Image->text matters here: every picture has a colour but few texts name one, so a
    strong weight pulls the captions that name the picture's colour above its right caption. Chosen: the
    smallest allowed weight whose colour score is within ``colour_slack`` of the best allowed one."""
    rows = []
    for w in grid:
        row = {"weight": w, "colour_first": round(colour_set.colour_first(w), 4),
               "colour_set_object_r10": round(colour_set.recalls(w)["t2i_r10"], 4)}
        for name, data in retrieval.items():
            row.update({f"{name}_{key}": round(value, 4) for key, value in data.recalls(w).items()})
        rows.append(row)
    base = next(r for r in rows if r["weight"] == 0.0)
    guarded = [key for key in base if key not in ("weight", "colour_first")]
    allowed = [r for r in rows if all(r[key] >= base[key] - tolerance for key in guarded)]
    best = max(r["colour_first"] for r in allowed)
    return min(r["weight"] for r in allowed if r["colour_first"] >= best - colour_slack), rows


def main() -> None:
    from mmsearch.encoders import load_encoder
    from mmsearch.encoders.colour_channel import ColourChannelEncoder, ColourConfig, colour_config_path
    from mmsearch.train.tool_args import parse_tool_args, tool_weights
    from mmsearch.hashing import sha256_file

    p = argparse.ArgumentParser(description="choose mmsearch-lite's colour weight on validation data")
    p.add_argument("--colour", type=Path, required=True, help="colour test manifest of the validation split (colour_val.jsonl)")
    p.add_argument("--retrieval", type=Path, action="append", required=True,
                   help="retrieval validation manifest (val_stamps.jsonl; repeatable, e.g. the emoji val.jsonl too)")
    p.add_argument("--tolerance", type=float, default=0.01, help="recall drop allowed against the channel off (about half a standard error at ~400 queries)")
    p.add_argument("--colour-slack", type=float, default=0.01, help="colour score below the best that still counts as the best")
    p.add_argument("--grid", type=float, nargs="+", default=list(GRID))
    p.add_argument("--weights", type=Path, help="mmsearch-lite weights to choose for (default: the shipped file), e.g. a "
                   "cross-validation fold's heads, scored on the stamps it was not trained on")
    p.add_argument("--out", type=Path, help="default: beside the weights")
    p.add_argument("--dry-run", action="store_true", help="log the table, write nothing")
    args = parse_tool_args(p)
    weights = tool_weights(args.weights)
    grid = sorted({0.0, *args.grid})
    # the hub channel is built after the colour weight, so it is off here
    encoder = ColourChannelEncoder(load_encoder(f"mmsearch-lite:{weights}", "cpu", colour="off", hubs="off"), ColourConfig(1.0))
    colour_set = EmbeddedSet(args.colour, encoder)
    retrieval = {path.stem: EmbeddedSet(path, encoder) for path in args.retrieval}
    weight, rows = choose(colour_set, retrieval, grid, args.tolerance, args.colour_slack)
    for row in rows:
        scores = ", ".join(f"{key} {value:.3f}" for key, value in row.items() if key != "weight")
        log.info("weight %.3f: %s%s", row["weight"], scores, "  <- chosen" if row["weight"] == weight else "")
    if args.dry_run:
        return
    command = " ".join(["python -m mmsearch.train.colour_weight", f"--colour {args.colour.name}",
                        *(f"--retrieval {path.name}" for path in args.retrieval),
                        f"--tolerance {args.tolerance}", f"--colour-slack {args.colour_slack}"])
    config = ColourConfig(weight, sha256_file(weights), DESCRIPTOR_VERSION,
                          chosen_on={"colour": args.colour.name, "retrieval": [path.name for path in args.retrieval],
                                     "tolerance": args.tolerance, "colour_slack": args.colour_slack, "grid": rows},
                          command=command)
    out = config.save(args.out or colour_config_path(weights))
    log.info("wrote %s (weight %s)", out, weight)


if __name__ == "__main__":
    main()
