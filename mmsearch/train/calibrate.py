"""``mmsearch calibrate``: fit the per-direction score calibration of a model (mmsearch.calibration) on
held-out image-text pairs, and check what it does to merged lists.

Pairs come from a manifest of captioned images (the same as ``mmsearch train``/``eval`` read), grouped by
``concept`` when the manifest has one:

* queries are short texts: each group's alternative captions (``texts``) that are not anyone's primary
  caption (at most ``MAX_QUERIES_PER_GROUP`` per group), as a user would type them, and every image;
* items are the images and each group's primary caption (what an index of pictures and notes holds);
* a pair matches when query and item belong to the same group (an image never pairs with itself, a
  text never with an identical string).

Each item's cosine is standardised against the query's cosines with all items of its modality (the
runtime rule, mmsearch.calibration.ModalityStats); then, per query modality, the cross-modal direction
(text->image for text queries, image->text for image queries) gets the offset under which the merged top
20 holds a query's matching picture and matching text at least as often as each single list's top 10 on
these pairs (fewest misses; the middle of the best range).

The check indexes a second, held-out manifest's images and primary captions through the normal index
path, queries it with each group's alternative text, and counts how often the matching picture / text is
in the top 10 of ``--target image`` / ``--target text`` and in the top 20 of ``--target all``, with raw
cosines and with the calibration, in the same run.
"""

from __future__ import annotations

import logging
import shlex
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from mmsearch.calibration import RAW, Calibration, ModalityStats, direction
from mmsearch.errors import ConfigError
from mmsearch.train.data import Example, group_keys, load_examples

log = logging.getLogger(__name__)

MAX_QUERIES_PER_GROUP = 1  # the first alternative: a name (stamps: the file name); later ones drift to categories
ENCODE_CHUNK = 64
MIXED_K_SINGLE = 10  # the done-when: top 20 of target all vs top 10 of each single target
MIXED_K_ALL = 20


def _norm(text: str) -> str:
    return " ".join(text.lower().split())


@dataclass
class PairSet:
    """What the fit and the check use: groups of images, one caption per group, short query texts."""

    image_paths: list[str]
    image_groups: list[str]
    captions: list[str]  # one primary caption per group
    caption_groups: list[str]
    queries: list[str]
    query_groups: list[str]

    @classmethod
    def from_examples(cls, examples: list[Example], max_queries_per_group: int = MAX_QUERIES_PER_GROUP) -> "PairSet":
        groups = group_keys(examples)
        caption_of: dict[str, str] = {}
        for ex, g in zip(examples, groups):
            caption_of.setdefault(g, ex.caption)
        primaries = {_norm(c) for c in caption_of.values()}
        queries: dict[str, list[str]] = {}
        for ex, g in zip(examples, groups):
            chosen = queries.setdefault(g, [])
            for text in ex.texts[1:]:
                if len(chosen) >= max_queries_per_group:
                    break
                if _norm(text) not in primaries and _norm(text) not in {_norm(t) for t in chosen}:
                    chosen.append(text)
        flat = [(q, g) for g, qs in queries.items() for q in qs]
        if not flat:
            raise ConfigError("no group has an alternative caption to use as a query (a 'texts' column)")
        return cls(
            [ex.image_path for ex in examples], groups, list(caption_of.values()), list(caption_of), [q for q, _ in flat], [g for _, g in flat]
        )


def encode_image_files(encoder, paths: Sequence[str]) -> np.ndarray:
    """Picture files -> ``encoder``'s embeddings, decoded (at the model's input size, as the indexer
    decodes) and encoded ENCODE_CHUNK at a time, so a few thousand pictures never sit in memory at once."""
    from mmsearch.imaging.decode import open_image

    size = getattr(encoder, "input_size", None)
    chunks = []
    for start in range(0, len(paths), ENCODE_CHUNK):
        chunks.append(encoder.encode_images([open_image(p, target_size=size) for p in paths[start : start + ENCODE_CHUNK]]))
    return np.concatenate(chunks) if chunks else np.zeros((0, encoder.dim), np.float32)


