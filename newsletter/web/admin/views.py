"""The admin pages: overview with charts, subscribers, one subscriber, editions, source runs."""

from __future__ import annotations

import logging
import re
import secrets
from collections.abc import Callable
from datetime import date, datetime
from typing import Any
from zoneinfo import ZoneInfo

from fastapi import APIRouter, Depends, HTTPException
from fastapi.responses import HTMLResponse, RedirectResponse
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session
from starlette.requests import Request
from starlette.responses import Response

from newsletter import storage, subscriptions
from newsletter.editions import period
from newsletter.models import SUBSCRIBER_STATES, Subscriber
from newsletter.web.admin import accounts, auth, charts
from newsletter.web.context import FormDep, Web, WebDep, require_csrf

log = logging.getLogger(__name__)

router = APIRouter(prefix="/admin")
SIGNED_IN = [Depends(auth.require_operator)]
# The operator check comes first: an anonymous post is sent to the login page, whatever it holds.
ACTION = [Depends(auth.require_operator), Depends(require_csrf)]
CHART_DAYS = 30
REQUEST_KEY = re.compile(r"[A-Za-z0-9_-]{16,64}")

NOTICES = {
    "paused": "The subscriber is paused: nothing planned for them will be sent.",
    "resumed": "The subscriber is active again.",
    "unsubscribed": "The subscriber is unsubscribed; their links no longer work.",
    "resent": "Today's digest is planned again; the sender mails it on its next run.",
    "repeated": "That resend was already done: nothing more was changed.",
    "inactive": "Only an active subscriber can be sent a digest: nothing changed.",
    "busy": "Today's digest is still on its way (planned, sending or retrying): nothing changed.",
    "missing": "There is no digest for this subscriber today yet: nothing changed.",
    "empty": "Today's digest for this subscriber was skipped (nothing matched): nothing changed.",
}


def _page(
    request: Request, web: Web, name: str, context: dict[str, Any], status: int = 200
) -> HTMLResponse:
    context = {"operator": getattr(request.state, "operator", None), **context}
    return web.pages.render(request, f"admin/{name}", context, status=status)


def _to(web: Web, path: str) -> RedirectResponse:
    return RedirectResponse(web.pages.href(path), status_code=303)


# Signing in ---------------------------------------------------------------------------------


@router.get("/login", response_class=HTMLResponse, dependencies=[Depends(auth.dashboard_on)])
def login_page(request: Request, web: WebDep) -> Response:
    """The sign-in form (straight to the overview when already signed in)."""
    if auth.signed_in(request, web):
        return _to(web, "/admin")
    return _page(request, web, "login.html", {"error": None, "username": ""})


@router.post(
    "/login",
    response_class=HTMLResponse,
    dependencies=[Depends(auth.dashboard_on), Depends(require_csrf)],
)
def login(request: Request, web: WebDep, form: FormDep) -> Response:
    """Check the name and password; a wrong one gets 401 and the form again."""
    username = str(form.get("username") or "").strip()
    password = str(form.get("password") or "")
    auth.limit_login(request, web, username)
    with web.db.session() as session:
        operator = storage.operator_by_username(session, username) if username else None
        ok = accounts.verify_password(operator.password_hash if operator else None, password)
        if ok and operator is not None:
            storage.record_operator_login(session, operator.id, web.clock())
            if accounts.needs_rehash(operator.password_hash):  # parameters raised since
                operator = accounts.add_operator(session, username, password, web.clock())
            response = _to(web, "/admin")
            auth.start_session(response, web.settings, operator)
            log.info("operator %s signed in", operator.username)
            return response
    log.info("failed operator sign-in")
    context = {"error": "Wrong name or password.", "username": username[:64]}
    return _page(request, web, "login.html", context, status=401)


@router.post("/logout", dependencies=ACTION)
def logout(web: WebDep) -> Response:
    """End the session: the cookie is removed from this browser."""
    response = _to(web, "/admin/login")
    auth.end_session(response, web.settings)
    return response


