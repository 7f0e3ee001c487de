"""mmsearch-lite's int8 image graph: shipped beside the weights, used for indexing when it checks out.

Why: on a CPU with AVX512-VNNI the int8 graph runs the image tower ~1.6x faster than the
fp32-stem + bf16 graph (3.96 vs 6.46 ms/image at batch 32 on one thread of a 2-core EPYC), and the image
graph is about half the CPU time of indexing. Per-image cosine to torch fp32 on real pictures: median
0.996 (bf16 graph: 0.9995); text->image recall on the test sets moves by less than their noise (see
docs/model-card.md, "int8 image graph").

Calibration needs real pictures, which do not ship, so the graph is made once by
``python -m mmsearch.train.quantize`` (NNCF, an optional extra used only there) and shipped as
``mmsearch-lite.int8.xml/.bin`` with ``mmsearch-lite.int8.json``, which names the weights it was made
from (their sha256; the IR's own name carries it too). It is used only for those exact weights.

Choice (``MMSEARCH_IMAGE_INT8``): ``auto`` (default) uses it when the OpenVINO image backend runs at
bf16 (the CPUs where it was measured: AVX512-BF16/AMX, which all have VNNI int8 dot products; fp32,
asked for or resolved, means exact arithmetic was wanted), the graph is shipped for these weights and it
passes its own probe check against torch fp32 (cosine >= INT8_MIN_COSINE); otherwise the bf16 graph runs
as before, with a log line saying why. ``on`` uses it at any precision and makes any failure an error;
``off`` never uses it.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from mmsearch.encoders import openvino_tower as ovt
from mmsearch.encoders.lite_files import WEIGHTS_DIR
from mmsearch.encoders.openvino_tower import OpenVinoImageTower
from mmsearch.errors import ConfigError, ImageBackendError

log = logging.getLogger(__name__)

INT8_SETTINGS = ("auto", "on", "off")
GRAPH_STEM = "mmsearch-lite.int8"
META_SUFFIX = ".json"
GRAPH_FORMAT = 1  # layout of the graph and its metadata; a graph of another format is not used
# Probe check bar (min cosine over openvino_tower's synthetic probe images). The shipped graph scores
# 0.982 on them. They are smooth colour fields, too easy to show the first convolutions'
# sensitivity (a graph with those quantized too scores the same on them but a median of ~0.95 on real
# pictures), so this check catches a broken runtime or graph (wrong layout, bad kernels: far below 0.9),
# not a subtly worse quantization; that was measured on real pictures when the graph was made. 0.97
# leaves room for other CPUs' int8 kernels rounding differently.
INT8_MIN_COSINE = 0.97
INFERENCE_PRECISION = "f32"  # what the ops left unquantized (first convolutions, joint head) run at


class Int8GraphError(ImageBackendError):
    """The shipped int8 image graph cannot be used for this model here (missing, other weights, failed check)."""


def int8_paths(folder: Path = WEIGHTS_DIR) -> tuple[Path, Path]:
    """-> (IR .xml, metadata .json) of the int8 graph in ``folder`` (the .bin sits beside the .xml)."""
    return folder / f"{GRAPH_STEM}.xml", folder / f"{GRAPH_STEM}{META_SUFFIX}"


def graph_name(weights_sha256: str) -> str:
    """The IR's model name: it carries the weights' sha256, so a graph can be matched to its weights."""
    return f"{GRAPH_STEM}@{weights_sha256}"


def check_setting(setting: str) -> str:
    if setting not in INT8_SETTINGS:
        raise ConfigError(f"unknown MMSEARCH_IMAGE_INT8 {setting!r}: use one of {', '.join(INT8_SETTINGS)}")
    return setting


def wanted(setting: str, precision: str) -> bool:
    """Whether to try the int8 graph at this (resolved) precision."""
    return check_setting(setting) == "on" or (setting == "auto" and precision == "bf16")


def shipped_meta(model_id: str, image_size: int, folder: Path = WEIGHTS_DIR) -> dict:
    """The int8 graph's metadata, if a graph is shipped for exactly this model; else Int8GraphError."""
    xml, meta_path = int8_paths(folder)
    if not (xml.is_file() and xml.with_suffix(".bin").is_file() and meta_path.is_file()):
        raise Int8GraphError(f"no int8 image graph shipped in {folder}")
    try:
        meta = json.loads(meta_path.read_text())
    except (OSError, ValueError) as exc:
        raise Int8GraphError(f"unreadable int8 graph metadata {meta_path}: {exc}") from exc
    if meta.get("format") != GRAPH_FORMAT:
        raise Int8GraphError(f"int8 graph {xml} has format {meta.get('format')}, this mmsearch reads {GRAPH_FORMAT}")
    if meta.get("model_id") != model_id or not str(meta.get("weights_sha256", "")).startswith(model_id.rpartition("@")[2]):
        raise Int8GraphError(f"the shipped int8 image graph was made for {meta.get('model_id')}, not {model_id}")
    if meta.get("image_size") != image_size:
        raise Int8GraphError(f"the shipped int8 image graph takes {meta.get('image_size')} px, not {image_size}")
    return meta


