"""Make mmsearch-lite's int8 image graph (post-training quantization with NNCF), once, for shipping.

Run it from the repository root after building the data (data/recipes/build.py)::

    python -m mmsearch.train.quantize \\
        --manifest data/build/manifests/train.jsonl --manifest data/build/manifests/train_clipart.jsonl

It writes ``mmsearch-lite.int8.xml/.bin/.json`` beside the shipped weights (see
``mmsearch.encoders.openvino_int8``, which loads them without NNCF). Calibration images come from
training manifests only, drawn with a fixed seed, so the same data and versions give the same graph.
NNCF is needed only here: ``pip install 'mmsearch[quantize]'``.

What is quantized: every convolution of EfficientNet-Lite0 except the stem convolution and the first
depthwise convolution, which stay fp32 (quantizing them alone takes the median per-image cosine to torch
fp32 from ~0.995 down to ~0.95: their folded batch-norm weights are badly conditioned). The joint head
(classifier, softmax bridge, MLP) stays fp32 too: it is <1% of the work, and the bridge's softmax
magnifies any error in the logits. Bias correction is the full (slower) algorithm: it lifts the 5th
percentile of per-image cosine on real pictures from ~0.978 to ~0.986 at no run-time cost.
"""

from __future__ import annotations

import argparse
import json
import logging
import random
import time
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import torch

from mmsearch.encoders.lite import WEIGHTS_DIR, lite_model_id, load_lite, shipped_weights
from mmsearch.encoders.openvino_int8 import GRAPH_FORMAT, META_SUFFIX, graph_name, int8_paths
from mmsearch.errors import SourceError
from mmsearch.hashing import sha256_file

log = logging.getLogger(__name__)

CALIBRATION_IMAGES = 300
CALIBRATION_BATCH = 10
SEED = 0
FP32_CONVOLUTIONS = 2  # stem convolution + first depthwise convolution, in graph order


