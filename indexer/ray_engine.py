"""``mmsearch index --engine ray``: the items a run must embed are split into shards that Ray actors embed.

Who does what:

* the driver (the ``mmsearch index`` process) scans and plans exactly as a local run does
  (:func:`indexer.pipeline.index_source` with this module's embed stage), and stays the only writer: it
  takes the shards' vectors back in shard order and writes them through the same IndexWriter, so ids,
  metadata, failures and the published index come out as a local run would make them;
* actors, one per GPU (else one per CPU slot), each load the model once and embed whole shards with the
  local engine's own code (:func:`indexer.pipeline.embed_batches`): texts, then images they open
  themselves by path. The files being indexed must therefore be at the same path on every node.

Shard results (vectors without ids, plus the failures) travel back through Ray's object store rather
than through files. A shard holds at most ``SHARD_BATCHES`` encoder batches (16 x 32 items x 512 float32
dimensions = 1 MB) and at most ``IN_FLIGHT_PER_ACTOR`` shards per actor are running or waiting to be
written, so neither the object store nor the driver grows with the run. Files would need a directory
that every node writes and the driver reads; the index directory is a poor choice for that, since its
SQLite database (WAL mode) must not live on a network filesystem. With the object store the index
directory only has to be on the driver's own disk.

No FAISS index is built per shard, so there is nothing to merge on disk: the driver adds each shard's
vectors to the one index as it writes them (microseconds a vector, against milliseconds to embed one),
and the store, which holds every vector, remains what the FAISS files are built from at publish time.
"""

from __future__ import annotations

import logging
import math
import os
import socket
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Sequence

from indexer.pipeline import EmbeddedBatch, embed_batches
from indexer.sources import SourceItem
from mmsearch.errors import ConfigError, EngineError, MmsearchError

log = logging.getLogger(__name__)

SHARD_BATCHES = 16  # a shard holds at most this many encoder batches
SHARDS_PER_ACTOR = 4  # a run is cut into at least this many shards per actor, so faster actors take more of them
IN_FLIGHT_PER_ACTOR = 2  # shards running or done-but-not-yet-written, per actor
CONNECT_TIMEOUT = 5.0  # seconds to wait for the cluster's address to accept a connection
LOAD_TIMEOUT = 600.0  # seconds for every actor to be scheduled and to load the model


def import_ray():
    """Ray is an optional dependency, imported only by the Ray engine."""
    try:
        import ray
    except ImportError as exc:
        raise ConfigError("--engine ray needs Ray: pip install 'mmsearch[ray]'") from exc
    return ray


@dataclass(frozen=True)
class RemoteModel:
    """The model the actors loaded, as the driver records it in the manifest (it loads no model itself)."""

    spec: str
    model_id: str
    dim: int
    device: str


@dataclass(frozen=True)
class ActorPlan:
    count: int
    num_cpus: int
    num_gpus: int
    device: str
    threads: int  # torch threads inside one actor
    decode_workers: int  # image decode processes inside one actor


def plan_actors(resources: dict[str, float], device: str, workers: int) -> ActorPlan:
    """One actor per free GPU (its share of the CPUs decodes images), else one single-threaded actor per
    free CPU slot, decoding in-process so that actors and slots match one to one."""
    gpus = int(resources.get("GPU", 0)) if device != "cpu" else 0
    cpus = max(1, int(resources.get("CPU", 1)))
    if device == "cuda" and not gpus:
        raise EngineError("--device cuda, but the Ray cluster has no free GPU")
    if gpus:
        per_actor = max(1, cpus // gpus)
        return ActorPlan(gpus, per_actor, 1, "cuda", per_actor, min(workers, per_actor - 1))
    return ActorPlan(cpus, 1, 0, "cpu", 1, 0)


def shard_bounds(count: int, actors: int, batch_size: int) -> list[tuple[int, int]]:
    """[start, stop) ranges cutting ``count`` items into whole batches, several shards per actor."""
    per_shard = math.ceil(count / max(1, actors * SHARDS_PER_ACTOR))
    size = batch_size * min(SHARD_BATCHES, max(1, math.ceil(per_shard / batch_size)))
    return [(start, min(start + size, count)) for start in range(0, count, size)]


def check_reachable(address: str, timeout: float = CONNECT_TIMEOUT) -> None:
    """Fail in seconds, with the address in the message, when nothing listens there (Ray itself would
    retry for a minute and then report a GCS timeout)."""
    if address in ("auto", "local"):  # Ray's own words for "find the cluster on this machine" / "start one"
        return
    host, sep, port = address.split("://", 1)[-1].rpartition(":")
    if not sep or not host or not port.isdigit():
        raise EngineError(f"--address {address!r} is not HOST:PORT (the address `ray start --head` prints)")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout).close()
    except OSError as exc:
        reason = exc.strerror or str(exc) or type(exc).__name__
        raise EngineError(
            f"no Ray cluster answers at {address} ({reason}): start one with `ray start --head` or fix --address"
        ) from exc


