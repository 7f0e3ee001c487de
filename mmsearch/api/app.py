"""FastAPI app factory. The model and the index load once, at startup (lifespan)."""

from __future__ import annotations

import logging
from contextlib import asynccontextmanager

from fastapi import FastAPI

from mmsearch import __version__
from mmsearch.api.errors import install_error_handlers
from mmsearch.api.routes import router
from mmsearch.api.routes_shop import install_shop
from mmsearch.api.security import install_security
from mmsearch.batching import BatchingEncoder
from mmsearch.config import Settings, get_settings
from mmsearch.search import Searcher
from mmsearch.threads import configure_serving

log = logging.getLogger(__name__)


def _limit_threadpool(threads: int) -> None:
    """Cap concurrent blocking handlers so they do not outnumber the cores torch and FAISS use."""
    import anyio.to_thread

    anyio.to_thread.current_default_thread_limiter().total_tokens = max(1, threads)


def create_app(settings: Settings | None = None, searcher: Searcher | None = None) -> FastAPI:
    """Build the app. Pass ``searcher`` to serve an already open index (tests, embedding in other apps)."""
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        own = app.state.searcher is None
        if own:
            app.state.searcher = Searcher(
                settings.index_dir, device=settings.device, threads=settings.effective_threads(), reload_interval=settings.reload_interval,
                mmap=settings.mmap_index, faiss_device=settings.faiss_device, database_url=settings.database(),
            )
            # load the model now, not on the first request; concurrent queries share batched model calls
            app.state.searcher.wrap_encoder(BatchingEncoder)
            app.state.searcher.batch_text_queries()  # and concurrent text searches share one vector search
        # after the model load (which sizes torch's pool for batch work), see mmsearch.threads
        _limit_threadpool(configure_serving(settings.threads).request_threads)
        log.info("serving %s", settings.index_dir)
        try:
            yield
        finally:
            if own:
                app.state.searcher.encoder.close()
                app.state.searcher.close()

    app = FastAPI(title="mmsearch", version=__version__, lifespan=lifespan,
                  description="Cross-modal search: find images and texts by text or by image.")
    app.state.settings = settings
    app.state.searcher = searcher
    install_error_handlers(app)
    install_security(app, settings)
    app.include_router(router)
    install_shop(app)
    return app
