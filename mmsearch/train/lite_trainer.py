"""Train the heads of ``mmsearch-lite`` on cached frozen-tower features.

Steps: cache features; pick the bridge temperature on validation data (bridge alone, no training);
train the learned heads with symmetric InfoNCE (random augmented view + random caption/template per
image per step, one concept per batch at most); keep the epoch with the best validation recall;
finally pick how much the learned part weighs against the bridge, again on validation data only.
"""

from __future__ import annotations

import logging
import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from mmsearch.encoders.lite import IMAGE_FEATURES, TEXT_FEATURES, LiteDualEncoder, make_heads, save_lite_weights
from mmsearch.errors import ConfigError
from mmsearch.train.augment import pick_text, templated_texts
from mmsearch.train.data import Example, caption_groups, group_keys
from mmsearch.train.lite_features import LiteFeatureCache
from mmsearch.train.loss import clip_loss
from mmsearch.train.metrics import recall_at_k
from mmsearch.train.options import HEAD_DESIGNS, TrainOptions
from mmsearch.train.trainer import ContrastiveTrainer, TrainResult

log = logging.getLogger(__name__)

KS = (1, 5, 10)
TEMPERATURE_GRID = (0.5, 0.75, 1.0, 1.5, 2.0, 3.0)
MIX_GRID = (0.0, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 4.0, 8.0)
LITE_DEFAULT_HIDDEN = 512


class LiteHeads(nn.Module):
    """The trainable parts of a :class:`LiteDualEncoder`, under the same state-dict names."""

    def __init__(self, model: LiteDualEncoder, train_text_head: bool = True) -> None:
        super().__init__()
        self.image_head = model.image_head
        if train_text_head:
            self.text_head = model.text_head
        self.logit_scale = model.logit_scale


def configure_heads(model: LiteDualEncoder, opts: TrainOptions) -> None:
    """Give ``model`` fresh heads of the requested design (the towers and the bridge stay as they are).

    * ``mlp``: both sides projected by an MLP into a new space;
    * ``residual``: the text side is MiniLM plus a trained residual, the image head also sees the bridge;
    * ``lit``: locked text - the text side is exactly MiniLM, only the image head learns to land there.
    """
    if opts.head_design not in HEAD_DESIGNS:
        raise ConfigError(f"unknown head design {opts.head_design!r}: use one of {', '.join(HEAD_DESIGNS)}")
    minilm_space = opts.head_design in ("residual", "lit")
    joint_dim = opts.joint_dim or (TEXT_FEATURES if minilm_space else model.cfg.joint_dim)
    if minilm_space and joint_dim != TEXT_FEATURES:
        raise ConfigError(f"--head-design {opts.head_design} keeps MiniLM's space, so the joint size is {TEXT_FEATURES}")
    cfg = replace(
        model.cfg, joint_dim=joint_dim, head_hidden=opts.head_hidden or LITE_DEFAULT_HIDDEN, image_head_bridge=minilm_space,
        text_head_residual=minilm_space, learned_weight=1.0,
    )
    torch.manual_seed(opts.seed)
    model.cfg = cfg
    model.image_head, model.text_head = make_heads(cfg)
    with torch.no_grad():  # start from CLIP's temperature, not whatever the starting weights file learned
        model.logit_scale.fill_(math.log(1 / 0.07))


