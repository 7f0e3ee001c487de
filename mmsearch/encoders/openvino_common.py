"""What the OpenVINO towers share, without torch: whether OpenVINO runs a tower (backend choice), where
converted graphs are cached and under which key, reading/writing/compiling them, and the probe check's
cached torch fp32 reference.

Why apart: the text tower's run-time path (``openvino_text``) and the load from cached graphs
(``compiled``) need only this, so a one-shot text search never imports torch; the image tower
(``openvino_tower``) and the int8 graph (``openvino_int8``) build on it too, each importable alone.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import json
import logging
import os
from pathlib import Path
from typing import Callable

import numpy as np

from mmsearch.errors import ConfigError, ImageBackendError

log = logging.getLogger(__name__)

BACKENDS = ("auto", "torch", "openvino")
AUTO_MODELS = ("mmsearch-lite",)  # models whose compiled graph is validated by the tests (auto uses it only for these)
OV_PRECISION = {"fp32": "f32", "bf16": "bf16"}
GRAPH_FILE = "stages.json"  # names the stage graphs in order, with their precision
REFERENCE_FILE = "probe_reference.npy"
SIZES_FILE = "sizes.json"  # the byte sizes of the graph files as written, to notice a damaged file without parsing it
GRAPH_FORMAT = 2  # how image graphs are split and stored; part of their cache key


def openvino_available() -> bool:
    """True when the optional ``openvino`` package is installed (it is not imported here)."""
    return importlib.util.find_spec("openvino") is not None


def resolve_backend(kind: str, requested: str, spec: str, device: str, available: bool, error: type[ConfigError]) -> str:
    """What runs one tower (``kind`` image or text): 'auto' -> 'openvino' for the default model on CPU
    when OpenVINO is ``available``, else 'torch'; an explicit 'openvino' that cannot run is ``error``."""
    variable = f"MMSEARCH_{kind.upper()}_BACKEND"
    if requested not in BACKENDS:
        raise ConfigError(f"unknown {kind} backend {requested!r}: use one of {', '.join(BACKENDS)}")
    if requested == "torch":
        return "torch"
    if requested == "openvino":
        if device != "cpu":
            raise ConfigError(f"the openvino {kind} backend runs on CPU; use --device cpu or {variable}=torch")
        if not available:
            raise error(f"{variable}=openvino needs the openvino package: pip install 'mmsearch[openvino]'")
        return "openvino"
    base = spec.split(":", 1)[0]
    return "openvino" if device == "cpu" and base in AUTO_MODELS and available else "torch"


def resolve_image_backend(requested: str, spec: str, device: str) -> str:
    """'auto' -> 'openvino' for the default model on CPU when OpenVINO is installed, else 'torch'."""
    return resolve_backend("image", requested, spec, device, openvino_available(), ImageBackendError)


def cache_root() -> Path:
    from mmsearch.encoders.lite_files import cache_dir

    return cache_dir() / "openvino"


def cache_key(parts: list) -> str:
    """A graph cache folder name for what a converted graph depends on (``parts``: the weights via the
    model id, input shape, format) plus the torch and OpenVINO versions that converted it."""
    versions = [importlib.metadata.version(name) for name in ("torch", "openvino")]  # read without importing either
    return hashlib.sha256(json.dumps([*parts, *versions]).encode()).hexdigest()[:24]


def graph_key(model_id: str, image_size: int) -> str:
    """What the converted image graph depends on: the weights (via the model id), input size and converters."""
    return cache_key([GRAPH_FORMAT, model_id, image_size])


def image_graph_dir(model_id: str, image_size: int) -> Path:
    """Where the converted image graph of a model (and its probe reference) is cached."""
    return cache_root() / graph_key(model_id, image_size)


def _save(graphs: list[tuple[object, bool]], key_dir: Path) -> None:
    """Write stage_<i>.xml/.bin and then the index file naming them (written last, atomically: an
    index is only there once every stage it names is)."""
    import openvino as ov

    key_dir.mkdir(parents=True, exist_ok=True)
    names = []
    for position, (graph, at_requested) in enumerate(graphs):
        name = f"stage_{position}.xml"
        tmp = key_dir / f"{os.getpid()}.tmp.xml"
        ov.save_model(graph, str(tmp), compress_to_fp16=False)
        tmp.with_suffix(".bin").replace((key_dir / name).with_suffix(".bin"))
        tmp.replace(key_dir / name)
        names.append([name, at_requested])
    _write_json(key_dir / SIZES_FILE, _file_sizes(key_dir, [name for name, _ in names]))
    _write_json(key_dir / GRAPH_FILE, names)


def _write_json(path: Path, value) -> None:
    tmp = path.with_name(f"{os.getpid()}.tmp.json")
    tmp.write_text(json.dumps(value))
    tmp.replace(path)


def _file_sizes(key_dir: Path, names: list[str]) -> dict[str, int]:
    files = [key_dir / name for name in names] + [(key_dir / name).with_suffix(".bin") for name in names]
    return {file.name: file.stat().st_size for file in files}


def record_sizes(key_dir: Path) -> None:
    """Note the sizes of a cached graph that has just passed its probe check, if they were not noted when
    it was written (a cache from an older version), so later loads may compile it straight from its file."""
    try:
        if not (key_dir / SIZES_FILE).is_file():
            names = [name for name, _ in json.loads((key_dir / GRAPH_FILE).read_text())]
            _write_json(key_dir / SIZES_FILE, _file_sizes(key_dir, names))
    except (OSError, ValueError) as exc:
        log.info("cannot note the graph sizes in %s: %s", key_dir, exc)


def _intact(key_dir: Path, names: list[str]) -> bool:
    """True when every graph file has the size it was written with (a cache entry from before sizes were
    recorded, or a damaged one, is read and parsed instead)."""
    try:
        return json.loads((key_dir / SIZES_FILE).read_text()) == _file_sizes(key_dir, names)
    except (OSError, ValueError):
        return False


def _read(key_dir: Path) -> list[tuple[object, bool]]:
    import openvino as ov

    core = ov.Core()
    names = json.loads((key_dir / GRAPH_FILE).read_text())
    return [(core.read_model(str(key_dir / name)), bool(at_requested)) for name, at_requested in names]


def open_core(key_dir: Path):
    """An OpenVINO core that keeps its compiled kernels beside the graph (once the graph's folder exists)."""
    import openvino as ov

    core = ov.Core()
    if key_dir.is_dir():
        core.set_property({"CACHE_DIR": str(key_dir / "compiled")})
    return core


def compile_options(threads: int, precision: str) -> dict:
    """Latency first, ``threads`` inference threads never pinned to a core (the cores are shared with
    decode workers and request threads), at ``precision`` ("f32" or "bf16")."""
    return {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_NUM_THREADS": max(1, threads), "ENABLE_CPU_PINNING": False,
            "INFERENCE_PRECISION_HINT": precision}


def compile_cached(key_dir: Path, convert: Callable[[], list[tuple[object, bool]]], threads: int, precision: str):
    """-> (compiled one-stage graph, read from the cache?). An intact graph cached in ``key_dir`` is
    compiled from its file, which lets OpenVINO take the compiled kernels from its cache without reading
    and parsing the graph first (a one-shot query's load); otherwise the graph is read (or ``convert()``'s
    graph saved) and compiled."""
    try:
        (name, _), = json.loads((key_dir / GRAPH_FILE).read_text())
        if _intact(key_dir, [name]):
            return open_core(key_dir).compile_model(str(key_dir / name), "CPU", compile_options(threads, precision)), True
    except (OSError, ValueError):
        pass  # no cache entry yet, or an unreadable one: read or convert below
    except Exception as exc:  # OpenVINO refused the file: read or convert below
        log.warning("ignoring unreadable OpenVINO graph in %s: %s", key_dir, exc)
    graphs, cache_hit = load_or_convert(key_dir, convert)
    return open_core(key_dir).compile_model(graphs[0][0], "CPU", compile_options(threads, precision)), cache_hit


def load_or_convert(key_dir: Path, convert: Callable[[], list[tuple[object, bool]]]) -> tuple[list[tuple[object, bool]], bool]:
    """-> (graphs, read from the cache?): the graphs cached in ``key_dir``, or ``convert()``'s, saved
    there for next time."""
    if (key_dir / GRAPH_FILE).is_file():
        try:
            return _read(key_dir), True
        except Exception as exc:  # a damaged cache entry is rebuilt, never trusted
            log.warning("ignoring unreadable OpenVINO graph in %s: %s", key_dir, exc)
    graphs = convert()
    try:
        _save(graphs, key_dir)
    except OSError as exc:
        log.info("cannot cache the OpenVINO graph in %s: %s", key_dir, exc)
    return graphs, False


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(axis=1) / np.maximum(np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1), 1e-12)


def cached_reference(key_dir: Path, count: int, compute: Callable[[], np.ndarray]) -> np.ndarray:
    """The torch fp32 embeddings of a graph's ``count`` probe inputs (``compute()``), kept beside the
    cached graph (same key, so same weights): a later load checks the compiled graph without running
    the torch tower at all."""
    path = key_dir / REFERENCE_FILE
    if path.is_file():
        try:
            reference = np.load(path)
            if reference.shape[0] == count:
                return reference
        except (OSError, ValueError) as exc:
            log.warning("ignoring unreadable probe reference %s: %s", path, exc)
    reference = compute()
    try:
        tmp = key_dir / f"{os.getpid()}.tmp.npy"
        np.save(tmp, reference)
        tmp.replace(path)
    except OSError as exc:
        log.info("cannot cache the probe reference in %s: %s", key_dir, exc)
    return reference
