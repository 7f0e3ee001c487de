"""Build mmsearch-lite's hub file: the caption bank and constants of the hub channel.

    python -m mmsearch.train.hub_bank \\
        --captions data/build/manifests/train.jsonl --captions data/build/manifests/train_clipart.jsonl \\
        --captions data/build/manifests/val_stamps.jsonl --pictures data/build/manifests/derived/train_plus_vs.jsonl

The bank is every distinct caption of the ``--captions`` manifests (training data: typical queries,
none of the test splits'), embedded by the model the file is for (its colour channel included, the
hub channel off) and stored as float16. ``centre`` is the median hub prior of up to ``--sample``
pictures of ``--pictures`` (training pictures), so the typical picture's extra coordinate is 0 and
the channel changes norms as little as it can. ``--beta`` and ``--lam`` were chosen on the two
cross-validation folds of the photo validation set (docs/model-card.md, "The hub channel"); the file records
its data, constants and this command. See mmsearch.encoders.hub_channel for what the channel does.
"""

from __future__ import annotations

import argparse
import logging
import random
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

BETA = 20.0
LAM = 1.0
TEXT_COORDINATE = 0.5
SAMPLE = 2000


def bank_captions(manifests: list[Path]) -> list[str]:
    """The distinct captions of the manifests' captioned pictures, sorted (a stable bank order)."""
    from mmsearch.train.data import load_examples

    return sorted({example.caption for manifest in manifests for example in load_examples(manifest)})


def sample_pictures(manifests: list[Path], sample: int, seed: int = 0) -> list[str]:
    """Up to ``sample`` distinct picture paths of the manifests, drawn evenly at random (fixed seed)."""
    from mmsearch.train.data import load_examples

    paths = sorted({example.image_path for manifest in manifests for example in load_examples(manifest)})
    random.Random(seed).shuffle(paths)
    return sorted(paths[:sample])


def build(encoder, captions: list[str], pictures: list[str], beta: float, lam: float, text_coordinate: float):
    """-> the HubConfig for ``encoder`` (hub channel off) with the bank of ``captions`` and the centre of ``pictures``."""
    from mmsearch.encoders.hub_channel import HubConfig
    from mmsearch.train.calibrate import encode_image_files

    bank = encoder.encode_texts(captions).astype(np.float16).astype(np.float32)  # as stored: the centre sees the same bank
    config = HubConfig(bank, beta, lam, text_coordinate, 0.0, encoder.model_id)
    priors = config.priors(encode_image_files(encoder, pictures))
    config.centre = float(np.median(priors))
    log.info("bank of %d captions; centre %.4f (prior spread: sd %.4f, 5-95%% %.4f..%.4f over %d pictures)", len(captions),
             config.centre, priors.std(), *np.percentile(priors, [5, 95]), len(pictures))
    return config


def main() -> None:
    from mmsearch.encoders import load_encoder
    from mmsearch.encoders.hub_channel import hub_config_path
    from mmsearch.train.tool_args import parse_tool_args, tool_weights

    p = argparse.ArgumentParser(description="build mmsearch-lite's hub file (caption bank of the hub channel)")
    p.add_argument("--captions", type=Path, action="append", required=True, help="training manifest whose captions join the bank (repeatable)")
    p.add_argument("--pictures", type=Path, action="append", required=True, help="training manifest whose pictures set the centre (repeatable)")
    p.add_argument("--sample", type=int, default=SAMPLE, help="pictures drawn for the centre")
    p.add_argument("--beta", type=float, default=BETA)
    p.add_argument("--lam", type=float, default=LAM)
    p.add_argument("--text-coordinate", type=float, default=TEXT_COORDINATE)
    p.add_argument("--weights", type=Path, help="mmsearch-lite weights to build for (default: the shipped file), e.g. a fold's")
    p.add_argument("--out", type=Path, help="default: beside the weights")
    args = parse_tool_args(p)
    weights = tool_weights(args.weights)
    encoder = load_encoder(f"mmsearch-lite:{weights}", "cpu", hubs="off")
    config = build(encoder, bank_captions(args.captions), sample_pictures(args.pictures, args.sample), args.beta, args.lam, args.text_coordinate)
    config.chosen_on = {"captions": [path.name for path in args.captions], "pictures": [path.name for path in args.pictures],
                        "sample": args.sample, "bank_size": len(config.bank)}
    config.command = " ".join(["python -m mmsearch.train.hub_bank", *(f"--captions {path.name}" for path in args.captions),
                               *(f"--pictures {path.name}" for path in args.pictures), f"--sample {args.sample}",
                               f"--beta {args.beta:g}", f"--lam {args.lam:g}", f"--text-coordinate {args.text_coordinate:g}"])
    out = config.save(args.out or hub_config_path(weights))
    log.info("wrote %s for model %s", out, config.model_id)


if __name__ == "__main__":
    main()
