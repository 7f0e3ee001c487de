"""``mmsearch eval``: Recall@k in both directions, measured through the index and search path users use.

The manifest's images and its unique captions are indexed with :func:`indexer.pipeline.index_source`
into an index directory, then queried with :class:`mmsearch.search.Searcher`: text -> image with every
unique caption, image -> text with every image's stored vector. Relevance is by ``concept`` when the
manifest has one (any image of the concept answers its captions) and by row otherwise. With ``by`` (a
manifest column such as ``category``) the same queries are also scored per value of that column.

Hubness is measured on the same text -> image rankings: how many queries' top 10 each image lands in.
A *hub* (an image in the top 10 of a large share of all queries, whatever they ask) is what a user sees
as "this picture comes up for everything"; the report gives the largest share and how many images
exceed 5%.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from mmsearch.errors import ConfigError
from mmsearch.train.data import caption_groups, group_keys, load_examples

log = logging.getLogger(__name__)

QUERY_CHUNK = 256
HUB_TOP = 10  # hubness counts appearances in each text query's top 10
HUB_SHARE = 0.05  # an image in more than this share of the queries' top 10 is counted as a hub
ITEMS_FILE = "eval-items.jsonl"


@dataclass
class EvalSet:
    """What is indexed and what counts as a right answer."""

    image_paths: list[str]
    image_groups: list[str]
    captions: list[str]
    caption_groups: list[set[str]]
    image_labels: list[str] | None = None  # the ``by`` column of each image, for a per-value breakdown
    caption_labels: list[str] | None = None  # that of the first image a caption describes

    @classmethod
    def from_manifest(cls, manifest: Path, by: str | None = None) -> "EvalSet":
        examples = load_examples(manifest)
        groups = group_keys(examples)
        by_caption = caption_groups(examples, groups)
        data = cls([ex.image_path for ex in examples], groups, list(by_caption), list(by_caption.values()))
        if by:
            data.image_labels = _column_labels(examples, by, manifest)
            first_label: dict[str, str] = {}
            for ex, label in zip(examples, data.image_labels):
                first_label.setdefault(ex.caption, label)
            data.caption_labels = [first_label[c] for c in data.captions]
        return data

    def write_items(self, path: Path) -> Path:
        """The index source: one image row per image, one text row per unique caption, tagged for scoring."""
        with open(path, "w", encoding="utf-8") as fh:
            for i, image in enumerate(self.image_paths):
                fh.write(json.dumps({"id": f"image{i}", "image": image, "eval_image": i}) + "\n")
            for j, caption in enumerate(self.captions):
                fh.write(json.dumps({"id": f"text{j}", "text": caption, "eval_text": j}) + "\n")
        return path


@dataclass
class ModelScores:
    spec: str
    model_id: str
    text_to_image: dict[str, float]
    image_to_text: dict[str, float]
    text_queries: int
    image_queries: int
    seconds: float
    index_dir: str | None = None
    failures: list[tuple[str, str]] = field(default_factory=list)
    by_label: dict[str, dict] = field(default_factory=dict)
    hubness: dict[str, float] = field(default_factory=dict)


def _column_labels(examples, column: str, manifest: Path) -> list[str]:
    labels = [ex.meta.get(column) for ex in examples]
    if all(label in (None, "") for label in labels):
        raise ConfigError(f"--by {column}: no row of {manifest} has a {column!r} column")
    return [str(label) if label not in (None, "") else "(none)" for label in labels]


def parse_ks(text: str) -> tuple[int, ...]:
    try:
        ks = tuple(sorted({int(k) for k in text.split(",") if k.strip()}))
    except ValueError as exc:
        raise ConfigError(f"-k must be a comma-separated list of positive integers, not {text!r}") from exc
    if not ks or ks[0] < 1:
        raise ConfigError(f"-k must be a comma-separated list of positive integers, not {text!r}")
    return ks


def _recall(hit_lists: list[list[bool]], ks: Sequence[int]) -> dict[str, float]:
    if not hit_lists:
        return {f"R@{k}": 0.0 for k in ks}
    return {f"R@{k}": float(np.mean([any(h[:k]) for h in hit_lists])) for k in ks}


def _recall_by_label(t2i: list[list[bool]], i2t: list[list[bool]], i2t_images: list[int], data: EvalSet, ks: Sequence[int]) -> dict[str, dict]:
    """Recall per value of the ``by`` column: text queries by their caption's label, image queries by the image's."""
    if data.image_labels is None or data.caption_labels is None:
        return {}
    image_labels = [data.image_labels[i] for i in i2t_images]
    out: dict[str, dict] = {}
    for label in sorted(set(data.image_labels)):
        text_hits = [h for h, lab in zip(t2i, data.caption_labels) if lab == label]
        image_hits = [h for h, lab in zip(i2t, image_labels) if lab == label]
        out[label] = {"text_queries": len(text_hits), "image_queries": len(image_hits),
                      "text_to_image": _recall(text_hits, ks), "image_to_text": _recall(image_hits, ks)}
    return out


def hubness(top_images: list[list[int]], image_count: int) -> dict[str, float]:
    """How often each image lands in a query's top ``HUB_TOP``: the largest share of queries one image is
    in (``max_share``), how many images are in more than ``HUB_SHARE`` of them (``hubs``), and the share of
    images that are in nobody's top list (``never``: the other side of hubs, pictures search cannot reach).
    ``even_share`` is what every image's share would be if all were in equally many top lists
    (``HUB_TOP`` / images): the scale ``max_share`` and ``HUB_SHARE`` are to be read on, since a small
    collection has large shares however even its rankings are (10 of 200 pictures is already 5 %)."""
    if not top_images or image_count == 0:
        return {"queries": 0, "max_share": 0.0, "hubs": 0, "never": 0.0, "even_share": 0.0}
    counts = np.zeros(image_count, dtype=np.int64)
    for top in top_images:
        counts[np.unique(np.asarray(top[:HUB_TOP], dtype=np.int64))] += 1
    shares = counts / len(top_images)
    return {"queries": len(top_images), "max_share": round(float(shares.max()), 4),
            "hubs": int((shares > HUB_SHARE).sum()), "never": round(float((counts == 0).mean()), 4),
            "even_share": round(min(HUB_TOP, image_count) / image_count, 4)}


def score_index(searcher, data: EvalSet, ks: Sequence[int]) -> tuple[dict[str, float], dict[str, float], dict[str, dict], dict[str, float]]:
    """-> (text->image recalls, image->text recalls, both per ``by`` label or {}, text->image hubness)
    by querying ``searcher``."""
    kmax = max(max(ks), HUB_TOP)
    t2i: list[list[bool]] = []
    top_images: list[list[int]] = []
    for start in range(0, len(data.captions), QUERY_CHUNK):
        chunk = range(start, min(start + QUERY_CHUNK, len(data.captions)))
        results = searcher.search_texts([data.captions[j] for j in chunk], "image", kmax)
        for j, hits in zip(chunk, results):
            top_images.append([int(h.metadata["eval_image"]) for h in hits])
            t2i.append([data.image_groups[i] in data.caption_groups[j] for i in top_images[-1]])
    images = [r for r in searcher.store.all_items() if r.modality == "image"]
    i2t: list[list[bool]] = []
    i2t_images: list[int] = []
    for start in range(0, len(images), QUERY_CHUNK):
        records = images[start : start + QUERY_CHUNK]
        vectors = searcher.store.vectors_for([r.id for r in records])
        results = searcher.search_vectors(np.stack([vectors[r.id] for r in records]), "text", kmax)
        for record, hits in zip(records, results):
            i2t_images.append(int(record.meta["eval_image"]))
            group = data.image_groups[i2t_images[-1]]
            i2t.append([group in data.caption_groups[int(h.metadata["eval_text"])] for h in hits])
    return _recall(t2i, ks), _recall(i2t, ks), _recall_by_label(t2i, i2t, i2t_images, data, ks), hubness(top_images, len(data.image_paths))


def evaluate_model(
    data: EvalSet, spec: str, index_dir: Path, ks: Sequence[int], encoder_factory: Callable[[str], object], *, batch_size: int = 32, workers: int = 0
) -> ModelScores:
    """Index ``data`` with the model ``spec`` into ``index_dir`` (reusing what is there) and score it."""
    from indexer.pipeline import index_source
    from mmsearch.search import Searcher

    started = time.monotonic()
    index_dir.mkdir(parents=True, exist_ok=True)
    items = data.write_items(index_dir / ITEMS_FILE)
    loaded: dict[str, object] = {}

    def factory(model_spec: str):
        loaded["encoder"] = encoder_factory(model_spec)
        return loaded["encoder"]

    report = index_source(items, index_dir, factory, model_spec=spec, default_model=spec, batch_size=batch_size, workers=workers, progress=False)
    encoder = loaded["encoder"] if "encoder" in loaded else encoder_factory(spec)  # an up-to-date index loads no model
    searcher = Searcher(index_dir, encoder, reload_interval=0)
    try:
        t2i, i2t, by_label, hubs = score_index(searcher, data, ks)
        model_id = searcher.info()["model_id"]
    finally:
        searcher.close()
    return ModelScores(spec, model_id, t2i, i2t, len(data.captions), len(data.image_paths), round(time.monotonic() - started, 1),
                       str(index_dir), report.failures, by_label, hubs)


def default_encoder_factory(device: str, batch_size: int, threads: int) -> Callable[[str], object]:
    from mmsearch.encoders import load_encoder

    return lambda spec: load_encoder(spec, device, batch_size, threads)


def index_folder_name(spec: str) -> str:
    """A stable folder per model: the spec, plus the weights file's digest when it names a file, so a
    retrained file at the same path gets a fresh index instead of a model-mismatch error."""
    from mmsearch.encoders.lite import LITE_NAME, shipped_weights
    from mmsearch.encoders.specs import split_spec
    from mmsearch.hashing import sha256_file

    arch, weights = split_spec(spec)
    if arch == LITE_NAME and not weights:
        weights = str(shipped_weights() or "")  # plain mmsearch-lite means the shipped weights file
    digest = sha256_file(weights)[:12] if weights and Path(weights).is_file() else "tag"
    slug = re.sub(r"[^A-Za-z0-9._-]+", "_", split_spec(spec)[0])[-60:]
    return f"{slug}-{digest}-{hashlib.sha256(spec.encode()).hexdigest()[:8]}"


def evaluate(
    manifest: Path,
    specs: Sequence[str],
    *,
    ks: Sequence[int] = (1, 5, 10),
    index_dir: Path | None = None,
    encoder_factory: Callable[[str], object] | None = None,
    batch_size: int = 32,
    workers: int = 0,
    by: str | None = None,
) -> dict:
    """Score every model in ``specs`` on ``manifest``. ``index_dir`` keeps the indexes (one subfolder per model);
    ``by`` names a manifest column to break the recalls down by (each model's ``by_label``)."""
    data = EvalSet.from_manifest(manifest, by)
    factory = encoder_factory or default_encoder_factory("auto", batch_size, 0)
    with tempfile.TemporaryDirectory(prefix="mmsearch-eval-") as tmp:
        root = Path(index_dir) if index_dir else Path(tmp)
        root.mkdir(parents=True, exist_ok=True)
        scores = []
        for spec in specs:
            folder = root / index_folder_name(spec)
            scores.append(evaluate_model(data, spec, folder, ks, factory, batch_size=batch_size, workers=workers))
            if not index_dir:
                scores[-1].index_dir = None
    relevance = "concept" if any(not g.startswith("row:") for g in data.image_groups) else "row"
    return {
        "manifest": str(Path(manifest).resolve()),
        "relevance": relevance,
        "images": len(data.image_paths),
        "captions": len(data.captions),
        "ks": list(ks),
        "by": by,
        "models": [asdict(s) for s in scores],
    }


def format_table(result: dict) -> str:
    """Metrics as rows, models as columns (the first model, then the baseline)."""
    models = result["models"]
    headers = ["metric"] + [m["spec"] for m in models]
    rows = []
    for direction, label in (("text_to_image", "text->image"), ("image_to_text", "image->text")):
        for k in result["ks"]:
            rows.append([f"{label} R@{k}"] + [f"{m[direction][f'R@{k}']:.3f}" for m in models])
    if all(m.get("hubness") for m in models):
        even = models[0]["hubness"].get("even_share", 0.0)
        rows.append([f"hub: max share in top {HUB_TOP} (even: {even:.3f})"] + [f"{m['hubness']['max_share']:.3f}" for m in models])
        rows.append([f"hubs (> {HUB_SHARE:.0%} of queries)"] + [str(m["hubness"]["hubs"]) for m in models])
    widths = [max(len(str(r[i])) for r in [headers] + rows) for i in range(len(headers))]
    lines = [
        f"{result['manifest']}: {result['images']} images, {result['captions']} captions, relevance by {result['relevance']}",
        "  ".join(h.ljust(w) for h, w in zip(headers, widths)),
    ]
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths)) for r in rows]
    lines.append("  ".join(["model id".ljust(widths[0])] + [m["model_id"].ljust(w) for m, w in zip(models, widths[1:])]))
    return "\n".join(lines)


def format_breakdown(result: dict) -> str:
    """One row per ``by`` value: query counts, then each model's text->image and image->text recalls."""
    models = result["models"]
    if not result.get("by") or not models or not models[0]["by_label"]:
        return ""
    ks = result["ks"]
    cut = "/".join(f"R@{k}" for k in ks)
    headers = [result["by"], "texts", "images"] + [f"{m['spec']} {d} {cut}" for m in models for d in ("t->i", "i->t")]
    rows = []
    for label, first in models[0]["by_label"].items():
        row = [label, str(first["text_queries"]), str(first["image_queries"])]
        for m in models:
            scores = m["by_label"][label]
            row += ["/".join(f"{scores[d][f'R@{k}']:.2f}" for k in ks) for d in ("text_to_image", "image_to_text")]
        rows.append(row)
    widths = [max(len(r[i]) for r in [headers] + rows) for i in range(len(headers))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)) for r in [headers] + rows)