def direction_pairs(pairs: PairSet, vectors: dict[str, np.ndarray]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """direction -> (cosines of matching pairs, cosines of non-matching pairs)."""
    groups = {"image": np.array(pairs.image_groups), "text": np.array(pairs.caption_groups), "query": np.array(pairs.query_groups)}
    query_is_caption = np.array([[_norm(q) == _norm(c) for c in pairs.captions] for q in pairs.queries])
    out = {}
    for query_side, query_modality in (("query", "text"), ("image", "image")):
        for item_modality, item_side in (("image", "image"), ("text", "text")):
            cos = vectors[query_side] @ vectors[item_side].T
            same = groups[query_side][:, None] == groups[item_side][None, :]
            usable = np.ones_like(same)
            if query_side == "image" and item_side == "image":
                np.fill_diagonal(usable, False)  # an image is not its own match
            if query_side == "query" and item_side == "text":
                usable &= ~query_is_caption
            out[direction(query_modality, item_modality)] = (cos[same & usable], cos[~same & usable])
    return out


def _encode_pairs(pairs: PairSet, encoder) -> dict[str, np.ndarray]:
    return {
        "image": encode_image_files(encoder, pairs.image_paths),
        "text": encoder.encode_texts(pairs.captions),
        "query": encoder.encode_texts(pairs.queries),
    }


def _pair_counts(pairs: PairSet, vectors: dict[str, np.ndarray]) -> dict:
    counts = {}
    for key, (positives, negatives) in direction_pairs(pairs, vectors).items():
        counts[key] = {"matching": int(len(positives)), "non_matching": int(len(negatives)),
                       "matching_cosine_median": round(float(np.median(positives)), 4) if len(positives) else None,
                       "non_matching_cosine_median": round(float(np.median(negatives)), 4) if len(negatives) else None}
    return counts


METHOD = ("cosines standardised per query and item modality; cross-modal offset that keeps each modality's "
          "top-10 match in the merged top 20 on these pairs")


def fit_cross_fitted(folds: Sequence[tuple[list[Example], object]], *, model_id: str, fitted_on: str,
                     command: str | None = None, weights_sha256: str | None = None) -> Calibration:
    """Fit the offsets of ``model_id`` on pairs each scored by their own encoder, misses summed over folds.

    Why: when the shipped heads are trained on the validation pictures, their scores on those pictures
    are not what a user's pictures get (in-sample, nearly every offset has no miss). Each fold's model was
    trained without its fold's pictures, so its scores there are out-of-sample, and the recipe is the same
    as the shipped model's, so their offsets carry over. One fold, ``[(examples, encoder)]`` with the
    model's own encoder, is the plain fit."""
    started = time.monotonic()
    pooled: dict[str, np.ndarray] = {}
    counts, sizes = [], {"images": 0, "groups": 0, "queries": 0}
    for examples, encoder in folds:
        pairs = PairSet.from_examples(examples)
        vectors = _encode_pairs(pairs, encoder)
        counts.append(_pair_counts(pairs, vectors))
        for key, n in (("images", len(pairs.image_paths)), ("groups", len(pairs.captions)), ("queries", len(pairs.queries))):
            sizes[key] += n
        for query_modality in ("text", "image"):
            cross, misses = offset_misses(pairs, vectors, query_modality)
            if misses is not None:
                pooled[cross] = pooled.get(cross, 0) + misses
    offsets, missed = {}, {}
    for cross in ("text->image", "image->text"):
        offsets[cross], missed[cross] = pick_offset(pooled[cross]) if cross in pooled else (0.0, 0)
        log.info("offset %.2f for %s (%d misses)", offsets[cross], cross, missed[cross])
    log.info("calibration fitted in %.1fs", time.monotonic() - started)
    info = {"manifest": fitted_on, **sizes, "pairs": counts[0] if len(counts) == 1 else counts,
            "misses_on_these_pairs": missed, "method": METHOD + ("" if len(folds) == 1 else "; cross-fitted: each "
            "manifest scored by a model trained without it, misses summed")}
    return Calibration(model_id, offsets, weights_sha256, info, command)


OFFSET_GRID = np.round(np.arange(-3.0, 3.0001, 0.05), 2)  # in standard deviations


def _query_side(pairs: PairSet, vectors: dict[str, np.ndarray], query_modality: str):
    """(query vectors, query groups, image cosines, text cosines) with pairs that cannot count masked to -inf."""
    groups_i, groups_t = np.array(pairs.image_groups), np.array(pairs.caption_groups)
    if query_modality == "text":
        q, groups_q = vectors["query"], np.array(pairs.query_groups)
    else:
        q, groups_q = vectors["image"], groups_i
    cos_i, cos_t = q @ vectors["image"].T, q @ vectors["text"].T
    rel_i, rel_t = groups_q[:, None] == groups_i[None, :], groups_q[:, None] == groups_t[None, :]
    if query_modality == "image":
        np.fill_diagonal(cos_i, -np.inf)  # a picture is not its own match
        np.fill_diagonal(rel_i, False)
    else:
        same_string = np.array([[_norm(a) == _norm(b) for b in pairs.captions] for a in pairs.queries])
        cos_t = np.where(same_string, -np.inf, cos_t)
        rel_t &= ~same_string
    return rel_i, rel_t, cos_i, cos_t


def _held(scores: np.ndarray, relevant: np.ndarray, threshold: np.ndarray) -> np.ndarray:
    """Per query: does a relevant item score at least ``threshold`` (the k-th best score of its list)?"""
    return (np.where(relevant, scores, -np.inf) >= threshold[:, None]).any(axis=1)


def offset_misses(pairs: PairSet, vectors: dict[str, np.ndarray], query_modality: str) -> tuple[str, np.ndarray | None]:
    """-> (cross-modal direction, misses at each offset of ``OFFSET_GRID``; None with under 5 usable
    queries): how many times the merged top 20 loses a query's matching picture or text that the single
    list's top 10 holds, with that offset added to the standardised cosines of the cross-modal direction."""
    rel_i, rel_t, cos_i, cos_t = _query_side(pairs, vectors, query_modality)
    queries = vectors["query"] if query_modality == "text" else vectors["image"]
    z_i = ModalityStats.of(vectors["image"]).normalise(queries, cos_i)
    z_t = ModalityStats.of(vectors["text"]).normalise(queries, cos_t)
    cross = direction(query_modality, "image" if query_modality == "text" else "text")
    keep = rel_i.any(axis=1) & rel_t.any(axis=1)
    if keep.sum() < 5:
        return cross, None
    rel_i, rel_t, z_i, z_t = rel_i[keep], rel_t[keep], z_i[keep], z_t[keep]

    def kth(scores: np.ndarray, k: int) -> np.ndarray:
        k = min(k, scores.shape[1])
        return -np.partition(-scores, k - 1, axis=1)[:, k - 1]

    base_i = _held(z_i, rel_i, kth(z_i, MIXED_K_SINGLE)).sum()
    base_t = _held(z_t, rel_t, kth(z_t, MIXED_K_SINGLE)).sum()
    misses = []
    for offset in OFFSET_GRID:
        shifted_i, shifted_t = (z_i + offset, z_t) if query_modality == "text" else (z_i, z_t + offset)
        threshold = kth(np.concatenate([shifted_i, shifted_t], axis=1), MIXED_K_ALL)
        got_i, got_t = _held(shifted_i, rel_i, threshold).sum(), _held(shifted_t, rel_t, threshold).sum()
        misses.append(max(0, base_i - got_i) + max(0, base_t - got_t))
    return cross, np.array(misses)


def pick_offset(misses: np.ndarray) -> tuple[float, int]:
    """-> (offset, misses there): the middle of the longest run of offsets with the fewest misses."""
    best = np.flatnonzero(misses == misses.min())
    runs = np.split(best, np.flatnonzero(np.diff(best) > 1) + 1)
    longest = max(runs, key=len)
    return float(OFFSET_GRID[longest[len(longest) // 2]]), int(misses.min())


def refit_command(manifests: Sequence[Path], spec: str, check: Path | None = None, fold_models: Sequence[str] = ()) -> str:
    """The command line that refits this calibration (stored in the file, shown when it goes stale)."""
    folds = [arg for f in fold_models for arg in ("--fold-model", f)]
    return shlex.join(["mmsearch", "calibrate", *(str(m) for m in manifests), "--model", spec, *folds,
                       *(["--check", str(check)] if check else [])])


# --- the mixed-list check ---
@dataclass
class MixedCounts:
    queries: int
    image_in_image_top10: int
    text_in_text_top10: int
    image_in_all_top20: int
    text_in_all_top20: int

    @property
    def met(self) -> bool:
        return self.image_in_all_top20 >= self.image_in_image_top10 and self.text_in_all_top20 >= self.text_in_text_top10

    def row(self) -> dict:
        return {**self.__dict__, "met": self.met}


def mixed_counts(searcher, pairs: PairSet) -> MixedCounts:
    """Query ``searcher`` (an index of ``pairs``' images and captions, tagged ``group``) with every query text."""
    single_image = searcher.search_texts(pairs.queries, "image", MIXED_K_SINGLE)
    single_text = searcher.search_texts(pairs.queries, "text", MIXED_K_SINGLE)
    merged = searcher.search_texts(pairs.queries, "all", MIXED_K_ALL)

    def holds(hits, group: str, modality: str) -> bool:
        return any(h.modality == modality and h.metadata.get("group") == group for h in hits)

    g = pairs.query_groups
    return MixedCounts(
        len(pairs.queries),
        sum(holds(h, grp, "image") for h, grp in zip(single_image, g)),
        sum(holds(h, grp, "text") for h, grp in zip(single_text, g)),
        sum(holds(h, grp, "image") for h, grp in zip(merged, g)),
        sum(holds(h, grp, "text") for h, grp in zip(merged, g)),
    )


def write_mixed_items(pairs: PairSet, path: Path) -> Path:
    """An index source of the pairs' images and captions, each tagged with its group."""
    import json

    with open(path, "w", encoding="utf-8") as fh:
        for i, (image, group) in enumerate(zip(pairs.image_paths, pairs.image_groups)):
            fh.write(json.dumps({"id": f"image{i}", "image": image, "group": group}) + "\n")
        for j, (caption, group) in enumerate(zip(pairs.captions, pairs.caption_groups)):
            fh.write(json.dumps({"id": f"text{j}", "text": caption, "group": group}) + "\n")
    return path


def check_mixed_lists(manifest: Path, spec: str, calibration: Calibration, index_dir: Path,
                      encoder_factory: Callable[[str], object], batch_size: int = 32) -> dict:
    """Index ``manifest``'s images and captions with ``spec`` and count the mixed-list criterion with raw
    cosines and with ``calibration`` (same index, same queries)."""
    from indexer.pipeline import index_source
    from mmsearch.search import Searcher

    pairs = PairSet.from_examples(load_examples(manifest))
    index_dir.mkdir(parents=True, exist_ok=True)
    items = write_mixed_items(pairs, index_dir / "mixed-items.jsonl")
    loaded: dict[str, object] = {}

    def factory(model_spec: str):
        loaded["encoder"] = encoder_factory(model_spec)
        return loaded["encoder"]

    index_source(items, index_dir, factory, model_spec=spec, default_model=spec, batch_size=batch_size, workers=0, progress=False)
    searcher = Searcher(index_dir, loaded.get("encoder") or encoder_factory(spec), reload_interval=0)
    try:
        searcher.use_calibration(RAW)
        raw = mixed_counts(searcher, pairs)
        searcher.use_calibration(calibration)
        calibrated = mixed_counts(searcher, pairs)
    finally:
        searcher.close()
    return {"manifest": Path(manifest).name, "images": len(pairs.image_paths), "captions": len(pairs.captions),
            "raw_cosine": raw.row(), "calibrated": calibrated.row()}


def format_mixed(check: dict) -> str:
    lines = [f"{check['manifest']}: {check['images']} images, {check['captions']} captions, "
             f"{check['raw_cosine']['queries']} text queries (alternative captions)",
             f"{'merge':<12}{'image in image top10':>22}{'image in all top20':>20}{'text in text top10':>20}{'text in all top20':>19}  met"]
    for name in ("raw_cosine", "calibrated"):
        r = check[name]
        lines.append(f"{name:<12}{r['image_in_image_top10']:>22}{r['image_in_all_top20']:>20}{r['text_in_text_top10']:>20}"
                     f"{r['text_in_all_top20']:>19}  {'yes' if r['met'] else 'no'}")
    return "\n".join(lines)


def format_fit(calibration: Calibration) -> str:
    lines = [f"calibration of {calibration.model_id} (merged score = standardised cosine + offset of the direction):"]
    misses = calibration.fitted_on.get("misses_on_these_pairs", {})
    for key, offset in sorted(calibration.offsets.items()):
        lines.append(f"  {key:<13} offset {offset:+.2f}  ({misses.get(key, 0)} misses on the fitting pairs)")
    return "\n".join(lines)
