"""Training checkpoints: written every epoch, atomically, so ``--resume`` continues where a run stopped."""

from __future__ import annotations

import os
from pathlib import Path

import torch

from mmsearch.errors import ConfigError


def checkpoint_path(out: Path) -> Path:
    """Where the resumable training state of a run that writes ``out`` lives."""
    return out.with_name(out.name + ".train-state.pt")


def save_checkpoint(path: Path, state: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def load_checkpoint(path: Path) -> dict:
    if not path.is_file():
        raise ConfigError(f"--resume: no training checkpoint at {path}")
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:  # a truncated or foreign file: say which one
        raise ConfigError(f"--resume: cannot read checkpoint {path}: {type(exc).__name__}: {exc}") from exc
