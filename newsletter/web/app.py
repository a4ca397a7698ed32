"""The app factory: routes, static files, error pages and the security middleware."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from starlette.staticfiles import StaticFiles

from newsletter.config import Settings
from newsletter.confirmations import make_confirmation_queue
from newsletter.db import Database
from newsletter.metrics import start_metrics_server
from newsletter.ranker import RecentPapers
from newsletter.web import (
    admin,
    archive,
    confirm,
    errors,
    health,
    manage,
    preview,
    ratings,
    signup,
    unsubscribe,
    webhooks,
)
from newsletter.web.context import Web
from newsletter.web.pages import STATIC_DIR, Pages
from newsletter.web.papers import PreviewIndex
from newsletter.web.ratelimit import make_rate_limiter
from newsletter.web.security import (
    MAX_BODY_BYTES,
    BodySizeLimitMiddleware,
    SecurityHeadersMiddleware,
)


def create_app(
    settings: Settings, db: Database | None = None, recent: RecentPapers | None = None
) -> FastAPI:
    """The web app. Without `db` it opens (and at shutdown closes) its own; either way the
    caller has applied the migrations. `recent` is the process's index of the recent papers,
    shared with its planner; without it the app keeps its own."""
    database = db or Database(settings)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        metrics = start_metrics_server(database, settings)  # None unless METRICS_PORT is set
        confirmations.start()
        try:
            yield
        finally:
            confirmations.stop()
            if metrics is not None:
                metrics.stop()
            if db is None:
                database.dispose()

    # No OpenAPI pages: this app serves people, and their script would break the CSP.
    app = FastAPI(
        title="Paper Digest", docs_url=None, redoc_url=None, openapi_url=None, lifespan=lifespan
    )
    web = Web(
        settings=settings,
        db=database,
        pages=Pages(settings),
        limiter=make_rate_limiter(settings),
        papers=PreviewIndex(recent or RecentPapers(database, settings)),
    )
    # Confirmation mails leave the request: sent by a thread here, or by the Celery workers.
    confirmations = make_confirmation_queue(database, lambda: web.settings, lambda: web.clock())
    web.confirmations = confirmations
    app.state.web = web
    for module in (signup, confirm, manage, unsubscribe, preview, health, webhooks, archive):
        app.include_router(module.router)
    app.include_router(ratings.router)  # rating papers: /rate/..., the manage page's ratings
    admin.install(app)
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    errors.install(app)
    # The last added is the outermost: even a 413 gets the security headers. The sign-up and
    # settings forms may carry a reference-manager export.
    with_upload = settings.likes_upload_bytes + MAX_BODY_BYTES
    app.add_middleware(
        BodySizeLimitMiddleware,
        path_limits=webhooks.BODY_LIMITS,
        upload_limits={"/": with_upload, "/manage/": with_upload},
    )
    app.add_middleware(SecurityHeadersMiddleware, https=settings.base_url.startswith("https://"))
    return app
