"""Choose mmsearch-lite's bridge/learned mix on photo validation data: ``python -m mmsearch.train.bridge_mix``.

    git show 462965f:mmsearch/encoders/weights/mmsearch-lite.safetensors > heads.safetensors  # the heads' release, sha256 4329569433b3...
    python -m mmsearch.train.bridge_mix --wordnet data/build/wordnet.json.gz --weights heads.safetensors \\
        --colour-weight 0.15 --photos data/build/manifests/val_stamps.jsonl --guard data/build/manifests/val.jsonl \\
        --colour data/build/manifests/colour_val.jsonl --out mmsearch/encoders/weights/mmsearch-lite.safetensors

Why a command: the mix decides whose judgement wins, the training-free bridge (ImageNet's classes in
MiniLM's space, strong on photos of things ImageNet names) or the heads trained on emoji and clip art
(strong on drawn pictures and on concepts ImageNet has no class for). The shipped mix (3.0) was picked on
an unseen emoji style; this picks it on photos, with the emoji validation concepts as a guard, and must be
reproducible.

The towers run once (torch fp32) over every set; each mix of the grid is then the model's own ``_join``
of the cached tower features with the WordNet class texts in the bridge, plus the colour channel at
``--colour-weight`` (the fusion of mmsearch.encoders.colour_channel). The baseline is the starting
weights file as it is (its own bridge and mix), or with ``--baseline`` the release being replaced (when the
start is freshly trained heads, or a variant on another image tower, whose sets are then embedded by the
baseline's own towers too), with the same colour weight. Allowed: mixes under which the
guard set's text->image R@10 and image->text R@1 stay within ``--tolerance`` of the baseline; chosen: the
allowed mix with the best text->image R@10 on ``--photos`` (ties: the larger mix, which keeps more of the
guard's image->text recall). With ``--out`` the chosen file is written (class texts, mix and the grid in
its metadata); afterwards refit the colour weight and the calibration (docs/model-card.md, "Reproduce").
"""

from __future__ import annotations

import argparse
import json
import logging
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from mmsearch.encoders.colour_words import text_colour_vectors
from mmsearch.encoders.lite import LiteDualEncoder
from mmsearch.train.colour_eval import colour_first_rate
from mmsearch.train.colour_weight import fuse, recalls
from mmsearch.train.data import caption_groups, group_keys, load_examples

log = logging.getLogger(__name__)

GRID = (0.5, 0.75, 1.0, 1.25, 1.5, 2.0, 2.5, 3.0)
BATCH = 32


@dataclass
class TowerSet:
    """One manifest's frozen tower features (what every mix is computed from) and colour vectors."""

    name: str
    pooled: torch.Tensor
    logits: torch.Tensor
    text_feats: torch.Tensor
    image_colours: np.ndarray
    caption_colours: np.ndarray
    groups: list[str]
    captions: list[str]
    caption_groups: list[set[str]]
    concepts: list[str]
    asked_colours: list[str]
    row_captions: list[str]

    @classmethod
    def embed(cls, manifest: Path, model: LiteDualEncoder, preprocess, tokenizer) -> "TowerSet":
        from mmsearch.encoders.colour_channel import _normalisation
        from mmsearch.encoders.colour_pixels import descriptors_from_pixels
        from mmsearch.imaging.decode import open_image

        examples = load_examples(manifest)
        groups = group_keys(examples)
        mean, std = _normalisation(preprocess)
        pooled, logits, colours = [], [], []
        with torch.inference_mode():
            for start in range(0, len(examples), BATCH):
                pixels = torch.stack([preprocess(open_image(ex.image_path)) for ex in examples[start : start + BATCH]])
                p, l = model.image_features(pixels)
                pooled.append(p.float())
                logits.append(l.float())
                colours.append(descriptors_from_pixels(pixels, mean, std))
            by_caption = caption_groups(examples, groups)
            captions = list(by_caption)
            text_feats = torch.cat([model.text_features(tokenizer(captions[s : s + 128])) for s in range(0, len(captions), 128)])
        log.info("%s: %d pictures, %d captions", manifest.name, len(examples), len(captions))
        return cls(manifest.stem, torch.cat(pooled), torch.cat(logits), text_feats.float(), np.concatenate(colours),
                   text_colour_vectors(captions), groups, captions, list(by_caption.values()),
                   [ex.concept or ex.image_path for ex in examples], [str(ex.meta.get("colour")) for ex in examples],
                   [ex.caption for ex in examples])

    def vectors(self, model: LiteDualEncoder, colour_weight: float) -> tuple[np.ndarray, np.ndarray]:
        """(picture, caption) embeddings as ``model`` with the colour channel at ``colour_weight`` gives them."""
        with torch.inference_mode():
            images = model.join_image(self.pooled, self.logits).numpy()
            texts = model.join_text(self.text_feats).numpy()
        return fuse(images, self.image_colours, colour_weight), fuse(texts, self.caption_colours, colour_weight)

    def scores(self, model: LiteDualEncoder, colour_weight: float) -> dict[str, float]:
        images, texts = self.vectors(model, colour_weight)
        return recalls(images, texts, self.groups, self.caption_groups)

    def colour_first(self, model: LiteDualEncoder, colour_weight: float) -> float:
        images, texts = self.vectors(model, colour_weight)
        rows = [self.captions.index(caption) for caption in self.row_captions]
        return float(colour_first_rate(images, texts[rows], self.concepts, self.asked_colours)["asked_colour_first"])


