"""Unsubscribe: a page with a button, the one-click POST of RFC 8058, and a way back."""

from __future__ import annotations

from fastapi import APIRouter, Depends
from fastapi.responses import HTMLResponse
from starlette.requests import Request

from newsletter import subscriptions
from newsletter.models import UNSUBSCRIBED
from newsletter.web import csrf
from newsletter.web.confirm import subscribed_context
from newsletter.web.context import FormDep, WebDep, require_csrf
from newsletter.web.links import subscriber_for

router = APIRouter()


@router.get("/unsubscribe/{token}", response_class=HTMLResponse)
def unsubscribe_page(request: Request, token: str, web: WebDep) -> HTMLResponse:
    """A page with an Unsubscribe button: opening the link alone changes nothing."""
    with web.db.session() as session:
        subscriber = subscriber_for(session, web.settings, "unsubscribe", token)
    name = "unsubscribed.html" if subscriber.state == UNSUBSCRIBED else "unsubscribe.html"
    context = {"subscriber": subscriber, "action": web.pages.href(f"/unsubscribe/{token}")}
    return web.pages.render(request, name, context)


@router.post("/unsubscribe/{token}", response_class=HTMLResponse)
def unsubscribe(request: Request, token: str, web: WebDep, form: FormDep) -> HTMLResponse:
    """Unsubscribe at once, 200. No cookie or CSRF token: a mail client's one-click POST
    (body `List-Unsubscribe=One-Click`) has neither, and the signed link is the proof."""
    if form.get("List-Unsubscribe") != "One-Click":
        # The page's button, sent by a browser: it must come from this site. The one-click
        # POST is a mail client's, made without any Origin of ours.
        csrf.check_origin(request, web.settings)
    with web.db.session() as session:
        subscriber = subscriber_for(session, web.settings, "unsubscribe", token)
        subscriptions.unsubscribe(session, subscriber, web.clock())
    context = {"subscriber": subscriber, "action": web.pages.href(f"/unsubscribe/{token}")}
    return web.pages.render(request, "unsubscribed.html", context)


@router.post(
    "/unsubscribe/{token}/resubscribe",
    response_class=HTMLResponse,
    dependencies=[Depends(require_csrf)],
)
def resubscribe(request: Request, token: str, web: WebDep) -> HTMLResponse:
    """Undo an unsubscribe from the same link: the digests start again."""
    with web.db.session() as session:
        subscriber = subscriber_for(session, web.settings, "unsubscribe", token)
        subscriptions.resume(session, subscriber, web.clock())
    context = {**subscribed_context(web, subscriber), "already": False, "welcome_back": True}
    return web.pages.render(request, "subscribed.html", context)
