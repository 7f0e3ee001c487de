"""Symmetric InfoNCE (the CLIP loss) with a learnable temperature."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

MAX_LOGIT_SCALE = math.log(100.0)  # CLIP's clamp: a temperature below 0.01 only makes training unstable


def clip_loss(image_emb: torch.Tensor, text_emb: torch.Tensor, logit_scale: torch.Tensor) -> torch.Tensor:
    """Mean of image->text and text->image cross-entropy; row i of each side is a positive pair.

    Inputs need not be normalised. Batches must hold each concept at most once, otherwise an off-diagonal
    true match is punished as a negative (see :func:`mmsearch.train.sampler.unique_group_batches`).
    """
    image_emb = F.normalize(image_emb.float(), dim=-1)
    text_emb = F.normalize(text_emb.float(), dim=-1)
    scale = logit_scale.clamp(max=MAX_LOGIT_SCALE).exp()
    logits = scale * image_emb @ text_emb.t()
    target = torch.arange(len(logits), device=logits.device)
    return (F.cross_entropy(logits, target) + F.cross_entropy(logits.t(), target)) / 2