def with_mix(model: LiteDualEncoder, learned_weight: float) -> LiteDualEncoder:
    """The same module with another bridge/learned mix (the mix lives only in the config)."""
    model.cfg = replace(model.cfg, learned_weight=float(learned_weight))
    return model


@dataclass
class Sets:
    """The embedded validation sets one model is scored on (photos and colour optional)."""

    photos: TowerSet | None
    guard: TowerSet
    colour: TowerSet | None = None

    @classmethod
    def embed(cls, photos: Path | None, guard: Path, colour: Path | None, model: LiteDualEncoder, preprocess, tokenizer) -> "Sets":
        one = lambda manifest: TowerSet.embed(manifest, model, preprocess, tokenizer) if manifest else None  # noqa: E731
        return cls(one(photos), one(guard), one(colour))


def score_grid(baseline: LiteDualEncoder, wordnet: LiteDualEncoder, sets: Sets, grid: Sequence[float], colour_weight: float,
               baseline_sets: Sets | None = None) -> tuple[dict, list[dict]]:
    """-> (baseline row, one row per mix): photos and guard recalls, and the colour test when given.
    ``baseline_sets``: the sets embedded by the baseline's own towers, when they differ from the grid's
    (a release on another image tower); else the baseline is scored on ``sets`` too."""
    def row(model: LiteDualEncoder, label, on: Sets) -> dict:
        out = {"mix": label}
        for data in (d for d in (on.photos, on.guard) if d is not None):
            out.update({f"{data.name}_{k}": round(v, 4) for k, v in data.scores(model, colour_weight).items()})
        if on.colour is not None:
            out["colour_first"] = round(on.colour.colour_first(model, colour_weight), 4)
        return out

    base = row(baseline, f"baseline {baseline.cfg.bridge_classes} {baseline.cfg.learned_weight:g}", baseline_sets or sets)
    return base, [row(with_mix(wordnet, w), w, sets) for w in grid]


def same_towers(a: LiteDualEncoder, b: LiteDualEncoder) -> bool:
    """Whether two models' tower features are interchangeable (the same image tower at the same size)."""
    return (a.cfg.image_tower, a.cfg.image_size) == (b.cfg.image_tower, b.cfg.image_size)


def choose(base: dict, rows: list[dict], photos: str | None, guard: str, tolerance: float) -> dict:
    """The allowed row (guard text->image R@10 and image->text R@1 within ``tolerance`` of the baseline)
    with the best photo text->image R@10; ties go to the larger mix. Without photos (a mix fixed
    beforehand, e.g. by cross-validation when the photo validation set is in the training data) the
    largest allowed mix."""
    guarded = [f"{guard}_t2i_r10", f"{guard}_i2t_r1"]
    allowed = [r for r in rows if all(r[k] >= base[k] - tolerance for k in guarded)]
    if not allowed:
        raise ValueError(f"no mix keeps {guarded} within {tolerance} of the baseline")
    return max(allowed, key=lambda r: (r[f"{photos}_t2i_r10"] if photos else 0.0, r["mix"]))


