"""The hub channel of mmsearch-lite: one dimension that pushes "hub" pictures down text searches.

Why: a few pictures sit near the middle of the text space and land in the top 10 of many unrelated text
queries (on the stamps test split one picture answered 11 % of all queries). Inverted softmax, the usual
cure (Smith et al. 2017; QB-Norm), subtracts from every text->picture score a per-picture *hub prior*: how
strongly the picture answers a bank of typical captions, ``p = logsumexp(beta * bank @ v) / beta``. The
prior depends on the picture alone, so it is computed once, when the picture is embedded, and carried in
one extra coordinate of its embedding; every text embedding carries the constant ``a`` there. A
text->picture dot product then gains ``a * h = -lam * (p - centre)``, the penalty itself, in every search
path (FAISS, hybrid, filtered, merged lists) with no change to how anything searches or stores.

What else the extra coordinate touches, all small by construction (``a`` = 0.5, ``|h|`` <= ~0.15 on
photos): picture->picture scores gain ``h_i * h_j`` (<= ~0.02) and each picture's norm grows by at most
~1 %; text->text scores become ``(cos + a^2) / (1 + a^2)``, which keeps their order. A picture query
ranks texts by ``v . t`` plus a constant, so picture->text order is unchanged too.

The bank (float16 caption embeddings in the model's joint space, colour channel included), ``beta``,
``lam``, ``a`` and ``centre`` live in ``mmsearch-lite.hubs.safetensors`` beside the weights file, made by
``python -m mmsearch.train.hub_bank``. It names the model id it was built for (the weights and colour
channel) and applies to exactly that model. The model id gets a ``+hubs-<fingerprint>`` suffix, so an
index built without the channel is refused with the usual model-mismatch error instead of mixing
spaces. ``MMSEARCH_HUBS=off`` turns the channel off.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import numpy as np

from mmsearch.encoders.base import Encoder, append_columns
from mmsearch.encoders.lite_files import sidecar_path
from mmsearch.hashing import sha256_file

if TYPE_CHECKING:
    from PIL import Image

log = logging.getLogger(__name__)

SUFFIX = ".hubs.safetensors"
FORMAT = 1
PRIOR_CHUNK = 256  # pictures per bank product: [chunk, bank] float32 stays a few MB


_blas = None


def one_blas_thread():
    """A context in which numpy's BLAS runs on one thread. Why: the bank product runs while the image tower
    (OpenVINO) and the decode workers hold the cores; OpenBLAS's own threads spinning beside them cost
    indexing ~25 % (2,000 photos: 8.9 s against 6.7 s without the channel; 7.2 s on one BLAS thread)."""
    global _blas
    if _blas is None:
        from threadpoolctl import ThreadpoolController

        _blas = ThreadpoolController()
    return _blas.limit(limits=1, user_api="blas")


@dataclass
class HubConfig:
    """The caption bank and the constants of the hub penalty (module docstring)."""

    bank: np.ndarray  # [n, dim of the inner model], rows L2-normalised
    beta: float  # inverse temperature of the soft maximum over the bank
    lam: float  # penalty per unit of prior above the centre (in cosine units)
    text_coordinate: float  # ``a``: every text's value in the extra coordinate
    centre: float  # the typical picture's prior (median over training pictures): h = 0 there
    model_id: str  # the inner encoder's model id the bank was embedded with
    chosen_on: dict = field(default_factory=dict)
    command: str | None = None

    def __post_init__(self) -> None:
        for name in ("beta", "lam", "text_coordinate", "centre"):
            value = getattr(self, name)
            if not math.isfinite(value):
                raise ValueError(f"hub {name} is not finite: {value!r}")
        if self.beta <= 0 or self.text_coordinate <= 0 or self.lam < 0:
            raise ValueError("hub beta and text coordinate must be positive and lam non-negative")
        if self.bank.ndim != 2 or len(self.bank) == 0:
            raise ValueError(f"hub bank must be a non-empty matrix, not shape {self.bank.shape}")

    def priors(self, embeddings: np.ndarray) -> np.ndarray:
        """Embeddings [n, dim] (L2-normalised) -> each one's hub prior, a soft maximum of its cosines with
        the bank (stable log-sum-exp, in chunks)."""
        embeddings = np.asarray(embeddings, dtype=np.float32)
        out = np.empty(len(embeddings), dtype=np.float64)
        with one_blas_thread():  # once per call: the limit is set and restored per library, not per chunk
            for start in range(0, len(embeddings), PRIOR_CHUNK):
                scores = self.beta * (embeddings[start : start + PRIOR_CHUNK] @ self.bank.T).astype(np.float64)
                top = scores.max(axis=1)
                out[start : start + PRIOR_CHUNK] = (top + np.log(np.exp(scores - top[:, None]).sum(axis=1))) / self.beta
        return out

    def picture_coordinates(self, embeddings: np.ndarray) -> np.ndarray:
        """The extra coordinate of pictures: ``-(lam / a) * (prior - centre)``, so that ``a * h`` is the penalty."""
        return (-(self.lam / self.text_coordinate) * (self.priors(embeddings) - self.centre)).astype(np.float32)

    def save(self, path: Path) -> Path:
        from safetensors.numpy import save_file

        meta = {"format": str(FORMAT), "beta": repr(self.beta), "lam": repr(self.lam), "text_coordinate": repr(self.text_coordinate),
                "centre": repr(self.centre), "model_id": self.model_id, "chosen_on": json.dumps(self.chosen_on, sort_keys=True),
                "command": self.command or ""}
        tmp = path.with_name(path.name + ".tmp")
        save_file({"bank": np.ascontiguousarray(self.bank, dtype=np.float16)}, str(tmp), metadata=meta)
        tmp.replace(path)
        return path

    @classmethod
    def load(cls, path: Path) -> "HubConfig":
        from safetensors import safe_open

        with safe_open(str(path), framework="numpy") as fh:
            meta = fh.metadata() or {}
            if meta.get("format") != str(FORMAT):
                raise ValueError(f"unknown hub file format {meta.get('format')!r}")
            bank = fh.get_tensor("bank").astype(np.float32)
        return cls(bank, float(meta["beta"]), float(meta["lam"]), float(meta["text_coordinate"]), float(meta["centre"]),
                   meta["model_id"], json.loads(meta.get("chosen_on") or "{}"), meta.get("command") or None)


def hub_config_path(weights: Path) -> Path:
    """``x.safetensors`` -> ``x.hubs.safetensors`` (beside it, like the colour config and the calibration)."""
    return sidecar_path(weights, SUFFIX)


def hub_fingerprint(path: Path) -> str:
    """Short digest of the hub file (bank and constants): part of the model id."""
    return sha256_file(path)[:8]


def hub_model_id(inner_model_id: str, path: Path) -> str:
    return f"{inner_model_id}+hubs-{hub_fingerprint(path)}"


def find_hub_file(weights: Path | None, inner_model_id: str, setting: str) -> Path | None:
    """The hub file beside ``weights`` when the setting allows it and it was made for ``inner_model_id``
    (checked from its header alone), else None; a file made for another model is logged and ignored."""
    if setting == "off" or weights is None:
        return None
    path = hub_config_path(weights)
    if not path.is_file():
        return None
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="numpy") as fh:
            made_for = (fh.metadata() or {}).get("model_id")
    except Exception as exc:  # a damaged file: no channel, said once
        log.warning("ignoring hub file %s: %s", path, exc)
        return None
    if made_for != inner_model_id:
        log.warning("ignoring hub file %s: made for model %s, not %s (rebuild it: python -m mmsearch.train.hub_bank)",
                    path, made_for, inner_model_id)
        return None
    return path


def reported_hub_model_id(weights: Path | None, inner_model_id: str, setting: str) -> str:
    """The model id the encoder will report, found without loading the bank (``mmsearch models``)."""
    path = find_hub_file(weights, inner_model_id, setting)
    return hub_model_id(inner_model_id, path) if path is not None else inner_model_id


class HubChannelEncoder:
    """An :class:`Encoder` front that appends the hub coordinate to ``inner``'s embeddings; everything else
    (preprocessing, backends, uint8 input, closing) is the inner encoder's."""

    def __init__(self, inner: Encoder, config: HubConfig, model_id: str) -> None:
        self.inner = inner
        self.config = config
        self.model_id = model_id
        self.dim = int(inner.dim) + 1

    def __getattr__(self, name: str):  # spec, device, image_transform, takes_uint8_pixels, image_backend, close, ...
        return getattr(self.inner, name)

    def _pictures(self, embeddings: np.ndarray) -> np.ndarray:
        embeddings = np.asarray(embeddings, dtype=np.float32)
        return append_columns(embeddings, self.config.picture_coordinates(embeddings)[:, None], self.dim)

    def encode_image_tensors(self, batch) -> np.ndarray:
        return self._pictures(self.inner.encode_image_tensors(batch))

    def encode_images(self, images: Sequence["Image.Image"]) -> np.ndarray:
        return self._pictures(self.inner.encode_images(images))

    def encode_texts(self, texts: Sequence[str]) -> np.ndarray:
        embeddings = self.inner.encode_texts(list(texts))
        return append_columns(embeddings, np.full((len(embeddings), 1), self.config.text_coordinate), self.dim)


def with_hub_channel(encoder: Encoder, weights: Path | None, setting: str) -> Encoder:
    """``encoder`` (an mmsearch-lite one, for ``weights``, colour channel applied) with the hub channel
    when a hub file for exactly this model lies beside the weights."""
    path = find_hub_file(weights, encoder.model_id, setting)
    if path is None:
        return encoder
    config = HubConfig.load(path)
    model_id = hub_model_id(encoder.model_id, path)
    log.info("hub channel on (%d captions, beta %.3g, lam %.3g): model id %s", len(config.bank), config.beta, config.lam, model_id)
    return HubChannelEncoder(encoder, config, model_id)