class LiteTrainer(ContrastiveTrainer):
    def __init__(self, opts: TrainOptions, model: LiteDualEncoder, preprocess, tokenizer, train: list[Example], val: list[Example] | None, out: Path, device: str) -> None:
        super().__init__(out, epochs=opts.epochs, batch_size=opts.batch_size or 256, lr=opts.lr or 1e-3,
                         weight_decay=opts.weight_decay, seed=opts.seed, resume=opts.resume)
        self.opts, self.model, self.device = opts, model, device
        model.eval()
        for p in model.parameters():
            p.requires_grad_(False)
        if device == "cpu":
            model.trunk.to(memory_format=torch.channels_last)
        self.cache = LiteFeatureCache(opts.cache_dir, model, preprocess, tokenizer, device)
        views = opts.aug_views if opts.augment.enabled else 0
        feats, ok = self.cache.image_features(train, views, opts.augment)
        self.train_examples = [train[i] for i in ok]
        if len(self.train_examples) < 2:
            raise ConfigError("training needs at least two readable captioned images")
        self.groups = group_keys(self.train_examples)
        self.image_feats = torch.from_numpy(feats).to(device)
        self._prepare_texts()
        self.val = self._prepare_val(val) if val else None
        configure_heads(model, opts)
        model.to(device)
        self.module = LiteHeads(model, train_text_head=opts.head_design != "lit")
        for p in self.module.parameters():
            p.requires_grad_(True)
        if self.val is not None:
            self._tune_bridge_temperature()

    # --- data ---
    def _prepare_texts(self) -> None:
        per_example = [(ex.caption, ex.texts[1:], templated_texts(ex.caption, self.opts.templates)) for ex in self.train_examples]
        vocabulary = list(dict.fromkeys(t for primary, alts, tmpl in per_example for t in [primary, *alts, *tmpl]))
        position = {t: i for i, t in enumerate(vocabulary)}
        self.text_choices = [(position[p], [position[t] for t in alts], [position[t] for t in tmpl]) for p, alts, tmpl in per_example]
        self.text_feats = torch.from_numpy(self.cache.text_features(vocabulary)).to(self.device)

    def _prepare_val(self, val: list[Example]) -> dict:
        feats, ok = self.cache.image_features(val, 0, self.opts.augment)
        kept = [val[i] for i in ok]
        groups = group_keys(kept)
        captions = caption_groups(kept, groups)
        queries = list(captions)
        # a caption shared by several groups counts as answered by any of them: use its first group
        query_groups = [sorted(captions[q])[0] for q in queries]
        return {
            "image": torch.from_numpy(feats[:, 0]).to(self.device),
            "text": torch.from_numpy(self.cache.text_features(queries)).to(self.device),
            "groups": groups,
            "query_groups": query_groups,
        }

    def _sample_texts(self, batch: list[int], rng: np.random.Generator) -> torch.Tensor:
        chosen = [pick_text(*self.text_choices[i], self.opts.template_prob, rng) for i in batch]
        return self.text_feats[chosen]

    # --- training ---
    def train_step(self, batch: list[int], rng: np.random.Generator) -> torch.Tensor:
        n_views = self.image_feats.shape[1]
        views = rng.integers(0, n_views, size=len(batch)) if n_views > 1 else np.zeros(len(batch), dtype=int)
        feats = self.image_feats[torch.as_tensor(batch), torch.as_tensor(views)]
        pooled, logits = feats[:, :IMAGE_FEATURES], feats[:, IMAGE_FEATURES:]
        image = self.model.learned_image(pooled, self.model.image_bridge(logits))
        text = self.model.learned_text(self._sample_texts(batch, rng))
        return clip_loss(image, text, self.model.logit_scale)

    # --- validation ---
    def _val_similarities(self) -> tuple[np.ndarray, np.ndarray]:
        """-> (bridge cosines, learned cosines), each [queries, images]."""
        v = self.val
        with torch.no_grad():
            pooled, logits = v["image"][:, :IMAGE_FEATURES], v["image"][:, IMAGE_FEATURES:]
            bridge_img = F.normalize(self.model.output_bridge(logits), dim=-1)
            bridge_txt = F.normalize(v["text"], dim=-1)
            learned_img = F.normalize(self.model.learned_image(pooled, self.model.image_bridge(logits)), dim=-1)
            learned_txt = F.normalize(self.model.learned_text(v["text"]), dim=-1)
        return (bridge_txt @ bridge_img.t()).cpu().numpy(), (learned_txt @ learned_img.t()).cpu().numpy()

    def _recall(self, scores: np.ndarray) -> dict[int, float]:
        return recall_at_k(scores, self.val["query_groups"], self.val["groups"], KS)

    def _best_mix(self, bridge: np.ndarray, learned: np.ndarray) -> tuple[float, dict[int, float]]:
        best = (-1.0, 0.0, {})
        for w in MIX_GRID:
            r = self._recall(bridge + w * learned)
            if sum(r.values()) > best[0]:
                best = (sum(r.values()), w, r)
        return best[1], best[2]

    def validate(self) -> dict[str, float]:
        if self.val is None:
            return {}
        bridge, learned = self._val_similarities()
        mix, joint = self._best_mix(bridge, learned)
        out = {f"t2i_R@{k}": v for k, v in joint.items()}
        out["learned_R@10"] = self._recall(learned)[10]
        out["bridge_R@10"] = self._recall(bridge)[10]
        out["mix"] = mix
        return out

    def _tune_bridge_temperature(self) -> None:
        best = (-1.0, self.model.cfg.bridge_temperature)
        for t in TEMPERATURE_GRID:
            self.model.cfg = replace(self.model.cfg, bridge_temperature=t)
            r = self._recall(self._val_similarities()[0])
            log.info("bridge temperature %.2f: val t2i %s", t, r)
            if sum(r.values()) > best[0]:
                best = (sum(r.values()), t)
        self.model.cfg = replace(self.model.cfg, bridge_temperature=best[1])
        log.info("bridge temperature set to %.2f on validation data", best[1])

    # --- output ---
    def export(self, state: dict[str, torch.Tensor], path: Path) -> None:
        self.module.load_state_dict(state, strict=False)
        mix = 1.0
        if self.val is not None:
            mix, _ = self._best_mix(*self._val_similarities())
        self.model.cfg = replace(self.model.cfg, learned_weight=float(mix))
        self.model.cpu()
        save_lite_weights(self.model, path, {"trained_on": str(self.opts.source), "validated_on": str(self.opts.val or "")}, half=True)
        self.model.to(self.device)


def train_lite(opts: TrainOptions, model: LiteDualEncoder, preprocess, tokenizer, train: list[Example], val: list[Example] | None, out: Path, device: str, on_epoch=None) -> TrainResult:
    trainer = LiteTrainer(opts, model, preprocess, tokenizer, train, val, out, device)
    result = trainer.fit(on_epoch)
    result.summary = {"config": model.cfg.to_json(), "train_images": len(trainer.train_examples)}
    return result