class ShardEmbedder:
    """Lives in a Ray actor: loads the model once, then embeds whole shards."""

    def __init__(self) -> None:
        self.encoder = None

    def load(self, spec: str, device: str, batch_size: int, threads: int, precision: str | None) -> tuple[str, int, str]:
        from mmsearch.encoders import load_encoder
        from mmsearch.threads import configure_batch

        configure_batch(threads)
        self.encoder = load_encoder(spec, device, batch_size, threads, precision)
        return self.encoder.model_id, self.encoder.dim, socket.gethostname()

    def embed(self, items: Sequence[SourceItem], batch_size: int, workers: int, max_pixels: int) -> list[EmbeddedBatch]:
        return list(embed_batches(self.encoder, items, batch_size=batch_size, workers=workers, max_pixels=max_pixels))


def _shifted(batch: EmbeddedBatch, offset: int) -> EmbeddedBatch:
    """A shard's batch with positions in the whole run's item list."""
    return EmbeddedBatch([p + offset for p in batch.positions], batch.vectors, [(p + offset, r) for p, r in batch.failures],
                         photo=batch.photo)


class RayEngine:
    """The model loader and embed stage that :func:`indexer.pipeline.index_source` takes, backed by Ray.

    Ray is contacted only when a run has something to embed. Use as a context manager: leaving it stops
    the actors, and disconnects from (or stops) the cluster if this engine connected to (or started) it."""

    def __init__(self, address: str | None = None, *, device: str = "auto", precision: str | None = None,
                 batch_size: int = 32, workers: int = 1) -> None:
        self.address, self.device, self.precision = address, device, precision
        self.batch_size, self.workers = batch_size, workers
        self.actors: list[Any] = []
        self.plan: ActorPlan | None = None
        self.model: RemoteModel | None = None
        self._connected_here = False

    def __enter__(self) -> "RayEngine":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def close(self) -> None:
        self._stop_actors()
        if self._connected_here:
            import_ray().shutdown()
            self._connected_here = False

    def _stop_actors(self) -> None:
        if self.actors:
            ray = import_ray()
            for actor in self.actors:
                ray.kill(actor)
        self.actors, self.model = [], None

    def _connect(self):
        ray = import_ray()
        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
        address = self.address or os.environ.get("RAY_ADDRESS") or None
        if address:
            check_reachable(address)
        if ray.is_initialized():  # this process already talks to a cluster (a notebook, a test): use it
            return ray
        try:
            # no address: the cluster `ray start` runs on this machine, else a new one for this run
            ray.init(address=address, include_dashboard=False, logging_level=logging.WARNING,
                     log_to_driver=log.isEnabledFor(logging.INFO))
        except (ConnectionError, RuntimeError, ValueError, TimeoutError) as exc:
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise EngineError(f"cannot connect to the Ray cluster at {address or 'this machine'}: {first}") from exc
        self._connected_here = True
        return ray

    def load_encoder(self, spec: str) -> RemoteModel:
        """Start the actors, load ``spec`` in each, and check that every node has the same weights.
        Later runs through the same engine reuse the actors while the model stays the same."""
        if self.model is not None and self.model.spec == spec:
            return self.model
        self._stop_actors()
        ray = self._connect()
        self.plan = plan = plan_actors(ray.available_resources(), self.device, self.workers)
        actor_class = ray.remote(ShardEmbedder).options(num_cpus=plan.num_cpus, num_gpus=plan.num_gpus)
        self.actors = [actor_class.remote() for _ in range(plan.count)]
        loaded = self._get([a.load.remote(spec, plan.device, self.batch_size, plan.threads, self.precision) for a in self.actors],
                           "loading the model", LOAD_TIMEOUT)
        model_ids = {model_id for model_id, _, _ in loaded}
        if len(model_ids) > 1:
            by_host = sorted({f"{host}: {model_id}" for model_id, _, host in loaded})
            raise EngineError(f"the Ray nodes hold different weights for model {spec!r} ({'; '.join(by_host)})")
        model_id, dim, _ = loaded[0]
        log.info("%d Ray actor(s) on %d node(s) loaded %s on %s", plan.count, len({h for _, _, h in loaded}), spec, plan.device)
        self.model = RemoteModel(spec, model_id, dim, plan.device)
        return self.model

    def embed(self, encoder: RemoteModel, items: Sequence[SourceItem], *, batch_size: int, workers: int,
              max_pixels: int) -> Iterator[EmbeddedBatch]:
        """The embed stage: shards go to the actors; their batches come back in item order. ``workers``
        (decode processes beside a local model) gives way to the actor plan: each actor decodes with its
        own share of the CPUs."""
        if not items:
            return
        if not self.actors:
            raise EngineError("the Ray engine has no actors: load_encoder must run first")
        decode_workers = self.plan.decode_workers if self.plan else 0
        shards = shard_bounds(len(items), len(self.actors), batch_size)

        def submit(actor, bounds: tuple[int, int]):
            return actor.embed.remote(items[bounds[0] : bounds[1]], batch_size, decode_workers, max_pixels)

        for (start, _), batches in zip(shards, self._in_order(shards, submit)):
            for batch in batches:
                yield _shifted(batch, start)

    def _in_order(self, shards: list, submit: Callable) -> Iterator[list[EmbeddedBatch]]:
        """Each shard's result, in shard order, keeping every actor busy but at most
        IN_FLIGHT_PER_ACTOR shards per actor running or waiting to be consumed."""
        ray = import_ray()
        limit = IN_FLIGHT_PER_ACTOR * len(self.actors)
        idle, running, done = list(self.actors), {}, {}
        queue = iter(enumerate(shards))
        for number in range(len(shards)):
            while True:
                while idle and len(running) + len(done) < limit and (job := next(queue, None)) is not None:
                    actor = idle.pop()
                    running[submit(actor, job[1])] = (job[0], actor)
                if number in done:
                    break
                ready, _ = ray.wait(list(running), num_returns=1)
                finished, actor = running.pop(ready[0])
                idle.append(actor)
                done[finished] = ready[0]
            yield self._get(done.pop(number), f"embedding shard {number + 1} of {len(shards)}")

    @staticmethod
    def _get(refs, what: str, timeout: float | None = None):
        """ray.get, with remote failures turned into one-line mmsearch errors."""
        ray = import_ray()
        try:
            return ray.get(refs, timeout=timeout)
        except ray.exceptions.RayTaskError as exc:
            cause = exc.cause
            if isinstance(cause, MmsearchError):
                raise type(cause)(str(cause)) from exc
            first = (str(cause).strip().splitlines() or [""])[0]
            raise EngineError(f"{what} failed on the Ray cluster: {type(cause).__name__}: {first}") from exc
        except ray.exceptions.GetTimeoutError as exc:
            raise EngineError(f"{what} did not finish within {timeout:.0f}s: is the Ray cluster busy?") from exc
        except ray.exceptions.RayError as exc:  # an actor or node died, an object was lost
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise EngineError(f"{what} failed: {type(exc).__name__}: {first}") from exc
