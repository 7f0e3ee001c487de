"""The collections one server serves: a Searcher (and, once written to, a LiveWriter) per collection.

Collections of the same model share one loaded encoder (and its micro-batching front), so ten
collections of ``mmsearch-lite`` cost one model in memory. A collection created by the CLI while the
server runs is picked up at its first request; one created or dropped over the API takes effect at once.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from typing import Callable

from mmsearch.live import LiveWriter, publish_if_stale
from mmsearch.storage import collections as colls
from mmsearch.batching import BatchingEncoder
from mmsearch.config import Settings
from mmsearch.encoders.base import Encoder
from mmsearch.errors import CollectionExistsError, CollectionNotFoundError, ConfigError, InvalidQueryError, ModelNotFoundError
from mmsearch.querycache import CachedTextEncoder, without_query_cache
from mmsearch.search import Searcher
from mmsearch.threads import serving_text_threads

log = logging.getLogger(__name__)


@dataclass
class Served:
    """One collection being served."""

    name: str
    searcher: Searcher
    _writer: LiveWriter | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def writer(self) -> LiveWriter:
        """The collection's single writer, started at the first write."""
        if self._writer is None:
            with self._lock:
                if self._writer is None:
                    searcher = self.searcher
                    self._writer = LiveWriter(searcher.index_dir, lambda: without_query_cache(searcher.encoder),
                                              on_publish=lambda: searcher.maybe_reload(force=True))
        return self._writer

    def close(self, close_searcher: bool = True) -> None:
        if self._writer is not None:
            self._writer.close()
        if close_searcher:
            self.searcher.close()


class CollectionRegistry:
    """Named collections of one server, opened at start-up and on demand. Thread-safe."""

    def __init__(self, settings: Settings, default_searcher: Searcher | None = None,
                 load_encoder: Callable[[str], Encoder] | None = None) -> None:
        self.settings = settings
        self._served: dict[str, Served] = {}
        self._given = default_searcher  # opened by the caller, who closes it
        self._encoders: dict[str, Encoder] = {}  # model spec -> the shared (batching) encoder
        self._wrapped: list[BatchingEncoder] = []
        self._load_encoder = load_encoder
        self._lock = threading.RLock()
        if default_searcher is not None:
            self._served[colls.DEFAULT] = Served(colls.DEFAULT, default_searcher)
            loaded = getattr(default_searcher, "_encoder", None)  # share it only if already loaded (never load it here)
            if loaded is not None:
                self._encoders[loaded.spec] = loaded

    @property
    def root(self):
        return self.settings.index_dir

    def open_all(self) -> None:
        for name in colls.list_names(self.root, self.settings.database()):
            self.get(name)

    def names(self) -> list[str]:
        with self._lock:
            return sorted(set(self._served) | set(colls.list_names(self.root, self.settings.database())),
                          key=lambda n: (n != colls.DEFAULT, n))

    def opened(self, name: str) -> Served | None:
        """The collection if it is open already (a dict lookup, safe on the event loop), else None."""
        return self._served.get(name)

    def get(self, name: str) -> Served:
        """The collection, opened now if it is not yet (may read its index and load a model: blocking)."""
        served = self.opened(name)
        if served is not None:
            return served
        colls.check_name(name)
        with self._lock:
            if name not in self._served:
                place = colls.place(self.root, name, self.settings.database())
                if not place.exists():
                    raise CollectionNotFoundError(f"no collection named {name!r}" if name != colls.DEFAULT
                                                  else f"no index at the server's --index-dir {self.root}")
                self._served[name] = Served(name, self._open_searcher(place))
            return self._served[name]

    def create(self, name: str, model: str | None = None, index_type: str | None = None,
               recall_target: float | None = None) -> Served:
        spec = model or self.settings.model
        colls.check_name(name)
        with self._lock:
            if colls.exists(self.root, name, self.settings.database()):
                raise CollectionExistsError(f"collection {name!r} already exists")
            try:
                encoder = self._encoder(spec)
                colls.create(self.root, name, self.settings.database(), model_spec=spec, model_id=encoder.model_id, dim=encoder.dim,
                             index_type=index_type, recall_target=recall_target)
            except (ModelNotFoundError, ConfigError) as exc:  # the request's model or settings: the client's to fix
                raise InvalidQueryError(f"cannot create collection {name!r}: {exc}") from exc
            return self.get(name)

    def drop(self, name: str) -> None:
        with self._lock:
            served = self._served.pop(name, None)
            if served is not None:
                served.close()
            colls.drop(self.root, name, self.settings.database())

    def close(self) -> None:
        with self._lock:
            for name, served in self._served.items():
                served.close(close_searcher=served.searcher is not self._given)
            self._served.clear()
            for encoder in self._wrapped:
                encoder.close()

    # --- opening ---
    def _open_searcher(self, place: colls.Place) -> Searcher:
        s = self.settings
        publish_if_stale(place.index_dir())  # vectors a killed writer committed but never published
        manifest = place.index_dir().read_manifest()
        # the model is loaded now, not on the first request, once for all collections of that model
        searcher = Searcher(place.path, self._encoder(manifest.model_spec), device=s.device, threads=s.effective_threads(),
                            reload_interval=s.reload_interval, mmap=s.mmap_index, faiss_device=s.faiss_device,
                            database_url=place.database_url)
        searcher.batch_text_queries()  # concurrent text searches share tower calls and vector searches
        log.info("serving collection %s from %s", place.name, place.path)
        return searcher

    def _wrap(self, encoder: Encoder) -> Encoder:
        """The model's front in a server: repeated text queries answered from the cache of recent query
        embeddings (``query_cache_size``, 0 = off), the others' concurrent calls batched."""
        batching = BatchingEncoder(encoder)
        self._wrapped.append(batching)
        size = self.settings.query_cache_size
        return CachedTextEncoder(batching, size) if size else batching

    def _encoder(self, spec: str) -> Encoder:
        if spec not in self._encoders:
            if self._load_encoder is None:
                from mmsearch.encoders import load_encoder

                s = self.settings
                encoder = load_encoder(spec, s.device, s.batch_size, s.effective_threads(), text_threads=serving_text_threads(s.threads))
            else:
                encoder = self._load_encoder(spec)
            self._encoders[spec] = self._wrap(encoder)
        return self._encoders[spec]
