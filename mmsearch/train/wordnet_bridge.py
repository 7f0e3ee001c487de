"""Give mmsearch-lite's bridge the WordNet class texts: ``python -m mmsearch.train.wordnet_bridge``.

The bridge places an image at its ImageNet class probabilities @ MiniLM embeddings of the 1000 class
texts. With bare names ("a photo of a ox") a query has to say the class's own word; with each class's
synonyms, hypernym chain and gloss (data/recipes/wordnet_build.py) "a zebu", "a sliced lime" or "a big
cat" land near the right classes. This rewrites a weights file with those embeddings (the
``bridge_class_emb`` buffer, ``bridge_classes: "wordnet"``) and the bridge/learned mix picked on photo
validation data; the heads and the tower weights are untouched, and the image head keeps its trained
input (the prompt bridge), so nothing needs retraining. Run time reads only the weights file.

    python data/recipes/wordnet_build.py --out data/build/wordnet.json.gz
    python -m mmsearch.train.wordnet_bridge --wordnet data/build/wordnet.json.gz \\
        --weights mmsearch/encoders/weights/mmsearch-lite.safetensors --learned-weight 1.0 \\
        --out mmsearch/encoders/weights/mmsearch-lite.safetensors
"""

from __future__ import annotations

import argparse
import gzip
import json
import logging
from dataclasses import replace
from pathlib import Path

import torch
import torch.nn.functional as F

from mmsearch.encoders.lite import LiteDualEncoder, load_lite, save_lite_weights

log = logging.getLogger(__name__)

TEXT_BATCH = 128


def read_class_texts(path: Path) -> list[str]:
    """The 1000 class texts of a wordnet_build.py file, in ImageNet class order."""
    with gzip.open(path, "rt", encoding="utf-8") as fh:
        texts = json.load(fh)["class_texts"]
    if len(texts) != 1000:
        raise ValueError(f"{path}: {len(texts)} class texts, expected 1000")
    return texts


def embed_texts(model: LiteDualEncoder, tokenizer, texts: list[str]) -> torch.Tensor:
    """MiniLM sentence embeddings, L2-normalised (what the prompt class embeddings are too)."""
    out = []
    with torch.inference_mode():
        for start in range(0, len(texts), TEXT_BATCH):
            out.append(model.text_features(tokenizer(texts[start : start + TEXT_BATCH])))
    return F.normalize(torch.cat(out).float(), dim=-1)


def with_wordnet_bridge(model: LiteDualEncoder, tokenizer, class_texts: list[str], learned_weight: float | None) -> LiteDualEncoder:
    """A copy of ``model``'s config and weights whose bridge output uses ``class_texts``."""
    cfg = replace(model.cfg, bridge_classes="wordnet")
    if learned_weight is not None:
        cfg = replace(cfg, learned_weight=float(learned_weight))
    out = LiteDualEncoder(cfg, load_towers=False)
    out.load_state_dict(model.state_dict(), strict=False)
    out._finetuned = set(getattr(model, "_finetuned", set()))
    out.bridge_class_emb.copy_(embed_texts(model, tokenizer, class_texts))
    return out


def main() -> None:
    p = argparse.ArgumentParser(description="rewrite a mmsearch-lite weights file with the WordNet class texts in its bridge")
    p.add_argument("--wordnet", type=Path, required=True, help="the file data/recipes/wordnet_build.py wrote")
    p.add_argument("--weights", type=Path, required=True, help="the weights file to start from (its heads are kept)")
    p.add_argument("--out", type=Path, required=True, help="where to write the new weights file")
    p.add_argument("--learned-weight", type=float, default=None, help="the bridge/learned mix (default: keep the file's)")
    args = p.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    from safetensors import safe_open

    with safe_open(str(args.weights), framework="pt") as fh:
        kept = {k: v for k, v in (fh.metadata() or {}).items() if k not in ("config", "finetuned")}
    model, _, tokenizer, _ = load_lite(args.weights)
    model.eval()
    out = with_wordnet_bridge(model, tokenizer, read_class_texts(args.wordnet), args.learned_weight)
    save_lite_weights(out, args.out, {**kept, "bridge_classes_from": args.wordnet.name}, half=True)
    log.info("wrote %s (learned weight %.2f)", args.out, out.cfg.learned_weight)


if __name__ == "__main__":
    main()
