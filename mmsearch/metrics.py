"""Prometheus metrics of a running server (PyPI ``prometheus-client``), in one registry of their own.

The process-wide figures live here so any layer can record them without knowing about HTTP: the
request middleware (mmsearch.api.observe) counts requests and their latency per route template, the
batching encoder times every model call, and the write path reports its queue depth with
:func:`set_write_queue_depth`. Figures that belong to an app's open indexes (items per collection,
reload generation) are read at scrape time by :class:`IndexCollector`, so they are never stale and cost
nothing between scrapes.
"""

from __future__ import annotations

import time
from contextlib import contextmanager
from typing import Callable, Iterable, Iterator, Mapping

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

REGISTRY = CollectorRegistry(auto_describe=True)
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

# Latency buckets for a search service: sub-millisecond health checks up to multi-second uploads.
_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24)

REQUESTS = Counter("mmsearch_http_requests", "HTTP requests answered, by route template, method and status code.",
                   ("route", "method", "status"), registry=REGISTRY)
LATENCY = Histogram("mmsearch_http_request_duration_seconds",
                    "Time from receiving a request to sending the end of its response, by route template.",
                    ("route", "method"), buckets=_LATENCY_BUCKETS, registry=REGISTRY)
IN_FLIGHT = Gauge("mmsearch_http_requests_in_flight", "Requests being answered right now.", registry=REGISTRY)
EMBED_SECONDS = Histogram("mmsearch_embedding_seconds", "Time of one model call (a batch of queries or items), by input kind.",
                          ("kind",), buckets=_LATENCY_BUCKETS, registry=REGISTRY)
EMBED_ITEMS = Counter("mmsearch_embedded_inputs", "Texts or images run through the model, by input kind.", ("kind",),
                      registry=REGISTRY)
QUERY_CACHE = Counter("mmsearch_query_cache_lookups", "Text-query embedding cache lookups, by result (hit or miss).",
                      ("result",), registry=REGISTRY)
WRITE_QUEUE = Gauge("mmsearch_write_queue_depth", "Writes accepted but not yet searchable, by collection.", ("collection",),
                    registry=REGISTRY)


def set_write_queue_depth(collection: str, depth: int) -> None:
    """The write path's hook: how many accepted writes wait to be embedded and published."""
    WRITE_QUEUE.labels(collection=collection).set(depth)


def record_request(route: str, method: str, status: int, seconds: float) -> None:
    REQUESTS.labels(route=route, method=method, status=str(status)).inc()
    LATENCY.labels(route=route, method=method).observe(seconds)


@contextmanager
def timed_embedding(kind: str, count: int) -> Iterator[None]:
    """Time one model call of ``count`` inputs of ``kind`` ("text" or "image")."""
    started = time.perf_counter()
    try:
        yield
    finally:
        EMBED_SECONDS.labels(kind=kind).observe(time.perf_counter() - started)
        EMBED_ITEMS.labels(kind=kind).inc(count)


# One collection's state at scrape time: its items per modality and its index generation.
IndexFacts = Mapping[str, object]


class IndexCollector(Collector):
    """Reads ``facts()`` -> {collection: {"counts": {modality: n}, "generation": g}} at each scrape."""

    def __init__(self, facts: Callable[[], Mapping[str, IndexFacts]]) -> None:
        self._facts = facts

    def collect(self) -> Iterable[GaugeMetricFamily]:
        items = GaugeMetricFamily("mmsearch_index_items", "Items in the served index, by collection and modality.",
                                  labels=("collection", "modality"))
        generation = GaugeMetricFamily("mmsearch_index_generation",
                                       "Index generation being served (it rises each time a newer index version is swapped in).",
                                       labels=("collection",))
        for name, facts in sorted(self._facts().items()):
            for modality, count in sorted(dict(facts.get("counts") or {}).items()):
                items.add_metric((name, modality), float(count))
            if facts.get("generation") is not None:
                generation.add_metric((name,), float(facts["generation"]))
        yield items
        yield generation


def exposition(*app_registries: CollectorRegistry) -> bytes:
    """The text format of the process-wide metrics followed by an app's own (distinct metric names)."""
    return b"".join(generate_latest(registry) for registry in (REGISTRY, *app_registries))


__all__ = ["CONTENT_TYPE", "IndexCollector", "REGISTRY", "exposition", "record_request", "set_write_queue_depth", "timed_embedding"]
