"""Double opt-in: the emailed link shows a page, and only its button (a POST) confirms."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends
from fastapi.responses import HTMLResponse
from starlette.requests import Request

from newsletter import subscriptions
from newsletter.bounces.events import lift
from newsletter.models import ACTIVE, PAUSED, Subscriber
from newsletter.web.context import Web, WebDep, require_csrf
from newsletter.web.links import subscriber_for, token_for

router = APIRouter()


def subscribed_context(web: Web, subscriber: Subscriber) -> dict[str, Any]:
    """What the "you are subscribed" page shows, with fresh manage and unsubscribe links."""
    return {
        "subscriber": subscriber,
        "manage_url": web.pages.href(f"/manage/{token_for(web.settings, 'manage', subscriber)}"),
        "unsubscribe_url": web.pages.href(
            f"/unsubscribe/{token_for(web.settings, 'unsubscribe', subscriber)}"
        ),
    }


@router.get("/confirm/{token}", response_class=HTMLResponse)
def confirm_page(request: Request, token: str, web: WebDep) -> HTMLResponse:
    """A page with a Confirm button: opening the link (as mail scanners do) changes nothing."""
    with web.db.session() as session:
        subscriber = subscriber_for(session, web.settings, "confirm", token)
    if subscriber.state in (ACTIVE, PAUSED):
        context = {**subscribed_context(web, subscriber), "already": True}
        return web.pages.render(request, "subscribed.html", context)
    context = {"subscriber": subscriber, "action": web.pages.href(f"/confirm/{token}")}
    return web.pages.render(request, "confirm.html", context)


@router.post("/confirm/{token}", response_class=HTMLResponse, dependencies=[Depends(require_csrf)])
def confirm(request: Request, token: str, web: WebDep) -> HTMLResponse:
    """Activate the subscriber; confirming twice is harmless."""
    with web.db.session() as session:
        subscriber = subscriber_for(session, web.settings, "confirm", token)
        already = subscriber.state in (ACTIVE, PAUSED)
        subscriptions.confirm(session, subscriber, web.clock())
        # A fresh confirmation is what lifts a bounce or complaint suppression.
        lift(session, web.settings, subscriber.email)
    context = {**subscribed_context(web, subscriber), "already": already}
    return web.pages.render(request, "subscribed.html", context)
