"""FastAPI app factory.

The index opens at startup (a missing or broken index stops the server with one clear error); the
model then loads in the background, so ``/healthz`` answers at once and ``/readyz`` turns 200 when the
model is in memory. API keys are re-read every few seconds off the event loop.
"""

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
from mmsearch.api.routes import router
from mmsearch.api.routes_shop import install_shop
from mmsearch.api.security import install_security, redact_paths
from mmsearch.batching import BatchingEncoder
from mmsearch.config import Settings, get_settings
from mmsearch.querycache import CachedTextEncoder
from mmsearch.search import Searcher
from mmsearch.storage.apikeys import KeyRing, KeyStore
from mmsearch.threads import configure_serving

log = logging.getLogger(__name__)
MIN_KEY_REFRESH_SECONDS = 0.5


def _limit_threadpool(threads: int) -> None:
    """Cap concurrent blocking handlers so they do not outnumber the cores torch and FAISS use."""
    import anyio.to_thread

    anyio.to_thread.current_default_thread_limiter().total_tokens = max(1, threads)


def _serving_encoder(settings: Settings):
    """The model's front in a server: repeated text queries from the cache, concurrent calls batched."""
    def wrap(encoder):
        batching = BatchingEncoder(encoder)
        return CachedTextEncoder(batching, settings.query_cache_size) if settings.query_cache_size else batching
    return wrap


def _prepare_model(searcher: Searcher, settings: Settings) -> int:
    """Blocking: load the model, put the serving fronts before it, size the thread pools.
    -> how many request threads may run at once."""
    searcher.wrap_encoder(_serving_encoder(settings))
    searcher.batch_text_queries()  # concurrent text searches share one model call and one vector search
    # after the model load (which sizes torch's pool for batch work), see mmsearch.threads
    return configure_serving(settings.threads).request_threads


async def _load_model(app: FastAPI, settings: Settings) -> None:
    try:
        _limit_threadpool(await asyncio.to_thread(_prepare_model, app.state.searcher, settings))
        log.info("model loaded; ready")
    except Exception as exc:  # the server stays up (liveness) and says why it is not ready
        app.state.load_error = f"the model failed to load: {redact_paths(str(exc))}"
        log.exception("the model failed to load")


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
        check_every_route_guarded(app, unguarded)
        own = app.state.searcher is None
        if own:
            app.state.searcher = Searcher(
                settings.index_dir, device=settings.device, threads=settings.effective_threads(), reload_interval=settings.reload_interval,
                mmap=settings.mmap_index, faiss_device=settings.faiss_device, database_url=settings.database(),
            )
        background = [asyncio.create_task(_refresh_keys(keyring, max(MIN_KEY_REFRESH_SECONDS, settings.reload_interval)))]
        if own:
            background.append(asyncio.create_task(_load_model(app, settings)))
        log.info("serving %s", settings.index_dir)
        try:
            yield
        finally:
            for task in background:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
            if own:
                if app.state.searcher.model_loaded:
                    app.state.searcher.encoder.close()
                app.state.searcher.close()
            keyring.store.close()

    app = FastAPI(title="mmsearch", version=__version__, lifespan=lifespan,
                  description="Cross-modal search: find images and texts by text or by image.")
    app.state.settings = settings
    app.state.searcher = searcher
    app.state.keyring = keyring
    app.state.readiness_checks = {}  # name -> () -> bool, for parts that add their own (e.g. collections)
    app.state.load_error = None
    app.state.metrics_registry = app_registry(app)
    install_error_handlers(app)
    install_security(app, settings, keyring, unguarded)
    app.add_middleware(MetricsMiddleware, fastapi_app=app)  # outermost: counts 401s and 413s too
    app.include_router(health_router(settings.metrics_public))
    app.include_router(router)
    install_shop(app)
    return app
