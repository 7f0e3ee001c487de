"""The explicit colour channel of mmsearch-lite: colour dims appended to the joint embedding.

Why here and not in the graphs: the towers barely read colour (docs/model-card.md, "Colour"), and
threading pixels through the compiled image graphs (fp32 stem stage, bf16 rest, the int8 graph) is what
an earlier attempt foundered on. The channel instead wraps whatever encoder the registry built (torch
model, graphs loaded from the cache, int8 graph, uint8 fast path alike) and works on the same
preprocessed pixels and strings the encoder gets: a picture's colour-name shares
(``colour_pixels``) and a text's colour words (``colour_words``), each a unit or zero vector ``x``,
appended as ``sqrt(weight) * x`` to the L2-normalised embedding, which is then renormalised. A dot
product becomes ``(cos + weight * colour_match) / norms``; every picture's colour part has the same
length, so for a text naming no colour (a zero colour part) the ranking of pictures is exactly the one
without the channel.

The weight and the descriptor's version live in a small JSON beside the weights file
(``mmsearch-lite.colour.json``; the safetensors, which the int8 graph and the calibration are tied to,
stay as they are). It names the weights' sha256 and applies to those weights only. The model id gets a
``+colour-<fingerprint>`` suffix, so an index built without the channel (or with another weight) is
refused with the usual model-mismatch error instead of mixing spaces. ``MMSEARCH_COLOUR=off`` turns
the channel off (the model id is then the plain one again).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Sequence

import numpy as np

from mmsearch.encoders.base import Encoder, append_columns
from mmsearch.encoders.colour_pixels import COLOUR_NAMES, DESCRIPTOR_VERSION, descriptors_from_pixels
from mmsearch.encoders.colour_words import text_colour_vectors
from mmsearch.encoders.lite_files import lite_model_id, sidecar_path
from mmsearch.hashing import sha256_file

if TYPE_CHECKING:
    from PIL import Image

log = logging.getLogger(__name__)

SUFFIX = ".colour.json"
FORMAT = 1


@dataclass
class ColourConfig:
    """What the channel needs (``weight``, checked ``descriptor`` and ``names``) and where it came from."""

    weight: float
    weights_sha256: str | None = None
    descriptor: str = DESCRIPTOR_VERSION
    names: list[str] = field(default_factory=lambda: list(COLOUR_NAMES))
    chosen_on: dict = field(default_factory=dict)  # validation data and the numbers the weight was chosen by
    command: str | None = None  # how it was chosen

    @property
    def fingerprint(self) -> str:
        """Short digest of everything that changes the embedding: part of the model id."""
        key = json.dumps({"descriptor": self.descriptor, "names": self.names, "weight": round(self.weight, 6)}, sort_keys=True)
        return hashlib.sha256(key.encode()).hexdigest()[:8]

    def to_json(self) -> str:
        data = {"format": FORMAT, "weight": self.weight, "weights_sha256": self.weights_sha256, "descriptor": self.descriptor,
                "names": self.names, "chosen_on": self.chosen_on, "command": self.command}
        return json.dumps(data, indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_json(cls, text: str) -> "ColourConfig":
        data = json.loads(text)
        if data.get("format") != FORMAT:
            raise ValueError(f"unknown colour config format {data.get('format')!r}")
        weight = float(data["weight"])
        if not math.isfinite(weight) or weight < 0:
            raise ValueError(f"bad colour weight {data['weight']!r}")
        return cls(weight, data.get("weights_sha256"), data.get("descriptor", ""), list(data.get("names", [])),
                   data.get("chosen_on") or {}, data.get("command"))

    def save(self, path: Path) -> Path:
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(self.to_json(), encoding="utf-8")
        os.replace(tmp, path)
        return path


def colour_config_path(weights: Path) -> Path:
    """``x.safetensors`` -> ``x.colour.json`` (beside it, like the calibration)."""
    return sidecar_path(weights, SUFFIX)


def load_colour_config(weights: Path | None) -> ColourConfig | None:
    """The colour config beside ``weights`` when it was made for exactly these weights and this descriptor,
    else None (no channel; a mismatch is logged, since the model then reads no colour)."""
    if weights is None:
        return None
    path = colour_config_path(weights)
    if not path.is_file():
        return None
    try:
        config = ColourConfig.from_json(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, KeyError, TypeError) as exc:
        log.warning("ignoring colour config %s: %s", path, exc)
        return None
    if config.descriptor != DESCRIPTOR_VERSION or config.names != list(COLOUR_NAMES):
        log.warning("ignoring colour config %s: made for descriptor %s, this mmsearch computes %s", path, config.descriptor, DESCRIPTOR_VERSION)
        return None
    if config.weights_sha256 and config.weights_sha256 != sha256_file(weights):
        log.warning("ignoring colour config %s: made for other weights (sha256 %s...)", path, config.weights_sha256[:12])
        return None
    return config


def colour_model_id(base_model_id: str, config: ColourConfig | None) -> str:
    """The id an index records: the plain model's, plus the channel's fingerprint when it is on."""
    return f"{base_model_id}+colour-{config.fingerprint}" if config is not None and config.weight > 0 else base_model_id


def reported_model_id(weights: Path | None, setting: str) -> str:
    """The model id ``load_encoder`` will report for mmsearch-lite with ``weights`` under ``MMSEARCH_COLOUR``
    = ``setting``, found without loading the model (for ``mmsearch models`` and the calibration's check)."""
    return colour_model_id(lite_model_id(weights), channel_config(weights, setting))


def channel_config(weights: Path | None, setting: str) -> ColourConfig | None:
    """The config to use for these weights under ``MMSEARCH_COLOUR`` (auto: the file's, when there is one;
    off: none)."""
    if setting == "off":
        return None
    config = load_colour_config(weights)
    return config if config is not None and config.weight > 0 else None


def _normalisation(transform: Callable) -> tuple[tuple[float, ...] | None, tuple[float, ...] | None]:
    """The (mean, std) a preprocessing pipeline's final Normalize step applies, to undo it on float pixels."""
    steps = list(getattr(transform, "transforms", ()))
    if steps and type(steps[-1]).__name__ == "Normalize":
        mean, std = np.asarray(steps[-1].mean, dtype=np.float32), np.asarray(steps[-1].std, dtype=np.float32)
        return tuple(mean.flatten().tolist()), tuple(std.flatten().tolist())
    return None, None


class ColourChannelEncoder:
    """An :class:`Encoder` front that appends the colour channel to ``inner``'s embeddings; everything
    else (preprocessing, backends, uint8 input, closing) is the inner encoder's."""

    def __init__(self, inner: Encoder, config: ColourConfig) -> None:
        self.inner = inner
        self.config = config
        self.model_id = colour_model_id(inner.model_id, config)
        self.dim = int(inner.dim) + len(COLOUR_NAMES)
        self._scale = math.sqrt(config.weight)
        self._mean_std: tuple | None = None

    def __getattr__(self, name: str):  # spec, device, image_transform, takes_uint8_pixels, image_backend, close, ...
        return getattr(self.inner, name)

    def _fuse(self, embeddings: np.ndarray, colours: np.ndarray) -> np.ndarray:
        return append_columns(embeddings, self._scale * np.asarray(colours, dtype=np.float32), self.dim)

    def colour_of_pixels(self, batch) -> np.ndarray:
        """The colour descriptors of a preprocessed batch (uint8 or normalised float, as the tower takes it)."""
        if self._mean_std is None:
            self._mean_std = _normalisation(self.inner.image_transform)
        return descriptors_from_pixels(batch, *self._mean_std)

    def encode_image_tensors(self, batch) -> np.ndarray:
        return self._fuse(self.inner.encode_image_tensors(batch), self.colour_of_pixels(batch))

    def encode_images(self, images: Sequence["Image.Image"]) -> np.ndarray:
        """PIL RGB images -> embeddings: preprocessed once, the same tensor feeding the tower and the colour."""
        if not images:
            return np.zeros((0, self.dim), dtype=np.float32)
        import torch

        transform = self.inner.image_transform
        return self.encode_image_tensors(torch.stack([transform(image) for image in images]))

    def encode_texts(self, texts: Sequence[str]) -> np.ndarray:
        texts = list(texts)
        return self._fuse(self.inner.encode_texts(texts), text_colour_vectors(texts))


def with_colour_channel(encoder: Encoder, weights: Path | None, setting: str) -> Encoder:
    """``encoder`` (an mmsearch-lite one, for ``weights``) with the colour channel when its config says so."""
    config = channel_config(weights, setting)
    if config is None:
        return encoder
    log.info("colour channel on (weight %.3g, %s): model id %s", config.weight, config.descriptor, colour_model_id(encoder.model_id, config))
    return ColourChannelEncoder(encoder, config)