def main() -> None:
    from safetensors import safe_open

    from mmsearch.encoders.colour_channel import load_colour_config
    from mmsearch.encoders.lite import load_lite, save_lite_weights
    from mmsearch.train.tool_args import parse_tool_args, tool_weights
    from mmsearch.train.wordnet_bridge import read_class_texts, with_wordnet_bridge

    p = argparse.ArgumentParser(description="choose mmsearch-lite's bridge/learned mix on photo validation data")
    p.add_argument("--wordnet", type=Path, required=True, help="the file data/recipes/wordnet_build.py wrote")
    p.add_argument("--photos", type=Path, help="photo validation manifest (val_stamps.jsonl): what is maximised; "
                   "leave out when the heads were trained on it (then give --grid the mix chosen beforehand)")
    p.add_argument("--guard", type=Path, required=True, help="emoji validation manifest (val.jsonl): what must not fall")
    p.add_argument("--colour", type=Path, help="colour test of the validation split (colour_val.jsonl): reported")
    p.add_argument("--weights", type=Path, help="weights to start from (default: the shipped file)")
    p.add_argument("--colour-weight", type=float, help="colour channel weight (default: the starting file's config)")
    p.add_argument("--baseline", type=Path, help="the release the guard must not fall below (default: the starting file); "
                   "needed when the starting file is freshly trained heads, whose own prompt bridge and mix are no release")
    p.add_argument("--tolerance", type=float, default=0.01)
    p.add_argument("--grid", type=float, nargs="+", default=list(GRID))
    p.add_argument("--out", type=Path, help="write the chosen weights file here")
    args = parse_tool_args(p)
    if args.photos is None and len(set(args.grid)) != 1:
        raise SystemExit("without --photos, give --grid the one mix chosen beforehand")
    weights = tool_weights(args.weights)
    config = load_colour_config(weights)
    colour_weight = args.colour_weight if args.colour_weight is not None else (config.weight if config else 0.0)
    baseline, preprocess, tokenizer, _ = load_lite(weights)
    baseline.eval()
    reference, reference_preprocess, _, _ = load_lite(args.baseline) if args.baseline else (baseline, preprocess, None, None)
    reference.eval()
    wordnet = with_wordnet_bridge(baseline, tokenizer, read_class_texts(args.wordnet), None).eval()
    wordnet.bridge_class_emb.copy_(wordnet.bridge_class_emb.half().float())  # scored as the file stores it (fp16)
    sets = Sets.embed(args.photos, args.guard, args.colour, baseline, preprocess, tokenizer)
    reference_sets = None if same_towers(reference, baseline) else Sets.embed(  # a baseline on another tower: its own features
        args.photos, args.guard, args.colour, reference, reference_preprocess, tokenizer)
    base, rows = score_grid(reference, wordnet, sets, sorted(set(args.grid)), colour_weight, reference_sets)
    chosen = choose(base, rows, sets.photos.name if sets.photos else None, sets.guard.name, args.tolerance)
    for r in [base, *rows]:
        scores = ", ".join(f"{k} {v:.3f}" for k, v in r.items() if k != "mix")
        log.info("mix %s: %s%s", r["mix"], scores, "  <- chosen" if r is chosen else "")
    if args.out is None:
        return
    with safe_open(str(weights), framework="pt") as fh:
        kept = {k: v for k, v in (fh.metadata() or {}).items() if k not in ("config", "finetuned")}
    out = with_mix(wordnet, chosen["mix"])
    command = " ".join(["python -m mmsearch.train.bridge_mix", f"--wordnet {args.wordnet.name}", f"--photos {args.photos.name if args.photos else '-'}",
                        f"--guard {args.guard.name}", f"--colour-weight {colour_weight:g}", f"--tolerance {args.tolerance:g}",
                        f"--grid {' '.join(f'{w:g}' for w in sorted(set(args.grid)))}"]
                       + ([f"--baseline {args.baseline.name}"] if args.baseline else []))
    meta = {**kept, "bridge_classes_from": args.wordnet.name, "mix_chosen_on": json.dumps({"command": command, "baseline": base, "grid": rows})}
    save_lite_weights(out, args.out, meta, half=True)
    log.info("wrote %s (mix %s)", args.out, chosen["mix"])


if __name__ == "__main__":
    main()
