"""Thread counts for torch, FAISS/OpenMP and the HTTP threadpool, decided in one place.

A process that runs several thread pools side by side (torch intra-op, FAISS's OpenMP, DataLoader
workers, the server's request threads) easily asks for many more runnable threads than there are
cores; they then time-slice, spin in OpenMP barriers and every request gets slower. These functions
give each pool its share so the total matches the cores:

* indexing: decode workers are separate processes (single-threaded each); the model gets the cores;
* serving: text queries are batched in two stages with a worker thread each (mmsearch.batching): the
  text tower, on half the cores (one of two), then the vector search, one FAISS thread; the stages
  overlap, so the tower does not get all cores: a second tower thread only spun at its barrier while
  the search stage and the event loop waited for a core. Other model calls (images) get the cores.
  Request threads mostly wait for their batch, so there are several per core, enough for concurrent
  queries to meet in one batch; a query never spins more threads than there are cores.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
from dataclasses import dataclass

log = logging.getLogger(__name__)


def available_cores() -> int:
    """Cores this process may run on (respects taskset/cgroup CPU affinity where the OS reports it)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


@dataclass(frozen=True)
class ThreadPlan:
    torch_threads: int  # intra-op threads of one model call
    faiss_threads: int  # OpenMP threads of one FAISS call
    request_threads: int  # concurrent blocking request handlers (serving only; 0 when not serving)
    switch_interval: float = 0.005  # sys.setswitchinterval (Python's default): how long a thread may hold the GIL others wait for


_plan: ThreadPlan | None = None  # the plan in force, once one is applied
_faiss_set_here = threading.local()  # .threads: the FAISS thread count already set on this thread


def _apply(plan: ThreadPlan) -> ThreadPlan:
    global _plan
    import faiss

    # torch and FAISS may share one OpenMP runtime, whose thread count is per calling thread: FAISS
    # first, then torch, so torch's own pool ends up with its number on this thread.
    faiss.omp_set_num_threads(plan.faiss_threads)
    _faiss_set_here.threads = plan.faiss_threads
    _set_torch_threads(plan.torch_threads)
    sys.setswitchinterval(plan.switch_interval)
    _plan = plan
    log.debug("threads: %s", plan)
    return plan


def faiss_threads_on_this_thread() -> None:
    """Give the calling thread the plan's FAISS thread count (call before a FAISS search).

    OpenMP keeps its thread count per thread: the count the plan set on the thread that applied it does
    not reach the server's search worker or request threads, whose FAISS searches then ran on every core
    and left an OpenMP worker spinning after each one (~20 % of a 1M-item server's CPU, perf, 2 cores).
    Cheap after the first call on a thread (a thread-local read)."""
    plan = _plan
    if plan is None or getattr(_faiss_set_here, "threads", None) == plan.faiss_threads:
        return
    import faiss

    faiss.omp_set_num_threads(plan.faiss_threads)
    _faiss_set_here.threads = plan.faiss_threads


def _set_torch_threads(count: int) -> None:
    """torch's intra-op threads, without importing torch for it: a process that has not imported torch
    yet (a one-shot query runs the compiled model and may never need it; importing it costs ~1.2 s)
    gets the count through OMP_NUM_THREADS, which torch reads when it starts its pool. A count the user
    set in OMP_NUM_THREADS is left alone there."""
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(count)
    elif "OMP_NUM_THREADS" not in os.environ or os.environ.get("_MMSEARCH_SET_OMP") == os.environ.get("OMP_NUM_THREADS"):
        os.environ["OMP_NUM_THREADS"] = os.environ["_MMSEARCH_SET_OMP"] = str(count)


REQUESTS_PER_CORE = 8
# A server's stage workers hand the GIL back and forth with the event loop many times per batch; after
# its native part (the tower, FAISS) a worker waited up to Python's 5 ms for the GIL. 1 ms: 16-client
# p50 at 1M items 17.8-19.5 ms against 19.8-21.4 ms in four alternating pairs, same CPU (bench/README.md).
SERVING_SWITCH_INTERVAL = 0.001
BATCH_SWITCH_INTERVAL = 0.005  # Python's default


def serving_text_threads(threads: int = 0) -> int:
    """Inference threads of the compiled text tower in a server: half the cores, at least one. At 1M items
    on 2 cores, one thread (measured as MMSEARCH_THREADS=1, 3 runs each) took the server's CPU per text
    query from 1.92-2.16 to 1.60-1.68 ms with the two-stage path, at the same p50."""
    return max(1, (threads or available_cores()) // 2)


def configure_serving(threads: int = 0) -> ThreadPlan:
    """All cores for a batched image call, one FAISS thread per search, REQUESTS_PER_CORE request threads
    per core (they wait on the batch, not compute) and a 1 ms GIL switch interval."""
    cores = threads or available_cores()
    return _apply(ThreadPlan(torch_threads=cores, faiss_threads=1, request_threads=REQUESTS_PER_CORE * cores,
                             switch_interval=SERVING_SWITCH_INTERVAL))


def configure_batch(threads: int = 0) -> ThreadPlan:
    """Indexing and CLI search: one batch at a time, so each model or FAISS call gets all the cores.

    Decode workers are separate processes and torch's DataLoader gives each of them one thread."""
    cores = threads or available_cores()
    return _apply(ThreadPlan(torch_threads=cores, faiss_threads=cores, request_threads=0, switch_interval=BATCH_SWITCH_INTERVAL))
