"""Unsubscribe: a page with a button, the one-click POST of RFC 8058, and a way back."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends
from fastapi.responses import HTMLResponse
from sqlalchemy.orm import Session
from starlette.requests import Request

from newsletter import subscriptions
from newsletter.models import UNSUBSCRIBED, Subscriber
from newsletter.web import csrf
from newsletter.web.confirm import subscribed_context
from newsletter.web.context import Web, WebDep, require_csrf
from newsletter.web.links import revoked, subscriber_for, token_for

router = APIRouter()

# RFC 8058: `List-Unsubscribe=One-Click`, urlencoded or as a multipart field.
ONE_CLICK_MARK = b"One-Click"


async def _is_one_click(request: Request) -> bool:
    # The raw body, not a parsed form: a mail client's body that does not parse as a form
    # must still unsubscribe.
    return ONE_CLICK_MARK in await request.body()


OneClick = Annotated[bool, Depends(_is_one_click)]


@router.get("/unsubscribe/{token}", response_class=HTMLResponse)
def unsubscribe_page(request: Request, token: str, web: WebDep) -> HTMLResponse:
    """A page with an Unsubscribe button: opening the link alone changes nothing."""
    with web.db.session() as session:
        subscriber = subscriber_for(session, web.settings, "unsubscribe", token)
    context = {"subscriber": subscriber, "action": web.pages.href(f"/unsubscribe/{token}")}
    return web.pages.render(request, "unsubscribe.html", context)


@router.post("/unsubscribe/{token}", response_class=HTMLResponse)
def unsubscribe(request: Request, token: str, web: WebDep, one_click: OneClick) -> HTMLResponse:
    """Unsubscribe at once, 200. No cookie or CSRF token: a mail client's one-click POST
    (body `List-Unsubscribe=One-Click`) has neither, and the signed link is the proof.

    Unsubscribing gives the subscriber a new link key, so this link and every other one
    mailed so far stop working (410). The page offers a way back through a short-lived
    resubscribe link made with the new key; the one-click answer goes to a mail client, not to
    a person, and carries none.
    """
    if not one_click:
        # The page's button, sent by a browser: it must come from this site. The one-click
        # POST is a mail client's, made without any Origin of ours.
        csrf.check_origin(request, web.settings)
    with web.db.session() as session:
        subscriber = subscriber_for(session, web.settings, "unsubscribe", token)
        subscriptions.unsubscribe(session, subscriber, web.clock())
    return _unsubscribed(request, web, subscriber, way_back=not one_click)


@router.get("/resubscribe/{token}", response_class=HTMLResponse)
def unsubscribed_page(request: Request, token: str, web: WebDep) -> HTMLResponse:
    """The "you are unsubscribed" page again, with its button; opening it changes nothing."""
    with web.db.session() as session:
        subscriber = _unsubscribed_subscriber(session, web, token)
    return _unsubscribed(request, web, subscriber, way_back=True)


@router.post(
    "/resubscribe/{token}", response_class=HTMLResponse, dependencies=[Depends(require_csrf)]
)
def resubscribe(request: Request, token: str, web: WebDep) -> HTMLResponse:
    """Undo an unsubscribe from the page that confirmed it: the digests start again, with a
    new link key (the resubscribe link dies) and fresh manage and unsubscribe links."""
    with web.db.session() as session:
        subscriber = _unsubscribed_subscriber(session, web, token)
        subscriptions.resubscribe(session, subscriber, web.clock())
    context = {**subscribed_context(web, subscriber), "already": False, "welcome_back": True}
    return web.pages.render(request, "subscribed.html", context)


def _unsubscribed_subscriber(session: Session, web: Web, token: str) -> Subscriber:
    subscriber = subscriber_for(session, web.settings, "resubscribe", token)
    if subscriber.state != UNSUBSCRIBED:  # the key changes on return: cannot happen; be sure
        raise revoked()
    return subscriber


def _unsubscribed(
    request: Request, web: Web, subscriber: Subscriber, *, way_back: bool
) -> HTMLResponse:
    resubscribe = token_for(web.settings, "resubscribe", subscriber) if way_back else None
    context = {
        "subscriber": subscriber,
        "resubscribe_action": web.pages.href(f"/resubscribe/{resubscribe}")
        if resubscribe
        else None,
    }
    return web.pages.render(request, "unsubscribed.html", context)
