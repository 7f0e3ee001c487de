"""Where FAISS searches run: on the CPU, or on CUDA GPUs when a GPU build of FAISS sees one.

The CPU index stays the one that is saved, updated and used for filtered searches: GPU indexes ignore
an ``IDSelector`` silently (they would return items the filter excludes), so only unfiltered searches
go to the GPU copy. Index types the GPU cannot hold (HNSW graphs, IVF with an HNSW coarse quantizer on
some builds) stay on the CPU, with a log line saying so. Nothing here runs without a GPU build of
FAISS (``pip install 'mmsearch[gpu]'``, see the README); the CPU wheel has no GPU symbols at all.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Literal

import faiss

from mmsearch.errors import ConfigError

log = logging.getLogger(__name__)

FaissDevice = Literal["auto", "cpu", "gpu"]


def gpu_count() -> int:
    """GPUs visible to this FAISS build (0 for the CPU wheel, or a GPU wheel on a machine without one)."""
    if not hasattr(faiss, "StandardGpuResources"):
        return 0
    try:
        return int(faiss.get_num_gpus())
    except RuntimeError:  # a GPU build on a machine whose CUDA driver is missing or broken
        return 0


def resolve(requested: str) -> str:
    """'auto' -> 'gpu' when FAISS can use one, else 'cpu'. Asking for 'gpu' without one is an error."""
    if requested not in ("auto", "cpu", "gpu"):
        raise ConfigError(f"unknown FAISS device {requested!r}: use auto, cpu or gpu")
    if requested == "cpu":
        return "cpu"
    if gpu_count() > 0:
        return "gpu"
    if requested == "gpu":
        build = "a GPU build of FAISS without a visible GPU" if hasattr(faiss, "StandardGpuResources") else "the CPU build of FAISS"
        raise ConfigError(f"MMSEARCH_FAISS_DEVICE=gpu was asked for but this is {build} (try auto)")
    return "cpu"


def describe(requested: str = "auto") -> str:
    """One line for `mmsearch info` and logs: which device unfiltered searches would use."""
    try:
        device = resolve(requested)
    except ConfigError as exc:
        return f"unavailable ({exc})"
    if device == "gpu":
        return f"gpu ({gpu_count()} visible, faiss {faiss.__version__})"
    return f"cpu (faiss {faiss.__version__}, {'GPU build, no GPU visible' if hasattr(faiss, 'StandardGpuResources') else 'CPU build'})"


@dataclass
class GpuPlacer:
    """Clones CPU indexes onto all visible GPUs. Holds the GPU resources, which must outlive the clones."""

    _resources: list = field(default_factory=list)

    def clone(self, native: faiss.Index) -> faiss.Index | None:
        """A GPU copy of ``native``, or None (logged) when this index type cannot go to the GPU."""
        try:
            options = faiss.GpuMultipleClonerOptions()
            options.shard = True  # split the vectors across GPUs rather than copying them to each
            options.useFloat16 = False  # exact scores, same as the CPU index
            return faiss.index_cpu_to_all_gpus(native, co=options)
        except (RuntimeError, AttributeError) as exc:
            log.warning("this index type stays on the CPU (FAISS cannot put it on the GPU): %s", str(exc).splitlines()[0])
            return None


def place_on_device(indexes: dict, requested: str, placer: GpuPlacer | None = None) -> str:
    """Attach GPU copies to ``indexes`` (modality -> VectorIndex) when the device resolves to GPU.
    Returns the device used, for logs."""
    device = resolve(requested)
    if device != "gpu" or not indexes:
        return "cpu"
    placer = placer or GpuPlacer()
    placed = 0
    for modality, index in indexes.items():
        if len(index) == 0:
            continue
        copy = placer.clone(index.native)
        if copy is not None:
            index.attach_search_copy(copy)
            placed += 1
    log.info("FAISS: %s of %s vector indexes on %s GPU(s)", placed, len(indexes), gpu_count())
    return "gpu" if placed else "cpu"
