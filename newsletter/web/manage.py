"""The manage page: keywords, send time, size, trending; pause and resume; today's digest."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends
from fastapi.responses import HTMLResponse, RedirectResponse
from sqlalchemy.orm import Session
from starlette.requests import Request
from starlette.responses import Response

from newsletter import subscriptions
from newsletter.models import Subscriber
from newsletter.web.archive import archive_context
from newsletter.web.context import FormDep, Web, WebDep, require_csrf
from newsletter.web.forms import FormResult, parse_preferences, preference_values
from newsletter.web.likes import liked_papers_context
from newsletter.web.links import subscriber_for, token_for
from newsletter.web.papers import Preview
from newsletter.web.ratings import ratings_context

router = APIRouter()

NOTICES = {
    "saved": "Your settings are saved.",
    "paused": "Your digest is paused. Resume it whenever you like.",
    "resumed": "Your digest is on again.",
    "rating_cleared": "That rating is cleared.",
    "ratings_cleared": "All your ratings are cleared.",
}


@router.get("/manage/{token}", response_class=HTMLResponse)
def manage_page(request: Request, token: str, web: WebDep) -> HTMLResponse:
    """The subscriber's settings, and what their digest would contain today."""
    notice = NOTICES.get(request.query_params.get("done", ""))
    with web.db.session() as session:
        subscriber = subscriber_for(session, web.settings, "manage", token)
        context = _context(web, session, subscriber, token)
    form = FormResult(preference_values(subscriber))
    return _page(request, web, context, form, notice=notice)


@router.post("/manage/{token}", response_class=HTMLResponse, dependencies=[Depends(require_csrf)])
def save(
    request: Request,
    token: str,
    web: WebDep,
    form: FormDep,
) -> Response:
    """Save the settings; a mistake shows the form again with the message beside the field."""
    result = parse_preferences(form, web.settings)
    with web.db.session() as session:
        subscriber = subscriber_for(session, web.settings, "manage", token)
        if result.preferences is None:
            context = _context(web, session, subscriber, token)
            return _page(request, web, context, result, status=422)
        subscriptions.update_preferences(session, subscriber, result.preferences, web.clock())
        if result.liked_export is not None:
            # What the upload held is shown now: a redirect would lose the list of entries
            # that are not arXiv papers. Saving the same form again changes nothing more.
            context = {
                **_context(web, session, subscriber, token),
                "liked_export": result.liked_export,
            }
            form_now = FormResult(preference_values(subscriber))
            return _page(request, web, context, form_now, notice=NOTICES["saved"])
    return _done(web, token, "saved")


@router.post(
    "/manage/{token}/pause", response_class=RedirectResponse, dependencies=[Depends(require_csrf)]
)
def pause(token: str, web: WebDep) -> RedirectResponse:
    """Stop the digests for now (anything already planned is cancelled)."""
    with web.db.session() as session:
        subscriptions.pause(session, subscriber_for(session, web.settings, "manage", token))
    return _done(web, token, "paused")


@router.post(
    "/manage/{token}/resume", response_class=RedirectResponse, dependencies=[Depends(require_csrf)]
)
def resume(token: str, web: WebDep) -> RedirectResponse:
    """Start the digests again after a pause or bounces (an unsubscribe revokes this link)."""
    with web.db.session() as session:
        subscriber = subscriber_for(session, web.settings, "manage", token)
        subscriptions.resume(session, subscriber, web.clock())
    return _done(web, token, "resumed")


def _done(web: Web, token: str, what: str) -> RedirectResponse:
    # Post/redirect/get: reloading the page after saving does not send the form again.
    return RedirectResponse(web.pages.href(f"/manage/{token}?done={what}"), status_code=303)


def digest_preview(web: Web, session: Session, subscriber: Subscriber) -> Preview:
    """What the subscriber's digest would hold if it were planned now (nothing is stored)."""
    return web.papers.digest(session, subscriber, now=web.clock())


def _context(web: Web, session: Session, subscriber: Subscriber, token: str) -> dict[str, Any]:
    return {
        "subscriber": subscriber,
        "preview": digest_preview(web, session, subscriber),
        "action": web.pages.href(f"/manage/{token}"),
        "unsubscribe_url": web.pages.href(
            f"/unsubscribe/{token_for(web.settings, 'unsubscribe', subscriber)}"
        ),
        **liked_papers_context(session, subscriber),
        **archive_context(web, session, subscriber),
        **ratings_context(web, session, subscriber, token),
    }


def _page(
    request: Request,
    web: Web,
    context: dict[str, Any],
    form: FormResult,
    *,
    status: int = 200,
    notice: str | None = None,
) -> HTMLResponse:
    context = {**context, "values": form.values, "errors": form.errors, "notice": notice}
    return web.pages.render(request, "manage.html", context, status=status)
