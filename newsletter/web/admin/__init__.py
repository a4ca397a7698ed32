"""The operator's dashboard at /admin: off until `newsletter admin add-user NAME`."""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.responses import RedirectResponse
from starlette.requests import Request
from starlette.responses import Response

from newsletter.web.admin.auth import NotSignedIn
from newsletter.web.context import get_web


async def _not_signed_in(request: Request, exc: Exception) -> Response:
    # 303 for every method: a post without a session goes to the form, with nothing changed.
    return RedirectResponse(get_web(request).pages.href("/admin/login"), status_code=303)


def install(app: FastAPI) -> None:
    """Add the admin pages and their sign-in redirect to the app."""
    from newsletter.web.admin import views

    app.include_router(views.router)
    app.add_exception_handler(NotSignedIn, _not_signed_in)
    app.state.web.pages.env.globals.update(utc=views.utc_day)
