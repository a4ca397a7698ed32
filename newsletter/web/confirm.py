"""Double opt-in: the emailed link shows a page, and only its button (a POST) confirms."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC
from typing import Any
from zoneinfo import ZoneInfo

from fastapi import APIRouter, Depends
from fastapi.responses import HTMLResponse
from starlette.requests import Request

from newsletter import storage, subscriptions
from newsletter.bounces.events import lift
from newsletter.models import ACTIVE, PAUSED, Subscriber
from newsletter.schedule import first_digest_time
from newsletter.web.context import Web, WebDep, require_csrf
from newsletter.web.links import subscriber_for, token_for

router = APIRouter()


@dataclass(frozen=True)
class NextDigest:
    """When the next digest comes, in the subscriber's words: "21:05", "today", soon."""

    time: str
    day: str
    soon: bool  # planned at the next run, minutes from now


def next_digest(web: Web, subscriber: Subscriber) -> NextDigest:
    """About when the subscriber's next digest comes, from their send hour and the schedule."""
    now = web.clock()
    zone = ZoneInfo(subscriber.timezone)
    local = now.replace(tzinfo=UTC).astimezone(zone)
    today = local.date()
    with web.db.session() as session:
        planned = bool(storage.delivery_ids_for(session, subscriber.id, today))
    when = first_digest_time(now, subscriber.send_hour, subscriber.timezone, planned_today=planned)
    days = (when.date() - today).days
    day = (
        "today" if days == 0 else "tomorrow" if days == 1 else f"on {when:%A} {when.day} {when:%B}"
    )
    soon = local.hour >= subscriber.send_hour and not planned  # due at the next planning run
    return NextDigest(f"{when:%H:%M}", day, soon)


def subscribed_context(web: Web, subscriber: Subscriber) -> dict[str, Any]:
    """What the "you are subscribed" page shows, with fresh manage and unsubscribe links."""
    return {
        "subscriber": subscriber,
        "next_digest": next_digest(web, subscriber),
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
    context = {
        "subscriber": subscriber,
        "action": web.pages.href(f"/confirm/{token}"),
        "next_digest": next_digest(web, subscriber),
    }
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
