"""The epoch loop shared by every trainer: batches, checkpoints, resume, validation, best-epoch keeping."""

from __future__ import annotations

import copy
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from mmsearch.train.checkpoint import checkpoint_path, load_checkpoint, save_checkpoint
from mmsearch.train.sampler import unique_group_batches

log = logging.getLogger(__name__)


@dataclass
class EpochLog:
    epoch: int
    train_loss: float
    val: dict[str, float] = field(default_factory=dict)
    seconds: float = 0.0

    def line(self) -> str:
        parts = [f"epoch {self.epoch}", f"loss {self.train_loss:.4f}"]
        parts += [f"{k} {v:.3f}" for k, v in self.val.items()]
        return "  ".join(parts) + f"  ({self.seconds:.1f}s)"


@dataclass
class TrainResult:
    out: Path
    history: list[EpochLog]
    best_epoch: int
    summary: dict = field(default_factory=dict)


def selection_score(val: dict[str, float]) -> float:
    """Higher is better: the sum of text->image recalls (R@1 + R@5 + R@10) on the validation set."""
    return sum(v for k, v in val.items() if k.startswith("t2i_R@"))


def cosine_lr(step: int, total: int, warmup: int) -> float:
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


class ContrastiveTrainer:
    """Subclasses provide ``module`` (what trains), ``groups``, ``train_step``, ``validate`` and ``export``."""

    module: torch.nn.Module
    groups: list[str]

    def __init__(self, out: Path, *, epochs: int, batch_size: int, lr: float, weight_decay: float, seed: int, resume: bool) -> None:
        self.out = out
        self.epochs, self.batch_size, self.lr, self.weight_decay = epochs, batch_size, lr, weight_decay
        self.seed, self.resume = seed, resume

    # --- provided by subclasses ---
    def train_step(self, batch: list[int], rng: np.random.Generator) -> torch.Tensor:
        raise NotImplementedError

    def validate(self) -> dict[str, float]:
        raise NotImplementedError

    def export(self, state: dict[str, torch.Tensor], path: Path) -> None:
        raise NotImplementedError

    # --- the loop ---
    def trainable_state(self) -> dict[str, torch.Tensor]:
        names = {n for n, p in self.module.named_parameters() if p.requires_grad}
        return {k: v.detach().cpu().clone() for k, v in self.module.state_dict().items() if k in names}

    def fit(self, on_epoch: Callable[[EpochLog], None] | None = None) -> TrainResult:
        params = [p for p in self.module.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(params, lr=self.lr, weight_decay=self.weight_decay)
        steps_per_epoch = max(1, len(unique_group_batches(self.groups, self.batch_size, np.random.default_rng(self.seed))))
        total = steps_per_epoch * self.epochs
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: cosine_lr(s, total, max(1, total // 20)))
        history: list[EpochLog] = []
        best_score, best_epoch, best_state = -math.inf, 0, None
        start_epoch = 1
        ckpt = checkpoint_path(self.out)
        if self.resume:
            state = load_checkpoint(ckpt)
            self.module.load_state_dict(state["module"], strict=False)
            optimizer.load_state_dict(state["optimizer"])
            scheduler.load_state_dict(state["scheduler"])
            history = [EpochLog(**h) for h in state["history"]]
            best_score, best_epoch, best_state = state["best_score"], state["best_epoch"], state["best_state"]
            start_epoch = state["epoch"] + 1
            log.info("resuming from %s after epoch %d", ckpt, state["epoch"])
        for epoch in range(start_epoch, self.epochs + 1):
            started = time.monotonic()
            rng = np.random.default_rng([self.seed, epoch])
            torch.manual_seed(self.seed * 1000 + epoch)
            losses = []
            self.module.train()
            for batch in unique_group_batches(self.groups, self.batch_size, rng):
                loss = self.train_step(batch, rng)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                scheduler.step()
                losses.append(float(loss.detach()))
            self.module.eval()
            val = self.validate()
            entry = EpochLog(epoch, float(np.mean(losses)) if losses else float("nan"), val, round(time.monotonic() - started, 2))
            history.append(entry)
            score = selection_score(val) if val else epoch  # without validation the last epoch wins
            if score > best_score:
                best_score, best_epoch, best_state = score, epoch, self.trainable_state()
            save_checkpoint(ckpt, {
                "epoch": epoch, "module": self.module.state_dict(), "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(), "history": [h.__dict__ for h in history],
                "best_score": best_score, "best_epoch": best_epoch, "best_state": best_state,
            })
            log.info(entry.line())
            if on_epoch:
                on_epoch(entry)
        if best_state is None:
            best_state = self.trainable_state()
        self.module.load_state_dict(best_state, strict=False)
        self.module.eval()
        self.export(copy.copy(best_state), self.out)
        return TrainResult(self.out, history, best_epoch)
