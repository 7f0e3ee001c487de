"""Frozen-tower features of ``mmsearch-lite``, computed once and cached.

Per image: ``1 + K`` views (view 0 is the plain eval preprocessing, views 1..K are seeded random
augmentations), each stored as pooled EfficientNet features (1280) followed by ImageNet logits (1000).
Per text: the MiniLM sentence embedding (384).
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch

from mmsearch.imaging.decode import DecodeError, open_image
from mmsearch.encoders.lite import IMAGE_FEATURES, LiteDualEncoder
from mmsearch.train.augment import AugmentConfig, seeded_view, train_transform
from mmsearch.train.cache import ShardStore, text_key
from mmsearch.train.data import Example

log = logging.getLogger(__name__)

DECODE_SIZE = 512  # like the indexer: JPEGs decode at a reduced scale no smaller than this
EXTRACT_BATCH = 32


def module_fingerprint(module: torch.nn.Module) -> str:
    """A digest of a tower's weights: cached features are valid only for the exact same weights."""
    h = hashlib.sha256()
    for name, tensor in module.state_dict().items():
        h.update(name.encode())
        h.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def fast_cpu_bf16() -> bool:
    """True when the CPU runs bfloat16 natively (AVX512-BF16/AMX): extraction is then ~2x faster.

    Features differ from float32 by a cosine of ~0.9998, far below augmentation noise, so training on
    them is safe; the cache namespace records the precision so the two are never mixed.
    """
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def view_seed(sha256: str, view: int) -> int:
    return (int(sha256[:12], 16) + 7919 * view) % (2**31)


class LiteFeatureCache:
    """Image and text features of one set of tower weights, backed by :class:`ShardStore`."""

    def __init__(self, cache_dir: Path, model: LiteDualEncoder, preprocess: Callable, tokenizer: Callable, device: str = "cpu") -> None:
        self.model, self.preprocess, self.tokenizer, self.device = model, preprocess, tokenizer, device
        self.bf16 = device == "cpu" and fast_cpu_bf16()
        precision = "bf16" if self.bf16 else "fp32"
        image_ns = f"lite-image-{module_fingerprint(model.trunk)}-{model.cfg.image_size}-{precision}"
        text_ns = f"lite-text-{module_fingerprint(model.text)}-{model.cfg.context_length}"
        self.images = ShardStore(Path(cache_dir) / image_ns)
        self.texts = ShardStore(Path(cache_dir) / text_ns)

    # --- images ---
    def image_features(self, examples: Sequence[Example], views: int, augment: AugmentConfig) -> tuple[np.ndarray, list[int]]:
        """-> (features [n_ok, 1 + views, 1280 + 1000], positions of the examples whose image decoded)."""
        transform = train_transform(self.preprocess, augment)
        aug_key = augment.key()
        keys = [f"{ex.sha256}/v{v}/{aug_key if v else 'clean'}" for ex in examples for v in range(1 + views)]
        per_image = 1 + views

        def compute(positions: list[int]) -> np.ndarray:
            tensors = []
            for p in positions:
                ex, view = examples[p // per_image], p % per_image
                tensors.append(self._view(ex, view, transform))
            ok = [i for i, t in enumerate(tensors) if t is not None]
            out = np.full((len(positions), IMAGE_FEATURES + 1000), np.nan, dtype=np.float32)
            for start in range(0, len(ok), EXTRACT_BATCH):
                chunk = ok[start : start + EXTRACT_BATCH]
                out[chunk] = self._encode_images(torch.stack([tensors[i] for i in chunk]))
            return out

        flat = self.images.fill(keys, compute, chunk=EXTRACT_BATCH * 8, label="image views").astype(np.float32)
        feats = flat.reshape(len(examples), per_image, -1)
        good = [i for i in range(len(examples)) if np.isfinite(feats[i]).all()]
        if len(good) < len(examples):
            log.warning("%d images could not be decoded and are left out", len(examples) - len(good))
        return feats[good], good

    def _view(self, ex: Example, view: int, transform: Callable) -> torch.Tensor | None:
        try:
            image = open_image(ex.image_path, target_size=DECODE_SIZE)
        except (DecodeError, OSError) as exc:
            log.warning("cannot read %s: %s", ex.image_path, exc)
            return None
        return self.preprocess(image) if view == 0 else seeded_view(transform, image, view_seed(ex.sha256, view))

    def _encode_images(self, batch: torch.Tensor) -> np.ndarray:
        batch = batch.to(self.device)
        if self.device == "cpu":
            batch = batch.contiguous(memory_format=torch.channels_last)
        autocast = torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.bf16)
        with torch.inference_mode(), autocast:
            pooled, logits = self.model.image_features(batch)
        return torch.cat([pooled, logits], dim=-1).float().cpu().numpy()

    # --- texts ---
    def text_features(self, texts: Sequence[str]) -> np.ndarray:
        """MiniLM embeddings; texts run shortest first so that each chunk's padding can be cut (the mean
        pooler ignores padding), which makes short captions several times cheaper."""
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        ordered = [texts[i] for i in order]
        keys = [text_key(t) for t in ordered]

        def compute(positions: list[int]) -> np.ndarray:
            tokens = self.tokenizer([ordered[p] for p in positions])
            with torch.inference_mode():  # text_features cuts the padding columns no text in the chunk uses
                return self.model.text_features(tokens.to(self.device)).float().cpu().numpy()

        feats = self.texts.fill(keys, compute, chunk=128, label="texts").astype(np.float32)
        out = np.empty_like(feats)
        out[order] = feats
        return out
