"""The sign-up page: a pending subscriber and a confirmation mail, the same page for all."""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import Any

from fastapi import APIRouter, Depends
from fastapi.responses import HTMLResponse
from sqlalchemy.exc import IntegrityError
from starlette.requests import Request

from newsletter import storage, subscriptions
from newsletter.mail import SendError
from newsletter.models import Subscriber
from newsletter.web.context import (
    FormDep,
    Web,
    WebDep,
    client_ip,
    limit,
    require_csrf,
)
from newsletter.web.forms import MAX_FIELD_CHARS, FormResult, parse_signup, signup_defaults
from newsletter.web.mail import send_confirmation

log = logging.getLogger(__name__)
router = APIRouter()

# A new link is mailed at most this often per address, however often it is entered.
CONFIRM_RESEND_AFTER = timedelta(minutes=2)
ADDRESS_SIGNUPS_PER_HOUR = 5


@router.get("/", response_class=HTMLResponse)
def signup_page(request: Request, web: WebDep) -> HTMLResponse:
    """The sign-up form, keywords prefilled from ?keywords= (the preview page links here).

    The time zone is filled from the browser when JavaScript runs.
    """
    values = signup_defaults(web.settings)
    values["keywords"] = request.query_params.get("keywords", "")[:MAX_FIELD_CHARS]
    return _form(request, web, FormResult(values), auto_timezone=True)


@router.post("/", response_class=HTMLResponse, dependencies=[Depends(require_csrf)])
def signup(request: Request, web: WebDep, form: FormDep) -> HTMLResponse:
    """Register a pending subscriber and mail a confirmation link.

    A known address gets exactly the same page as a new one, so the form tells nobody who
    is subscribed; its owner gets a fresh link (at most one per CONFIRM_RESEND_AFTER).
    """
    result = parse_signup(form)
    if not result.ok:
        return _form(request, web, result, status=422)
    limit(
        web,
        f"signup:ip:{client_ip(request)}",
        web.settings.signup_rate_per_hour,
        3600,
        "There have been too many sign-ups from your network.",
    )
    limit(
        web,
        f"signup:address:{result.email}",
        ADDRESS_SIGNUPS_PER_HOUR,
        3600,
        "This address has been entered too many times.",
    )
    now = web.clock()
    subscriber, previous, claimed = _register(web, result, now)
    if claimed and not _mail(web, subscriber, previous, now):
        context = {
            "title": "We could not send the email",
            "message": "Our mail server did not accept it just now. Please try again in a "
            "few minutes.",
        }
        return web.pages.render(request, "error.html", context, status=503)
    return web.pages.render(request, "check_inbox.html", {"email": result.email})


def _form(
    request: Request,
    web: Web,
    result: FormResult,
    *,
    status: int = 200,
    auto_timezone: bool = False,
) -> HTMLResponse:
    context: dict[str, Any] = {
        "values": result.values,
        "errors": result.errors,
        "auto_timezone": auto_timezone,
    }
    return web.pages.render(request, "signup.html", context, status=status)


def _register(
    web: Web, result: FormResult, now: datetime
) -> tuple[Subscriber, datetime | None, bool]:
    """Add or find the subscriber and claim the right to mail them a link now."""
    try:
        return _subscribe_and_claim(web, result, now)
    except IntegrityError:
        # The same new address signed up twice at once: the second try finds the first's row.
        return _subscribe_and_claim(web, result, now)


def _subscribe_and_claim(
    web: Web, result: FormResult, now: datetime
) -> tuple[Subscriber, datetime | None, bool]:
    preferences = result.preferences
    assert preferences is not None, "only a valid form is registered"
    with web.db.session() as session:
        subscriber = subscriptions.subscribe(
            session,
            web.settings,
            email=result.email,
            keywords=preferences.keywords,
            now=now,
            timezone=preferences.timezone,
            send_hour=preferences.send_hour,
            digest_size=preferences.digest_size,
        )
        previous = subscriber.confirm_sent_at
        due = previous is None or previous <= now - CONFIRM_RESEND_AFTER
        claimed = due and storage.claim_confirmation(session, subscriber.id, previous, now)
    return subscriber, previous, claimed


def _mail(web: Web, subscriber: Subscriber, previous: datetime | None, now: datetime) -> bool:
    """Send the confirmation; on failure give the claim back so that a retry may send."""
    try:
        send_confirmation(web.settings, subscriber, now=now)
    except SendError as exc:
        log.warning("confirmation to subscriber %d not sent: %s", subscriber.id, exc)
        with web.db.session() as session:
            storage.release_confirmation(session, subscriber.id, now, previous)
        return False
    return True
