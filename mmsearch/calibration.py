"""Scores that mean the same across modalities.

A dual encoder's cosines are not comparable across directions: with mmsearch-lite a text query scores a
loosely related note at 0.37 and the matching picture at 0.10, because text->text cosines live on a
different scale than text->image cosines (CLIP models show the same gap). Merging the two lists by raw
cosine (``--target all``, the search page) therefore buries pictures under texts.

Where lists of both modalities merge, each cosine is put on one scale in two steps:

1. **per query and item modality**, how far the item stands out from that query's typical item of that
   modality in this index: ``z = (cosine - mean) / std``, where mean and std are those of the query's
   cosines with every item of the modality. Both are exact and cheap without touching the items: the mean
   is ``q . mu`` and the variance ``q^T C q`` for the modality's mean vector ``mu`` and covariance ``C``
   (:class:`ModalityStats`, computed once per index version from a sample of stored vectors);
2. **per direction** (query modality -> item modality), an offset fitted on held-out validation pairs by
   ``mmsearch calibrate`` (:mod:`mmsearch.train.calibrate`): the shift of the cross-modal direction under
   which merged lists keep each modality's best matches. Without a fitted file the offsets are 0.

Each step is increasing in the cosine for a given query, so a list of one modality keeps its order; only
merged lists change. Single-modality searches keep reporting raw cosines.

Fitted offsets are a small JSON file keyed by the model id of the weights they were fitted on (for
mmsearch-lite the id holds the weights file's sha256, and the full digest is stored too):

* beside the weights file a spec names (``mmsearch-lite.calibration.json`` ships beside
  ``mmsearch-lite.safetensors``; ``ARCH:/path/ckpt.pt`` -> ``/path/ckpt.pt.calibration.json``);
* else in the user's calibration folder, ``$MMSEARCH_CACHE_DIR/calibration/`` (default
  ``~/.cache/mmsearch/calibration/``), one file per model id, where ``mmsearch calibrate`` writes for
  open_clip tags.

A file fitted on other weights is ignored (logged, with its refit command) and the offsets fall back to 0.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Mapping

import numpy as np

log = logging.getLogger(__name__)

FORMAT = 2
SUFFIX = ".calibration.json"
COSINE = "cosine"  # the scale of raw scores
CALIBRATED = "calibrated"  # standard deviations above the query's typical item of that modality, plus the direction's offset
MODALITIES = ("image", "text")
DIRECTIONS = tuple(f"{q}->{i}" for q in ("text", "image") for i in MODALITIES)
MIN_STD = 1e-4  # numerical floor: a modality of one item (no spread) scores it as typical, z = 0
STATS_SAMPLE = 4096  # stored vectors per modality the mean and covariance are computed from


def direction(query_modality: str, item_modality: str) -> str:
    return f"{query_modality}->{item_modality}"


@dataclass(frozen=True)
class ModalityStats:
    """Mean vector and covariance of one modality's item vectors: the mean and spread of any query's
    cosines with those items, exactly, in O(dim^2) per query."""

    mean: np.ndarray
    cov: np.ndarray
    count: int

    @classmethod
    def of(cls, vectors: np.ndarray) -> "ModalityStats":
        vectors = np.asarray(vectors, dtype=np.float32)  # float32 BLAS: ~50 ms for 4096 x 768 on one core
        mean = vectors.mean(axis=0, dtype=np.float64).astype(np.float32)
        centred = vectors - mean
        return cls(mean, (centred.T @ centred) / np.float32(max(len(vectors), 1)), len(vectors))

    def normalise(self, queries: np.ndarray, cosines: np.ndarray) -> np.ndarray:
        """Cosines [n, k] of ``queries`` [n, dim] -> how many standard deviations each stands above the
        query's mean cosine with this modality's items."""
        q = np.asarray(queries, dtype=np.float32)
        mu = (q @ self.mean).astype(np.float64)
        variance = np.sum((q @ self.cov) * q, axis=1, dtype=np.float64)
        std = np.sqrt(np.maximum(variance, 0.0))
        return (np.asarray(cosines, dtype=np.float64) - mu[:, None]) / np.maximum(std, MIN_STD)[:, None]


@dataclass
class Calibration:
    """Per-direction offsets added to the per-query standardised cosines; ``raw`` = merge raw cosines."""

    model_id: str | None = None
    offsets: dict[str, float] = field(default_factory=dict)
    weights_sha256: str | None = None
    fitted_on: dict = field(default_factory=dict)  # data description, pair counts, held-out check
    command: str | None = None  # how to refit it
    raw: bool = False

    @property
    def scale(self) -> str:
        return COSINE if self.raw else CALIBRATED

    @property
    def fitted(self) -> bool:
        return bool(self.offsets)

    def offset(self, query_modalities: Mapping[str, float], item_modality: str) -> float:
        """The offset for a query made of ``query_modalities`` (modality -> weight; a mixed query blends
        the directions' offsets by weight share) against items of ``item_modality``."""
        total = sum(abs(w) for w in query_modalities.values()) or 1.0
        return sum(abs(w) / total * self.offsets.get(direction(m, item_modality), 0.0) for m, w in query_modalities.items())

    def scores(self, query_modalities: Mapping[str, float], item_modality: str, queries: np.ndarray, cosines: np.ndarray,
               stats: ModalityStats | None) -> np.ndarray:
        """Cosines [n, k] -> scores on this calibration's scale (raw cosines when ``raw`` or no stats)."""
        if self.raw or stats is None or not query_modalities:
            return np.asarray(cosines, dtype=np.float64)
        return stats.normalise(queries, cosines) + self.offset(query_modalities, item_modality)

    # --- files ---
    def to_json(self) -> str:
        data = {"format": FORMAT, **asdict(self)}
        data.pop("raw")
        data["offsets"] = dict(sorted(self.offsets.items()))
        return json.dumps(data, indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_json(cls, text: str) -> "Calibration":
        data = json.loads(text)
        if data.get("format") != FORMAT:
            raise ValueError(f"unknown calibration format {data.get('format')!r}")
        offsets = {}
        for key, value in data.get("offsets", {}).items():
            if key not in DIRECTIONS or not math.isfinite(float(value)):
                raise ValueError(f"bad offset {key!r}: {value!r}")
            offsets[key] = float(value)
        return cls(data.get("model_id"), offsets, data.get("weights_sha256"), data.get("fitted_on") or {}, data.get("command"))

    def save(self, path: Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(self.to_json(), encoding="utf-8")
        os.replace(tmp, path)
        return path


DEFAULT = Calibration()  # standardised per query, no fitted offsets
RAW = Calibration(raw=True)  # merge by raw cosine (what mmsearch did before; for comparisons)


def user_calibration_dir() -> Path:
    """Where ``mmsearch calibrate`` keeps calibrations of models that have no weights file of their own
    to sit beside (open_clip pretrained tags): ``$MMSEARCH_CACHE_DIR/calibration``."""
    from mmsearch.encoders.lite_files import cache_dir

    return cache_dir() / "calibration"


def user_calibration_path(model_id: str) -> Path:
    slug = re.sub(r"[^A-Za-z0-9._@-]+", "_", model_id).strip("_")[:120] or "model"
    return user_calibration_dir() / f"{slug}{SUFFIX}"


def weights_file_of(model_spec: str) -> Path | None:
    """The weights file a model spec names or stands for (mmsearch-lite: the shipped file), if any."""
    from mmsearch.encoders.lite_files import LITE_NAME
    from mmsearch.encoders.specs import lite_weights, split_spec

    arch, weights = split_spec(model_spec)
    if arch == LITE_NAME:
        try:
            return lite_weights(weights)
        except Exception:  # a missing custom weights file: no calibration beside it either
            return None
    if weights and Path(weights).expanduser().is_file():
        return Path(weights).expanduser()
    return None


def beside_weights_path(weights: Path) -> Path:
    """``x.safetensors`` -> ``x.calibration.json``; other files get the suffix appended (``ckpt.pt.calibration.json``)."""
    from mmsearch.encoders.lite_files import sidecar_path

    return sidecar_path(weights, SUFFIX)


def default_path(model_spec: str, model_id: str) -> Path:
    """Where a calibration of this model is written by default: beside its weights file, else the user folder."""
    weights = weights_file_of(model_spec)
    return beside_weights_path(weights) if weights is not None else user_calibration_path(model_id)


def candidate_paths(model_spec: str, model_id: str) -> list[Path]:
    weights = weights_file_of(model_spec)
    paths = [beside_weights_path(weights)] if weights is not None else []
    return paths + [user_calibration_path(model_id)]


def load_calibration(model_spec: str, model_id: str) -> Calibration:
    """The calibration fitted on exactly this model (matched by model id), else :data:`DEFAULT`."""
    for path in candidate_paths(model_spec, model_id):
        if not path.is_file():
            continue
        try:
            calibration = Calibration.from_json(path.read_text(encoding="utf-8"))
        except (OSError, ValueError, KeyError, TypeError) as exc:
            log.warning("ignoring calibration %s: %s", path, exc)
            continue
        if calibration.model_id != model_id:
            log.warning("ignoring calibration %s: fitted on %s, the index uses %s (refit: %s)", path,
                        calibration.model_id, model_id, calibration.command or "mmsearch calibrate")
            continue
        log.info("score calibration %s (offsets %s)", path, calibration.offsets)
        return calibration
    log.info("no fitted score calibration for %s: merged lists use per-query standardised cosines, no offsets", model_id)
    return DEFAULT
