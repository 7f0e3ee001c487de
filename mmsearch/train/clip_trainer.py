"""Fine-tune an open_clip model end to end on a user's image-text catalogue.

Images are decoded and augmented every step (no feature cache: the towers change while training).
Towers can be locked whole or except their top blocks (open_clip's LiT-style ``lock_*_tower``). The
result is an open_clip checkpoint (``{"state_dict": ...}``) that loads as ``--model ARCH:/path/ckpt.pt``.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from mmsearch.imaging.decode import DecodeError, open_image
from mmsearch.errors import ConfigError
from mmsearch.train.augment import pick_text, templated_texts, train_transform
from mmsearch.train.data import Example, group_keys
from mmsearch.train.lite_features import DECODE_SIZE
from mmsearch.train.loss import clip_loss
from mmsearch.train.metrics import recall_at_k
from mmsearch.train.options import TrainOptions
from mmsearch.train.trainer import ContrastiveTrainer, TrainResult

log = logging.getLogger(__name__)

KS = (1, 5, 10)
EVAL_BATCH = 64


def lock_towers(model: torch.nn.Module, opts: TrainOptions) -> None:
    """Apply --lock-image/--unlock-image-top and --lock-text/--unlock-text-top to an open_clip model."""
    if opts.lock_image or opts.unlock_image_top:
        model.lock_image_tower(unlocked_groups=opts.unlock_image_top)
    if opts.lock_text or opts.unlock_text_top:
        model.lock_text_tower(unlocked_layers=opts.unlock_text_top)
    if not any(p.requires_grad for p in model.parameters()):
        raise ConfigError("both towers are locked, nothing is left to train; unlock some top layers")


def readable(examples: list[Example]) -> list[Example]:
    """Drop examples whose image cannot be decoded, once, before training starts."""
    kept = []
    for ex in examples:
        try:
            open_image(ex.image_path, target_size=DECODE_SIZE)
            kept.append(ex)
        except (DecodeError, OSError) as exc:
            log.warning("leaving out %s: %s", ex.image_path, exc)
    return kept


class ClipTrainer(ContrastiveTrainer):
    def __init__(self, opts: TrainOptions, model: torch.nn.Module, preprocess, tokenizer, train: list[Example], val: list[Example] | None, out: Path, device: str) -> None:
        super().__init__(out, epochs=opts.epochs, batch_size=opts.batch_size or 32, lr=opts.lr or 1e-5,
                         weight_decay=opts.weight_decay, seed=opts.seed, resume=opts.resume)
        self.opts, self.preprocess, self.tokenizer, self.device = opts, preprocess, tokenizer, device
        self.module = model.to(device)
        for p in self.module.parameters():
            p.requires_grad_(True)
        lock_towers(self.module, opts)
        self.train_examples = readable(train)
        if len(self.train_examples) < 2:
            raise ConfigError("training needs at least two readable captioned images")
        self.groups = group_keys(self.train_examples)
        self.val_examples = readable(val) if val else None
        self.transform = train_transform(preprocess, opts.augment)

    def _texts(self, batch: list[int], rng: np.random.Generator) -> list[str]:
        out = []
        for i in batch:
            ex = self.train_examples[i]
            texts = [ex.caption, *ex.texts[1:], *templated_texts(ex.caption, self.opts.templates)]
            n_alt = len(ex.texts) - 1
            choice = pick_text(0, list(range(1, 1 + n_alt)), list(range(1 + n_alt, len(texts))), self.opts.template_prob, rng)
            out.append(texts[choice])
        return out

    def train_step(self, batch: list[int], rng: np.random.Generator) -> torch.Tensor:
        images = torch.stack([self.transform(open_image(self.train_examples[i].image_path, target_size=DECODE_SIZE)) for i in batch])
        tokens = self.tokenizer(self._texts(batch, rng)).to(self.device)
        image_emb = self.module.encode_image(images.to(self.device))
        text_emb = self.module.encode_text(tokens)
        return clip_loss(image_emb, text_emb, self.module.logit_scale)

    def _embed_val(self) -> tuple[torch.Tensor, torch.Tensor, list[str], list[str]]:
        examples = self.val_examples
        groups = group_keys(examples)
        first_group: dict[str, str] = {}
        for ex, g in zip(examples, groups):
            first_group.setdefault(ex.caption, g)
        queries = list(first_group)
        with torch.inference_mode():
            images = [
                self.module.encode_image(torch.stack([self.preprocess(open_image(ex.image_path, target_size=DECODE_SIZE)) for ex in examples[s : s + EVAL_BATCH]]).to(self.device))
                for s in range(0, len(examples), EVAL_BATCH)
            ]
            texts = [self.module.encode_text(self.tokenizer(queries[s : s + EVAL_BATCH]).to(self.device)) for s in range(0, len(queries), EVAL_BATCH)]
        return F.normalize(torch.cat(images).float(), dim=-1), F.normalize(torch.cat(texts).float(), dim=-1), groups, [first_group[q] for q in queries]

    def validate(self) -> dict[str, float]:
        if not self.val_examples:
            return {}
        images, texts, groups, query_groups = self._embed_val()
        recall = recall_at_k((texts @ images.t()).cpu().numpy(), query_groups, groups, KS)
        return {f"t2i_R@{k}": v for k, v in recall.items()}

    def export(self, state: dict[str, torch.Tensor], path: Path) -> None:
        """Write the whole model (locked parts included) so the checkpoint stands alone."""
        full = {k: v.detach().cpu() for k, v in self.module.state_dict().items()}
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        torch.save({"state_dict": full}, tmp)
        os.replace(tmp, path)


def train_open_clip(opts: TrainOptions, model, preprocess, tokenizer, train: list[Example], val: list[Example] | None, out: Path, device: str, on_epoch=None) -> TrainResult:
    trainer = ClipTrainer(opts, model, preprocess, tokenizer, train, val, out, device)
    result = trainer.fit(on_epoch)
    result.summary = {"train_images": len(trainer.train_examples)}
    return result
