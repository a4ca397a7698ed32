"""Error pages: bad links, stale forms, rate limits and HTTP errors, each with a clear message."""

from __future__ import annotations

import logging
from http import HTTPStatus

from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response

from newsletter.web.context import RateLimited, get_web
from newsletter.web.csrf import CsrfError, ForeignOrigin
from newsletter.web.links import LinkError
from newsletter.web.protocol import MALFORMED_BODY

log = logging.getLogger(__name__)

MESSAGES = {
    404: "There is no page at this address.",
    405: "This page does not accept that kind of request.",
    413: "What you sent is larger than this site accepts.",
}


def _page(
    request: Request,
    status: int,
    title: str,
    message: str,
    headers: dict[str, str] | None = None,
) -> Response:
    context = {"title": title, "message": message}
    return get_web(request).pages.render(
        request, "error.html", context, status=status, headers=headers
    )


async def link_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, LinkError)
    return _page(request, exc.status, exc.title, exc.message)


async def csrf_error(request: Request, exc: Exception) -> Response:
    if isinstance(exc, ForeignOrigin):
        return _page(
            request,
            403,
            "This form was sent from another site",
            "Nothing was changed. To change your subscription, open the page on this site "
            "(the link in your email) and send the form from there.",
        )
    return _page(
        request,
        403,
        "This form has expired",
        "Nothing was changed. Go back, reload the page and send the form again. "
        "If it keeps happening, allow cookies for this site.",
    )


async def rate_limited(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RateLimited)
    minutes = max(1, round(exc.retry_after / 60))
    message = f"{exc.message} Please try again in {minutes} minute{'s' if minutes > 1 else ''}."
    headers = {"Retry-After": str(exc.retry_after)}
    return _page(request, 429, "Too many requests", message, headers)


async def http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    try:
        title = HTTPStatus(exc.status_code).phrase
    except ValueError:
        title = "Error"
    message = MESSAGES.get(exc.status_code, "The request could not be handled.")
    return _page(request, exc.status_code, title, message, dict(exc.headers or {}))


async def validation_error(request: Request, exc: Exception) -> Response:
    return _page(request, 422, "Unprocessable request", "The request could not be understood.")


async def client_gone(request: Request, exc: Exception) -> Response:
    """The client hung up (or broke the protocol) before its whole body arrived: one line.

    The answer goes nowhere; logging a traceback for it would let anyone flood the log.
    """
    if not request.scope.get(MALFORMED_BODY):  # else the server has logged it already
        log.info(
            "client left before sending the whole request: %s %s",
            request.method,
            request.url.path,
        )
    return Response(status_code=400)


async def server_error(request: Request, exc: Exception) -> Response:
    log.error("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return _page(
        request,
        500,
        "Something went wrong on our side",
        "Nothing you did caused this, and it has been logged. Please try again later.",
    )


def install(app: FastAPI) -> None:
    """Register the error pages on the app."""
    app.add_exception_handler(ClientDisconnect, client_gone)
    app.add_exception_handler(LinkError, link_error)
    app.add_exception_handler(CsrfError, csrf_error)
    app.add_exception_handler(RateLimited, rate_limited)
    app.add_exception_handler(HTTPException, http_error)
    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_exception_handler(Exception, server_error)
