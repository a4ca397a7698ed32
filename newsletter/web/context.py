"""What every request handler needs: settings, database, pages, rate limiter, papers, clock."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Annotated

from fastapi import Depends
from starlette.datastructures import FormData, UploadFile
from starlette.exceptions import HTTPException
from starlette.requests import Request

from newsletter import storage
from newsletter.config import Settings
from newsletter.db import Database
from newsletter.web import csrf
from newsletter.web.pages import Pages
from newsletter.web.papers import PreviewIndex
from newsletter.web.ratelimit import RateLimiter, client_address

if TYPE_CHECKING:
    from newsletter.confirmations import ConfirmationQueue

MAX_FORM_FIELDS = 32
UPLOAD_FIELD = "liked_file"  # the one file a form may carry (newsletter.web.forms)


@dataclass
class Web:
    """The app's shared objects, kept in app.state.web; `clock` is swapped in tests."""

    settings: Settings
    db: Database
    pages: Pages
    limiter: RateLimiter
    papers: PreviewIndex
    clock: Callable[[], datetime] = field(default=storage.utcnow)
    confirmations: ConfirmationQueue | None = None  # where sign-ups queue their mail


class RateLimited(Exception):
    """Too many attempts; the page says when to try again."""

    def __init__(self, retry_after: int, message: str) -> None:
        super().__init__(message)
        self.retry_after = retry_after
        self.message = message


def get_web(request: Request) -> Web:
    """FastAPI dependency: the app's Web object."""
    web: Web = request.app.state.web
    return web


async def read_form(request: Request) -> FormData:
    """FastAPI dependency: the submitted form (a few fields at most, and at most one file:
    the sign-up and settings forms' reference-manager export; the body limit bounds it).

    A file under any other name is refused with 400, as any file was before the export."""
    form = await request.form(max_files=1, max_fields=MAX_FORM_FIELDS)
    for name, value in form.multi_items():
        if isinstance(value, UploadFile) and name != UPLOAD_FIELD:
            raise HTTPException(400, "This form takes no file.")
    return form


WebDep = Annotated[Web, Depends(get_web)]
FormDep = Annotated[FormData, Depends(read_form)]


async def require_csrf(request: Request) -> None:
    """FastAPI dependency: refuse a state-changing form without a valid CSRF token."""
    form = await read_form(request)
    csrf.check(request, get_web(request).settings, form.get(csrf.FIELD))


def client_ip(request: Request) -> str:
    """The client's address: the peer, or what a trusted proxy says (NEWSLETTER_TRUSTED_PROXIES)."""
    peer = request.client.host if request.client else "unknown"
    forwarded = ",".join(request.headers.getlist("x-forwarded-for"))
    return client_address(peer, forwarded, get_web(request).settings.trusted_networks)


def limit(web: Web, key: str, allowed: int, window: int, message: str) -> None:
    """Count one hit on `key`; raise RateLimited past `allowed` hits in `window` seconds."""
    decision = web.limiter.hit(key, allowed, window)
    if not decision.allowed:
        raise RateLimited(decision.retry_after, message)
