"""What a training run is asked to do (the CLI fills this in; tests build it directly)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from mmsearch.train.augment import DEFAULT_TEMPLATES, AugmentConfig

HEAD_DESIGNS = ("residual", "lit", "mlp")


@dataclass
class TrainOptions:
    source: Path
    val: Path | None = None
    model: str = "mmsearch-lite"
    out: Path | None = None  # default: ./<model-name>-trained.safetensors (lite) or .pt (open_clip)
    epochs: int = 10
    batch_size: int | None = None  # default: 256 for lite (cheap cached features), 32 for open_clip
    lr: float | None = None  # default: 1e-3 for lite heads, 1e-5 for open_clip fine-tuning
    weight_decay: float = 0.05
    lock_image: bool | None = None  # None: locked for lite, unlocked for open_clip
    unlock_image_top: int = 0
    lock_text: bool | None = None
    unlock_text_top: int = 0
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    aug_views: int = 4
    templates: tuple[str, ...] = DEFAULT_TEMPLATES
    template_prob: float = 0.3  # chance a step pairs an image with a templated caption ('an emoji of {caption}')
    cache_dir: Path = Path(".mmsearch-cache")
    resume: bool = False
    device: str = "auto"
    seed: int = 0
    threads: int = 0
    # mmsearch-lite head design, see mmsearch.train.lite_trainer.configure_heads
    head_design: str = "residual"
    joint_dim: int | None = None
    head_hidden: int | None = None
    workers: int = 0  # decode workers for open_clip fine-tuning
