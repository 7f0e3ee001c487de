"""Start an mmsearch-lite model on another image tower: a weights file with the training-free bridge
alone, for ``mmsearch train --model mmsearch-lite:FILE`` to give heads.

    python -m mmsearch.train.lite_start --image-tower tf_efficientnet_lite2 --image-size 260 --out lite2-start.safetensors

Why a file: training starts from a weights file and keeps its config, and the config is where the image
tower and its input size live; the shipped file names Lite0. The file holds the prompt class
embeddings (MiniLM's, the same for every tower) and a config without a learned part, so it is a usable
model on its own (the bridge alone on that tower). The recipe that made ``mmsearch-lite:lite2`` is in
docs/model-card.md ("The Lite2 variant").
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

log = logging.getLogger(__name__)


def main() -> None:
    from mmsearch.encoders.lite import TOWER_PACKAGES, LiteConfig, bridge_only_model, save_lite_weights
    from mmsearch.train.tool_args import parse_tool_args

    p = argparse.ArgumentParser(description="write a bridge-only mmsearch-lite weights file for another image tower")
    p.add_argument("--image-tower", required=True, choices=sorted(TOWER_PACKAGES), help="timm name of the EfficientNet-Lite tower")
    p.add_argument("--image-size", type=int, required=True, help="the tower's input size in pixels (Lite0 224, Lite2 260)")
    p.add_argument("--out", type=Path, required=True)
    args = parse_tool_args(p)
    if args.out.suffix != ".safetensors":
        raise SystemExit("--out must name a .safetensors file")
    model, _ = bridge_only_model(LiteConfig(image_tower=args.image_tower, image_size=args.image_size))
    save_lite_weights(model, args.out, {"started_by": f"python -m mmsearch.train.lite_start --image-tower {args.image_tower} --image-size {args.image_size}"}, half=True)
    log.info("wrote %s (%s at %d px, the bridge alone)", args.out, args.image_tower, args.image_size)


if __name__ == "__main__":
    main()