def calibration_paths(manifests: Sequence[Path], count: int, seed: int) -> list[str]:
    """``count`` image paths drawn evenly from the manifests (sorted, then a seeded sample of each).

    Test manifests are refused by name: calibration must never see a picture that recall is measured on."""
    from indexer.sources import scan

    per_manifest = [count // len(manifests) + (1 if i < count % len(manifests) else 0) for i in range(len(manifests))]
    rng = random.Random(seed)
    chosen: list[str] = []
    for manifest, wanted in zip(manifests, per_manifest):
        if "test" in manifest.name.lower():
            raise SourceError(f"{manifest} looks like a test split; calibrate on training manifests only")
        paths = sorted({item.path for item in scan(manifest).items if item.modality == "image" and item.path})
        if len(paths) < wanted:
            raise SourceError(f"{manifest} has {len(paths)} images, {wanted} needed for calibration")
        chosen.extend(rng.sample(paths, wanted))
    return chosen


def calibration_batches(paths: Sequence[str], preprocess) -> Iterator[np.ndarray]:
    """NHWC float batches, decoded and preprocessed as indexing does (transparency composited on white,
    EXIF rotation applied: mmsearch.imaging.decode.open_image), i.e. the graph's first input."""
    from mmsearch.imaging.decode import open_image

    for start in range(0, len(paths), CALIBRATION_BATCH):
        batch = [preprocess(open_image(path)) for path in paths[start : start + CALIBRATION_BATCH]]
        yield torch.stack(batch).permute(0, 2, 3, 1).contiguous().numpy()


def fp32_ops(graph) -> list[str]:
    """Names of the convolutions kept in fp32 (the first FP32_CONVOLUTIONS in graph order)."""
    convolutions = [op.get_friendly_name() for op in graph.get_ordered_ops() if op.get_type_name() in ("Convolution", "GroupConvolution")]
    return convolutions[:FP32_CONVOLUTIONS]


def quantize_image_graph(model: torch.nn.Module, image_size: int, batches: list[np.ndarray]):
    """-> (int8 OpenVINO graph of pixels -> joint embedding, names of the ops left in fp32)."""
    import nncf

    from mmsearch.encoders.openvino_tower import _convert_stage, _ImageGraph

    graph, _ = _convert_stage(_ImageGraph(model), torch.zeros(2, 3, image_size, image_size), True)
    kept = fp32_ops(graph)
    quantized = nncf.quantize(
        graph, nncf.Dataset(batches), subset_size=len(batches),
        ignored_scope=nncf.IgnoredScope(names=kept, types=["MatMul"]),
        fast_bias_correction=False,  # full bias correction: median cosine 0.9967 vs 0.9945, ~1 min instead of 10 s
    )
    return quantized, kept


def store_floats_as_fp16(graph, min_elements: int = 4096):
    """Store the large float constants left (the joint head, the classifier and the class-name
    embeddings) as fp16 that the graph converts back to fp32 at compile time: the head was trained and
    shipped in fp16 anyway, and the file is ~9 MB instead of ~14. (save_model's compress_to_fp16 skips a
    quantized graph.)"""
    import openvino as ov
    import openvino.opset13 as ops

    for op in graph.get_ordered_ops():
        if op.get_type_name() != "Constant" or op.get_output_element_type(0) != ov.Type.f32:
            continue
        data = op.get_data()
        if data.size < min_elements:
            continue
        as_fp16 = ops.convert(ops.constant(data.astype(np.float16)), ov.Type.f32)
        for target in list(op.output(0).get_target_inputs()):
            target.replace_source_output(as_fp16.output(0))
    graph.validate_nodes_and_infer_types()
    return graph


def write_graph(graph, meta: dict, out_dir: Path) -> Path:
    """Save the IR and then its metadata (written last: a graph without metadata is never used)."""
    import openvino as ov

    xml, meta_path = int8_paths(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    graph.set_friendly_name(graph_name(meta["weights_sha256"]))
    ov.save_model(store_floats_as_fp16(graph), str(xml), compress_to_fp16=False)
    meta_path.write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
    return xml


def make_int8_graph(manifests: Sequence[Path], *, weights: Path, out_dir: Path, count: int = CALIBRATION_IMAGES, seed: int = SEED) -> Path:
    """Quantize the image graph of mmsearch-lite with ``weights`` and write it to ``out_dir``."""
    import nncf
    import openvino

    started = time.perf_counter()
    model, preprocess, _, model_id = load_lite(weights)
    paths = calibration_paths(manifests, count, seed)
    batches = list(calibration_batches(paths, preprocess))
    image_size = model.cfg.image_size
    with torch.inference_mode():
        graph, kept = quantize_image_graph(model.eval(), image_size, batches)
    meta = {
        "format": GRAPH_FORMAT,
        "model_id": model_id,
        "weights_sha256": sha256_file(weights),
        "image_size": image_size,
        "fp32_ops": kept,
        "calibration": {"manifests": [m.name for m in manifests], "images": len(paths), "seed": seed},
        "versions": {"openvino": openvino.__version__, "nncf": nncf.__version__, "torch": torch.__version__},
    }
    xml = write_graph(graph, meta, out_dir)
    log.info("int8 image graph for %s written to %s in %.0fs", model_id, xml, time.perf_counter() - started)
    return xml


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m mmsearch.train.quantize", description=__doc__.split("\n\n")[0])
    parser.add_argument("--manifest", type=Path, action="append", required=True, help="training manifest (repeatable)")
    parser.add_argument("--weights", type=Path, default=shipped_weights(), help="mmsearch-lite weights (default: the shipped file)")
    parser.add_argument("--out", type=Path, default=WEIGHTS_DIR, help="folder for the graph (default: beside the shipped weights)")
    parser.add_argument("--count", type=int, default=CALIBRATION_IMAGES, help="calibration images")
    parser.add_argument("--seed", type=int, default=SEED)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.weights is None:
        parser.error("no shipped weights in this install: give --weights")
    xml = make_int8_graph(args.manifest, weights=args.weights, out_dir=args.out, count=args.count, seed=args.seed)
    print(f"{xml} ({lite_model_id(args.weights)}, {META_SUFFIX} beside it)")


if __name__ == "__main__":
    main()