# Overview, editions, source runs ------------------------------------------------------------


def _charts(web: Web, session: Any) -> list[charts.Chart]:
    today = web.clock().date()
    history = storage.subscriber_history(session)
    return [
        charts.chart_of(
            "chart-subscribers",
            "Subscribers over time, by state",
            f"Subscribers at the end of each of the last {CHART_DAYS} days, stacked by state.",
            charts.subscribers_over_time(history, today, CHART_DAYS),
            ("active", "paused", "bouncing", "pending", "unsubscribed"),
        ),
        charts.chart_of(
            "chart-deliveries",
            "Deliveries per day, by state",
            f"Digests of each of the last {CHART_DAYS} editions, stacked by delivery state.",
            storage.delivery_counts(session, CHART_DAYS),
            ("sent", "planned", "sending", "retry", "failed", "skipped"),
        ),
        charts.chart_of(
            "chart-papers",
            "Papers per day, by source",
            f"Papers announced on each of the last {CHART_DAYS} days that have any, by source.",
            storage.paper_counts_by_day(session, CHART_DAYS),
        ),
    ]


@router.get("", response_class=HTMLResponse, dependencies=SIGNED_IN)
def overview(request: Request, web: WebDep) -> Response:
    """Subscriber counts and the three charts."""
    with web.db.session() as session:
        context = {
            "counts": storage.subscriber_counts(session),
            "states": SUBSCRIBER_STATES,
            "charts": _charts(web, session),
            "svg": charts.svg,
        }
    return _page(request, web, "overview.html", context)


@router.get("/editions", response_class=HTMLResponse, dependencies=SIGNED_IN)
def editions(request: Request, web: WebDep) -> Response:
    """Per edition: how many digests are planned, sent, failed, skipped, and the errors."""
    with web.db.session() as session:
        rows = storage.delivery_counts(session, 14)
        days = sorted({edition for edition, _, _ in rows}, reverse=True)
        table = {day: {state: n for e, state, n in rows if e == day} for day in days}
        errors = storage.edition_errors(session, days)
    context = {"days": days, "table": table, "errors": errors}
    return _page(request, web, "editions.html", context)


@router.get("/sources", response_class=HTMLResponse, dependencies=SIGNED_IN)
def sources(request: Request, web: WebDep) -> Response:
    """The latest collection runs of every source, with their errors."""
    with web.db.session() as session:
        runs = storage.last_source_runs(session, 50)
        session.expunge_all()
    return _page(request, web, "sources.html", {"runs": runs})


# Subscribers --------------------------------------------------------------------------------


@router.get("/subscribers", response_class=HTMLResponse, dependencies=SIGNED_IN)
def subscribers(request: Request, web: WebDep) -> Response:
    """Search by address, state and keyword (any part, any case)."""
    query = {
        name: request.query_params.get(name, "").strip()[:200]
        for name in ("address", "state", "keyword")
    }
    if query["state"] and query["state"] not in SUBSCRIBER_STATES:
        query["state"] = ""
    with web.db.session() as session:
        found = storage.search_subscribers(session, **query, limit=100)
        session.expunge_all()
    context = {"query": query, "states": SUBSCRIBER_STATES, "found": found}
    return _page(request, web, "subscribers.html", context)


def _subscriber(session: Any, subscriber_id: int) -> Subscriber:
    subscriber = storage.subscriber_by_id(session, subscriber_id)
    if subscriber is None:
        raise HTTPException(404)
    return subscriber


def _current_edition(web: Web, subscriber: Subscriber) -> date:
    """The subscriber's edition now: their local date, or this week's Monday for a weekly one."""
    local = web.clock().replace(tzinfo=ZoneInfo("UTC")).astimezone(ZoneInfo(subscriber.timezone))
    return period(subscriber.frequency, local.date()).key


