"""``mmsearch train``: pick the trainer for a model spec, load data and model, run, write the result."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Callable

import torch

from mmsearch.encoders.specs import lite_weights_path, split_spec
from mmsearch.encoders.devices import resolve_device
from mmsearch.errors import ConfigError
from mmsearch.train.data import load_examples
from mmsearch.train.options import TrainOptions
from mmsearch.train.trainer import EpochLog, TrainResult

log = logging.getLogger(__name__)


def is_lite(spec: str) -> bool:
    from mmsearch.encoders.lite import LITE_NAME

    return split_spec(spec)[0] == LITE_NAME


def default_out(spec: str) -> Path:
    name = Path(split_spec(spec)[0]).stem
    return Path(f"{name}-trained" + (".safetensors" if is_lite(spec) else ".pt"))


def check_options(opts: TrainOptions) -> None:
    if opts.epochs < 1:
        raise ConfigError("--epochs must be at least 1")
    if opts.batch_size is not None and opts.batch_size < 2:
        raise ConfigError("--batch-size must be at least 2 (contrastive training needs in-batch negatives)")
    if opts.lr is not None and opts.lr <= 0:
        raise ConfigError("--lr must be positive")
    if opts.aug_views < 0:
        raise ConfigError("--aug-views cannot be negative")
    if is_lite(opts.model):
        if opts.lock_image is False or opts.lock_text is False or opts.unlock_image_top or opts.unlock_text_top:
            raise ConfigError("mmsearch-lite trains its heads on cached features of frozen towers; unlocking tower layers is only supported for open_clip models")
        if opts.out is not None and opts.out.suffix != ".safetensors":
            raise ConfigError("mmsearch-lite weights are written as a .safetensors file; give --out NAME.safetensors")


def load_lite_for_training(spec: str):
    """-> (model, preprocess, tokenizer). Starts from the weights the spec names (or the shipped default)."""
    from mmsearch.encoders.lite import load_lite

    model, preprocess, tokenizer, _ = load_lite(lite_weights_path(split_spec(spec)[1]))
    return model, preprocess, tokenizer


def load_open_clip_for_training(spec: str):
    from mmsearch.encoders.registry import _build_open_clip

    arch, pretrained = split_spec(spec)
    model, preprocess, tokenizer, _ = _build_open_clip(spec, arch, pretrained)
    return model, preprocess, tokenizer


def train(opts: TrainOptions, on_epoch: Callable[[EpochLog], None] | None = None, model_loader: Callable | None = None) -> TrainResult:
    """Run one training. ``model_loader(spec) -> (model, preprocess, tokenizer)`` lets tests inject a model."""
    check_options(opts)
    if opts.threads:
        torch.set_num_threads(opts.threads)
    device = resolve_device(opts.device)
    torch.manual_seed(opts.seed)
    train_examples = load_examples(opts.source)
    val_examples = load_examples(opts.val) if opts.val else None
    out = opts.out or default_out(opts.model)
    lite = is_lite(opts.model)
    loader = model_loader or (load_lite_for_training if lite else load_open_clip_for_training)
    model, preprocess, tokenizer = loader(opts.model)
    log.info("training %s on %d examples (%s validation) -> %s", opts.model, len(train_examples), len(val_examples or []), out)
    if lite:
        from mmsearch.train.lite_trainer import train_lite

        result = train_lite(opts, model, preprocess, tokenizer, train_examples, val_examples, out, device, on_epoch)
    else:
        from mmsearch.train.clip_trainer import train_open_clip

        result = train_open_clip(opts, model, preprocess, tokenizer, train_examples, val_examples, out, device, on_epoch)
    write_report(result, opts)
    return result


def write_report(result: TrainResult, opts: TrainOptions) -> Path:
    """A JSON log beside the output: options, per-epoch loss and validation recall, the chosen epoch."""
    report = result.out.with_name(result.out.name + ".train-log.json")
    data = {
        "model": opts.model, "source": str(opts.source), "val": str(opts.val) if opts.val else None,
        "epochs": opts.epochs, "batch_size": opts.batch_size, "lr": opts.lr, "seed": opts.seed,
        "augment": opts.augment.__dict__, "aug_views": opts.aug_views, "templates": list(opts.templates),
        "head_design": opts.head_design, "best_epoch": result.best_epoch,
        "history": [h.__dict__ for h in result.history], **result.summary,
    }
    report.write_text(json.dumps(data, indent=2), encoding="utf-8")
    return report