def read_graph(meta: dict, folder: Path = WEIGHTS_DIR):
    """The IR named by ``meta``; refused if its own name carries other weights' sha256."""
    import openvino as ov

    xml, _ = int8_paths(folder)
    graph = ov.Core().read_model(str(xml))
    if graph.get_friendly_name() != graph_name(meta["weights_sha256"]):
        raise Int8GraphError(f"{xml} is named {graph.get_friendly_name()!r}, its metadata says weights {meta['weights_sha256'][:12]}")
    return graph


class Int8ImageTower(OpenVinoImageTower):
    """The shipped int8 graph as one stage; it takes uint8 pixels like the other graphs.

    Its uint8-input path normalises in the graph, which differs from torch's normalisation in the last
    float bit; int8 rounding turns such bits into a flipped activation level here and there: 0.9998
    cosine between the two paths on the probe images, >= 0.9986 on real photos. 0.999 still holds the two paths far closer to each
    other than either is to fp32 (~0.996)."""

    uint8_min_cosine = 0.999

    def describe(self) -> str:
        return f"openvino int8 (shipped graph), {self.threads} thread(s)"


def open_int8_tower(*, model_id: str, image_size: int, threads: int, reference: Callable[[torch.Tensor], np.ndarray],
                    folder: Path = WEIGHTS_DIR) -> Int8ImageTower:
    """Compile the shipped int8 graph and check it against the torch fp32 ``reference`` on the probe
    images (the reference cached with the fp32/bf16 graph of the same model is reused)."""
    meta = shipped_meta(model_id, image_size, folder)
    key_dir = ovt.image_graph_dir(model_id, image_size)  # shared with the bf16 graph: same probe reference
    try:
        graph = read_graph(meta, folder)
        key_dir.mkdir(parents=True, exist_ok=True)
        core = ovt.open_core(key_dir)
        options = ovt.compile_options(threads, INFERENCE_PRECISION)
        compiled = core.compile_model(graph, "CPU", options)
    except Int8GraphError:
        raise
    except Exception as exc:  # unreadable IR, compilation failure: one clear reason
        raise Int8GraphError(f"cannot compile the int8 image graph: {type(exc).__name__}: {exc}") from exc
    ovt.pin_mmap_threshold()
    tower = Int8ImageTower(
        [compiled], precision="int8", threads=max(1, threads), cache_hit=True, key_dir=key_dir, image_size=image_size,
        compile_uint8_stage=lambda mean, std: core.compile_model(ovt._uint8_input(graph, mean, std), "CPU", options),
    )
    try:
        worst = ovt.check_against_reference(tower, reference, image_size, min_cosine=INT8_MIN_COSINE)
    except ImageBackendError as exc:
        raise Int8GraphError(f"int8 {exc}") from exc
    log.info("image tower: int8 graph shipped for %s (probe cosine to torch fp32 %.4f >= %.2f)", model_id, worst, INT8_MIN_COSINE)
    return tower


def choose_image_tower(*, model_id: str, image_size: int, precision: str, threads: int,
                       reference: Callable[[torch.Tensor], np.ndarray], float_tower: Callable[[], OpenVinoImageTower],
                       int8: str | None = None) -> OpenVinoImageTower:
    """The OpenVINO image tower to run: the shipped int8 graph when ``int8`` (None: the
    MMSEARCH_IMAGE_INT8 setting) wants it and it checks out against ``reference``, else
    ``float_tower()`` (the fp32/bf16 graph)."""
    if int8 is None:
        from mmsearch.config import get_settings

        int8 = get_settings().image_int8
    if wanted(int8, precision):
        try:
            return open_int8_tower(model_id=model_id, image_size=image_size, threads=threads, reference=reference)
        except Int8GraphError as exc:
            if int8 == "on":
                raise
            log.info("image tower: int8 graph not used (%s); running the %s graph", exc, precision)
    else:
        log.info("image tower: int8 graph not used (MMSEARCH_IMAGE_INT8=%s, precision %s); running the %s graph", int8, precision, precision)
    return float_tower()


def graph_precision_summary(spec: str, device: str) -> str:
    """For `mmsearch info`: the precision the OpenVINO image graph of ``spec`` runs at on ``device``
    (resolved), said without loading the model (the load-time probe check can still refuse int8)."""
    from mmsearch.config import get_settings
    from mmsearch.encoders.lite_files import LITE_NAME, lite_config, lite_model_id, shipped_weights
    from mmsearch.encoders.precision import resolve_precision
    from mmsearch.encoders.specs import lite_weights, split_spec
    from mmsearch.errors import MmsearchError

    settings = get_settings()
    try:
        precision = resolve_precision(settings.precision, device)
    except MmsearchError as exc:
        return f"unavailable: {exc}"
    arch, weights = split_spec(spec)
    if not wanted(settings.image_int8, precision) or arch != LITE_NAME:
        return precision
    try:
        path = lite_weights(weights)
        if path is None:  # the bridge alone: no graph is shipped for it
            return precision
        if path != shipped_weights():  # a variant or your own weights: the one shipped graph is the default's
            return f"{precision} (the int8 graph ships for the default weights only)"
        shipped_meta(lite_model_id(path), lite_config(path).image_size)
    except MmsearchError as exc:
        return f"{precision} ({exc})"
    return f"int8 (shipped graph for these weights, checked against torch fp32 at load; {precision} if the check fails)"