@router.get("/subscribers/{subscriber_id}", response_class=HTMLResponse, dependencies=SIGNED_IN)
def subscriber(request: Request, web: WebDep, subscriber_id: int) -> Response:
    """One subscriber: profile, delivery history, resends, bounces and complaints reported
    later, and the actions."""
    with web.db.session() as session:
        found = _subscriber(session, subscriber_id)
        deliveries = storage.subscriber_deliveries(session, subscriber_id, 30)
        resends = storage.subscriber_resends(session, subscriber_id)
        bounces = storage.bounce_events_for(session, subscriber_id)[:30]
        today = _current_edition(web, found)
        session.expunge_all()
    context = {
        "subscriber": found,
        "deliveries": deliveries,
        "resends": resends,
        "bounces": bounces,
        "today": today,
        "request_key": secrets.token_urlsafe(24),
        "notice": NOTICES.get(request.query_params.get("done", "")),
        "action": web.pages.href(f"/admin/subscribers/{subscriber_id}"),
    }
    return _page(request, web, "subscriber.html", context)


def _done(web: Web, subscriber_id: int, what: str) -> RedirectResponse:
    return _to(web, f"/admin/subscribers/{subscriber_id}?done={what}")


def _change_state(
    request: Request,
    web: Web,
    subscriber_id: int,
    change: Callable[[Session, Subscriber], None],
    done: str,
) -> RedirectResponse:
    """Apply one state change to the subscriber, log who did it, and show the notice `done`."""
    with web.db.session() as session:
        change(session, _subscriber(session, subscriber_id))
    log.info("operator %s %s subscriber %d", request.state.operator, done, subscriber_id)
    return _done(web, subscriber_id, done)


@router.post("/subscribers/{subscriber_id}/pause", dependencies=ACTION)
def pause(request: Request, web: WebDep, subscriber_id: int) -> Response:
    """Pause an active subscriber (their planned digests are cancelled)."""
    return _change_state(request, web, subscriber_id, subscriptions.pause, "paused")


@router.post("/subscribers/{subscriber_id}/resume", dependencies=ACTION)
def resume(request: Request, web: WebDep, subscriber_id: int) -> Response:
    """Make the subscriber active again (after a pause, bounces or an unsubscribe)."""

    def change(session: Session, found: Subscriber) -> None:
        subscriptions.resume(session, found, web.clock())

    return _change_state(request, web, subscriber_id, change, "resumed")


@router.post("/subscribers/{subscriber_id}/unsubscribe", dependencies=ACTION)
def unsubscribe(request: Request, web: WebDep, subscriber_id: int) -> Response:
    """Unsubscribe at once: no more mail, every link revoked."""

    def change(session: Session, found: Subscriber) -> None:
        subscriptions.unsubscribe(session, found, web.clock())

    return _change_state(request, web, subscriber_id, change, "unsubscribed")


@router.post("/subscribers/{subscriber_id}/resend", dependencies=ACTION)
def resend(request: Request, web: WebDep, form: FormDep, subscriber_id: int) -> Response:
    """Send today's digest again (it was sent or failed); one click resends once."""
    key = str(form.get("request_key") or "")
    if not REQUEST_KEY.fullmatch(key):
        raise HTTPException(422)
    try:
        with web.db.session() as session:
            found = _subscriber(session, subscriber_id)
            outcome = storage.resend_delivery(
                session,
                subscriber_id=subscriber_id,
                edition=_current_edition(web, found),
                operator=request.state.operator,
                request_key=key,
                now=web.clock(),
            )
    except IntegrityError:  # the same click, handled at the same moment by another process
        return _done(web, subscriber_id, "repeated")
    if outcome.status == "resent":
        log.info("operator %s resent delivery %s", request.state.operator, outcome.delivery_id)
    return _done(web, subscriber_id, outcome.status)


def utc_day(moment: datetime | None) -> str:
    """A stored (naive UTC) moment as the pages show it."""
    return "" if moment is None else f"{moment:%Y-%m-%d %H:%M} UTC"
