"""The sign-up page: the same page, and the same work, for every address."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends
from fastapi.responses import HTMLResponse
from starlette.requests import Request

from newsletter import subscriptions
from newsletter.web.context import (
    FormDep,
    Web,
    WebDep,
    client_ip,
    limit,
    require_csrf,
)
from newsletter.web.forms import MAX_FIELD_CHARS, FormResult, parse_signup, signup_defaults

router = APIRouter()

ADDRESS_SIGNUPS_PER_HOUR = 5


def mailbox_key(email: str) -> str:
    """The mailbox an address delivers to, for the per-address limit.

    Case-folded, without a `+tag` in the local part: target+1@ and Target+2@ reach one inbox.
    """
    local, _, domain = email.rpartition("@")
    return f"{local.split('+', 1)[0] or local}@{domain}".casefold()


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
    """Queue the confirmation mail of a sign-up; the sender decides whether one is due.

    Whatever is known of the address (new, pending, active, unsubscribed, entered a moment
    ago), the request writes one queued request and answers the same page, so neither the
    page nor its timing tells anybody who is subscribed. The stored settings of a known
    address do not change here: only its owner, by confirming, applies what was typed.
    """
    result = parse_signup(form, web.settings)
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
        f"signup:address:{mailbox_key(result.email)}",
        ADDRESS_SIGNUPS_PER_HOUR,
        3600,
        "This address has been entered too many times.",
    )
    preferences = result.preferences
    assert preferences is not None, "only a valid form is queued"
    with web.db.session() as session:
        request_id = subscriptions.sign_up(session, preferences, web.clock())
    if web.confirmations is not None:  # after the commit: the sender must find the row
        web.confirmations.wake(request_id)
    context = {"email": result.email, "liked_export": result.liked_export}
    return web.pages.render(request, "check_inbox.html", context)


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
        "liked_fetching": [],  # nothing is fetched for a sign-up before it is confirmed
        "liked_missing": [],
    }
    return web.pages.render(request, "signup.html", context, status=status)
