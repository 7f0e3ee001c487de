"""``mmsearch eval``: Recall@k in both directions, measured through the index and search path users use.

The manifest's images and its unique captions are indexed with :func:`indexer.pipeline.index_source`
into an index directory, then queried with :class:`mmsearch.search.Searcher`: text -> image with every
unique caption, image -> text with every image's stored vector. Relevance is by ``concept`` when the
manifest has one (any image of the concept answers its captions) and by row otherwise.
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
from mmsearch.train.data import load_examples, group_keys

log = logging.getLogger(__name__)

BRIDGE_ALIAS = "mmsearch-lite:bridge"  # the training-free bridge alone, as a baseline
QUERY_CHUNK = 256
ITEMS_FILE = "eval-items.jsonl"


@dataclass
class EvalSet:
    """What is indexed and what counts as a right answer."""

    image_paths: list[str]
    image_groups: list[str]
    captions: list[str]
    caption_groups: list[set[str]]

    @classmethod
    def from_manifest(cls, manifest: Path) -> "EvalSet":
        examples = load_examples(manifest)
        groups = group_keys(examples)
        by_caption: dict[str, set[str]] = {}
        for ex, g in zip(examples, groups):
            by_caption.setdefault(ex.caption, set()).add(g)
        return cls([ex.image_path for ex in examples], groups, list(by_caption), list(by_caption.values()))

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


def score_index(searcher, data: EvalSet, ks: Sequence[int]) -> tuple[dict[str, float], dict[str, float]]:
    """-> (text->image recalls, image->text recalls) by querying ``searcher``."""
    kmax = max(ks)
    t2i: list[list[bool]] = []
    for start in range(0, len(data.captions), QUERY_CHUNK):
        chunk = range(start, min(start + QUERY_CHUNK, len(data.captions)))
        results = searcher.search_texts([data.captions[j] for j in chunk], "image", kmax)
        for j, hits in zip(chunk, results):
            t2i.append([data.image_groups[int(h.metadata["eval_image"])] in data.caption_groups[j] for h in hits])
    images = [r for r in searcher.store.all_items() if r.modality == "image"]
    i2t: list[list[bool]] = []
    for start in range(0, len(images), QUERY_CHUNK):
        records = images[start : start + QUERY_CHUNK]
        vectors = searcher.store.vectors_for([r.id for r in records])
        results = searcher.search_vectors(np.stack([vectors[r.id] for r in records]), "text", kmax)
        for record, hits in zip(records, results):
            group = data.image_groups[int(record.meta["eval_image"])]
            i2t.append([group in data.caption_groups[int(h.metadata["eval_text"])] for h in hits])
    return _recall(t2i, ks), _recall(i2t, ks)


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
        t2i, i2t = score_index(searcher, data, ks)
        model_id = searcher.info()["model_id"]
    finally:
        searcher.close()
    return ModelScores(spec, model_id, t2i, i2t, len(data.captions), len(data.image_paths), round(time.monotonic() - started, 1), str(index_dir), report.failures)


def default_encoder_factory(device: str, batch_size: int, threads: int) -> Callable[[str], object]:
    from mmsearch.encoders import load_encoder

    return lambda spec: load_encoder(spec, device, batch_size, threads)


def resolve_spec(spec: str, workdir: Path) -> str:
    """The bridge alias becomes a bridge-only weights file (made once per ``workdir``); other specs stay."""
    if spec != BRIDGE_ALIAS:
        return spec
    from mmsearch.encoders.lite import write_bridge_only_weights

    path = workdir / "bridge-only.safetensors"
    if not path.is_file():
        write_bridge_only_weights(path)
    return f"mmsearch-lite:{path.resolve()}"


def index_folder_name(spec: str) -> str:
    """A stable folder per model: the spec, plus the weights file's digest when it names a file, so a
    retrained file at the same path gets a fresh index instead of a model-mismatch error."""
    from mmsearch.encoders.lite import DEFAULT_WEIGHTS, LITE_NAME
    from mmsearch.encoders.registry import split_spec
    from mmsearch.hashing import sha256_file

    arch, weights = split_spec(spec)
    if arch == LITE_NAME and not weights and DEFAULT_WEIGHTS.is_file():
        weights = str(DEFAULT_WEIGHTS)  # plain mmsearch-lite means the shipped weights file
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
) -> dict:
    """Score every model in ``specs`` on ``manifest``. ``index_dir`` keeps the indexes (one subfolder per model)."""
    data = EvalSet.from_manifest(manifest)
    factory = encoder_factory or default_encoder_factory("auto", batch_size, 0)
    with tempfile.TemporaryDirectory(prefix="mmsearch-eval-") as tmp:
        root = Path(index_dir) if index_dir else Path(tmp)
        root.mkdir(parents=True, exist_ok=True)
        scores = []
        for spec in specs:
            resolved = resolve_spec(spec, root)
            folder = root / index_folder_name(resolved)
            scores.append(evaluate_model(data, resolved, folder, ks, factory, batch_size=batch_size, workers=workers))
            scores[-1].spec = spec
            if not index_dir:
                scores[-1].index_dir = None
    relevance = "concept" if any(not g.startswith("row:") for g in data.image_groups) else "row"
    return {
        "manifest": str(Path(manifest).resolve()),
        "relevance": relevance,
        "images": len(data.image_paths),
        "captions": len(data.captions),
        "ks": list(ks),
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
    widths = [max(len(str(r[i])) for r in [headers] + rows) for i in range(len(headers))]
    lines = [
        f"{result['manifest']}: {result['images']} images, {result['captions']} captions, relevance by {result['relevance']}",
        "  ".join(h.ljust(w) for h, w in zip(headers, widths)),
    ]
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths)) for r in rows]
    lines.append("  ".join(["model id".ljust(widths[0])] + [m["model_id"].ljust(w) for m, w in zip(models, widths[1:])]))
    return "\n".join(lines)
