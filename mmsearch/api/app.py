"""FastAPI app factory. The collections (indexes and models) open once, at startup (lifespan); API keys
are re-read every few seconds off the event loop."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from contextlib import asynccontextmanager

from fastapi import FastAPI

from mmsearch import __version__
from mmsearch.api.auth import check_every_route_guarded
from mmsearch.api.errors import install_error_handlers
from mmsearch.api.health import health_router, open_paths
from mmsearch.api.observe import MetricsMiddleware, app_registry
from mmsearch.api.registry import CollectionRegistry
from mmsearch.api.routes import router
from mmsearch.api.routes_collections import install_collections
from mmsearch.api.routes_duplicates import router as duplicates_router
from mmsearch.api.routes_items import router as items_router
from mmsearch.api.routes_shop import install_shop
from mmsearch.api.security import install_security
from mmsearch.config import Settings, get_settings
from mmsearch.search import Searcher
from mmsearch.storage.apikeys import KeyRing, KeyStore
from mmsearch.storage.collections import DEFAULT
from mmsearch.threads import configure_serving

log = logging.getLogger(__name__)
MIN_KEY_REFRESH_SECONDS = 0.5


def _limit_threadpool(threads: int) -> None:
    """Cap concurrent blocking handlers so they do not outnumber the cores torch and FAISS use."""
    import anyio.to_thread

    anyio.to_thread.current_default_thread_limiter().total_tokens = max(1, threads)


async def _refresh_keys(keyring: KeyRing, every: float) -> None:
    while True:
        await asyncio.sleep(every)
        await asyncio.to_thread(keyring.refresh)


def create_app(settings: Settings | None = None, searcher: Searcher | None = None) -> FastAPI:
    """Build the app. Pass ``searcher`` to serve an already open index (tests, embedding in other apps)."""
    settings = settings or get_settings()
    unguarded = open_paths(settings.metrics_public)
    keyring = KeyRing(KeyStore.beside(settings.index_dir, settings.database()), settings.api_key)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        check_every_route_guarded(app, unguarded)  # a route without a scope would be open to every key
        # Every collection opens now (its model loaded once, shared by collections of the same model; concurrent
        # queries share batched model calls and vector searches), not on the first request.
        registry = CollectionRegistry(settings, default_searcher=app.state.searcher)
        app.state.collections = registry
        registry.open_all()
        if app.state.searcher is None and DEFAULT in registry.names():
            app.state.searcher = registry.get(DEFAULT).searcher
        # after the model load (which sizes torch's pool for batch work), see mmsearch.threads
        _limit_threadpool(configure_serving(settings.threads).request_threads)
        refresh = asyncio.create_task(_refresh_keys(keyring, max(MIN_KEY_REFRESH_SECONDS, settings.reload_interval)))
        log.info("serving %s (collections: %s)", settings.index_dir, ", ".join(registry.names()) or "none yet")
        try:
            yield
        finally:
            refresh.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await refresh
            registry.close()
            keyring.store.close()

    app = FastAPI(title="mmsearch", version=__version__, lifespan=lifespan,
                  description="Cross-modal search: find images and texts by text or by image.")
    app.state.settings = settings
    app.state.searcher = searcher
    app.state.keyring = keyring
    app.state.readiness_checks = {}  # name -> () -> bool, for parts that add their own
    app.state.metrics_registry = app_registry(app)
    install_error_handlers(app)
    install_security(app, settings, keyring, unguarded)
    app.add_middleware(MetricsMiddleware, fastapi_app=app)  # outermost: counts 401s and 413s too
    app.include_router(health_router(settings.metrics_public))
    app.include_router(router)
    app.include_router(duplicates_router)
    install_shop(app)
    app.include_router(items_router)
    install_collections(app)  # after every /v1 route: each is mirrored under /v1/collections/{name}
    return app
