"""The default model loaded from its cached compiled graphs (mmsearch.encoders.compiled): same embeddings
as the full load, never used when incomplete or damaged, and its tokenizer is MiniLM's exactly.

OpenVINO runs in child processes only (see tests/openvino_child.py)."""

from __future__ import annotations

import importlib.util

import pytest
import torch

from mmsearch.encoders.lite import LiteConfig, make_tokenizer, minilm_dir
from openvino_child import in_child

needs_openvino = pytest.mark.skipif(importlib.util.find_spec("openvino") is None, reason="openvino is not installed")

AWKWARD_TEXTS = [
    "a red apple", "", "   ", "Crème brûlée &amp; café", "ÐŸÑ€Ð¸Ð²ÐµÑ‚ mojibake", "東京タワー 🗼 at night", "word " * 200,
    "SKU-0042/XL", "a\tb\nc", "İstanbul ǅ ß", "&lt;b&gt;bold&lt;/b&gt;", "don't stop-believing!!!", "\u200bzero width",
    "unaffable unaffableness", "ＦＵＬＬＷＩＤＴＨ ｔｅｘｔ", "\x1b[31mred\x1b[0m shoes", "line\r\nbreak", "a &amp;amp; b",
    "  plain   ascii, with 'quotes' and (brackets) #42 ~ ok  ",
]


def test_minilm_tokenizer_gives_open_clips_token_ids():
    from open_clip.tokenizer import HFTokenizer

    cfg = LiteConfig()
    reference = HFTokenizer(str(minilm_dir()), context_length=cfg.context_length)
    ours = make_tokenizer(cfg)
    assert torch.equal(ours(AWKWARD_TEXTS), reference(AWKWARD_TEXTS))
    assert torch.equal(ours("a dog"), reference("a dog"))
    assert ours(AWKWARD_TEXTS).shape == (len(AWKWARD_TEXTS), cfg.context_length)


_LOADS = """
    import json, logging, shutil
    from pathlib import Path
    import numpy as np
    import torch
    from PIL import Image
    from bench.photos import make_photo
    from mmsearch.encoders import load_encoder
    from mmsearch.encoders.openvino_common import cache_root
    from mmsearch.imaging.fastpath import split_transform

    images = [Image.open(p).convert("RGB") for p in sorted(Path("data/sample").rglob("*.png"))[:12]]
    images += [make_photo(i, (640, 480)) for i in range(4)]
    texts = ["a red apple", "a car", "Crème brûlée", "blue running shoes with white soles"]

    def load(**kwargs):
        encoder = load_encoder("mmsearch-lite", "cpu", batch_size=8, threads=1, **kwargs)
        return encoder, encoder.encode_images(images), encoder.encode_texts(texts)

    def chain(encoder):  # the channels' wrappers, outermost first, then what runs the towers
        out = [encoder]
        while "inner" in vars(out[-1]):
            out.append(vars(out[-1])["inner"])
        return out

    def backend(encoder):
        return type(chain(encoder)[-1]).__name__

    first, first_images, first_texts = load()  # an empty cache: the full load converts and caches the graphs
    second, second_images, second_texts = load()  # everything cached: the graphs alone
    # the indexer's fast path: uint8 crops straight from the decode workers into the graph and the colour channel
    worker = split_transform(second.image_transform).worker
    crops = torch.stack([worker(image) for image in images])
    facts = {
        "kinds": [backend(first), backend(second)],
        "wrapped": [[type(e).__name__ for e in chain(encoder)[:-1]] for encoder in (first, second)],
        "channel_ids": "+colour-" in second.model_id and "+hubs-" in second.model_id and second.dim == chain(second)[-1].dim + 12,
        "same_ids": first.model_id == second.model_id and first.dim == second.dim,
        "uint8": second.takes_uint8_pixels,
        "uint8_diff": float(np.abs(second.encode_image_tensors(crops) - second_images).max()),
        "uint8_cosine": float((second.encode_image_tensors(crops) * second_images).sum(axis=1).min()),
        "image_graph": second.inner.image_backend,
        "image_diff": float(np.abs(first_images - second_images).max()),
        "text_diff": float(np.abs(first_texts - second_texts).max()),
        "torch_asked": backend(load(image_backend="torch")[0]),
    }
    graph_dirs = sorted(p.parent for p in cache_root().rglob("stages.json"))
    for graph_dir in graph_dirs:
        (graph_dir / "probe_reference.npy").unlink()
    facts["without_references"] = backend(load()[0])
    for graph_dir in graph_dirs:  # the full load put them back; now damage a graph instead
        for weights in graph_dir.glob("stage_*.bin"):
            weights.write_bytes(b"not a graph")
    damaged, damaged_images, damaged_texts = load()
    facts["damaged"] = backend(damaged)
    facts["damaged_diff"] = float(np.abs(damaged_images - first_images).max())
    facts["repaired"] = backend(load()[0])
    print(json.dumps(facts))
"""


@needs_openvino
@pytest.mark.slow
def test_cached_graphs_load_alone_with_the_same_embeddings_and_never_when_damaged(tmp_path):
    facts = in_child(_LOADS, tmp_path / "cache", timeout=1800)
    assert facts["kinds"] == ["TorchDualEncoder", "CompiledLiteEncoder"]
    # the hub channel over the colour channel on both paths (11 colour dims, 1 hub dim)
    assert facts["wrapped"] == [["HubChannelEncoder", "ColourChannelEncoder"]] * 2 and facts["channel_ids"]
    assert facts["same_ids"] and facts["uint8"]
    # uint8 crops (the indexer's fast path) embed as the float tensors do: the same arithmetic on an fp32
    # graph; on a bf16/int8 graph (CPUs with AVX512-BF16) rounding the in-graph normalisation differently
    # moves a few activations across a quantisation step (measured: cosine >= 0.999, max diff ~0.006)
    if "fp32" in facts["image_graph"]:
        assert facts["uint8_diff"] < 1e-4, facts["image_graph"]
    else:
        assert facts["uint8_cosine"] > 0.998, facts["image_graph"]
    # the same graphs either way (the first load runs them as converted, the second as read back: ~1e-8)
    assert facts["image_diff"] < 1e-6 and facts["text_diff"] < 1e-6
    assert facts["torch_asked"] == "TorchDualEncoder"  # MMSEARCH_IMAGE_BACKEND=torch is obeyed
    assert facts["without_references"] == "TorchDualEncoder"  # nothing to check the graphs against: full load
    assert facts["damaged"] == "TorchDualEncoder" and facts["damaged_diff"] < 1e-6  # rebuilt from the model
    assert facts["repaired"] == "CompiledLiteEncoder"
