"""POST /webhooks/<provider>: bounces and complaints from SES (SNS), Postmark, SendGrid, Mailgun.

Each endpoint answers 404 until its secret is configured, 401/403 to a forged, stale or
replayed request (nothing stored), 400 to a body not of the provider's shape, 422 when the
events name nobody we mailed (kept as `unknown`, no subscriber changes) and 200 otherwise.
The work per request is one signature check and one short transaction: webhooks arrive
while a send is running.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import httpx
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from newsletter import storage
from newsletter.bounces import BounceEvent, record
from newsletter.mail.addresses import sender_domain
from newsletter.web.context import Web
from newsletter.web.webhooks import parse, sns, verify

log = logging.getLogger(__name__)
router = APIRouter(prefix="/webhooks")

_certs = sns.CertificateCache()
# SendGrid posts batches of up to 768 KB; every other provider one event, well under the
# site's 64 KiB. Anything past these is not a webhook of ours.
BODY_LIMITS = {"/webhooks/sendgrid": 1024 * 1024}
MAX_EVENTS = 5000


@dataclass(frozen=True)
class Verified:
    """A request's events, and the one-time token that must not have been used before."""

    events: list[BounceEvent]
    once: str | None = None


def _web(request: Request) -> Web:
    web: Web = request.app.state.web
    return web


def _answer(status: int, **content: Any) -> JSONResponse:
    return JSONResponse(content, status_code=status)


async def _handle(
    request: Request,
    configured: Callable[[Web], bool],
    events_of: Callable[[Web, bytes], list[BounceEvent] | Verified],
) -> JSONResponse:
    web = _web(request)
    if not configured(web):
        return _answer(404, error="not found")
    body = await request.body()  # capped by BodySizeLimitMiddleware
    try:
        found = await run_in_threadpool(events_of, web, body)
        verified = found if isinstance(found, Verified) else Verified(found)
        if len(verified.events) > MAX_EVENTS:
            raise parse.PayloadError(f"more than {MAX_EVENTS} events")
        outcomes = await run_in_threadpool(_record_all, web, verified)
    except verify.Forged as error:
        log.warning("webhook %s refused: %s", request.url.path, error)
        return _answer(403, error="forbidden")
    except parse.PayloadError as error:
        return _answer(400, error=str(error))
    if outcomes and all(outcome in ("unknown", "forged") for outcome in outcomes):
        return _answer(422, error="names nobody we mailed", outcomes=outcomes)
    return _answer(200, outcomes=outcomes)


def _record_all(web: Web, verified: Verified) -> list[str]:
    if not verified.events and verified.once is None:
        return []
    now = web.clock()
    with web.db.session() as session:
        # The token is claimed in the transaction that records its events: a failure to
        # record leaves it unused, so the provider's retry is not taken for a replay.
        if verified.once is not None:
            since = now - timedelta(seconds=web.settings.webhook_max_age)
            if not storage.claim_webhook_token(session, verified.once, now, since):
                raise verify.Forged("the token was used before (a replay)")
        return [str(record(session, web.settings, event, now)) for event in verified.events]


# --- generic ----------------------------------------------------------------------------------


def _generic(web: Web, body: bytes, authorization: str | None) -> list[BounceEvent]:
    assert web.settings.webhook_generic_secret
    verify.check_bearer(authorization, web.settings.webhook_generic_secret)
    return parse.generic_events(parse.json_body(body), sender_domain(web.settings.from_address))


@router.post("/generic")
async def generic(request: Request) -> JSONResponse:
    """A shared bearer secret; {"email"|"message_id"|"delivery_id", "kind", "reason"}."""
    authorization = request.headers.get("authorization")
    return await _handle(
        request,
        lambda web: bool(web.settings.webhook_generic_secret),
        lambda web, body: _generic(web, body, authorization),
    )


# --- Postmark ---------------------------------------------------------------------------------


def _postmark(web: Web, body: bytes, authorization: str | None) -> list[BounceEvent]:
    settings = web.settings
    assert settings.webhook_postmark_user and settings.webhook_postmark_password
    verify.check_basic(
        authorization, settings.webhook_postmark_user, settings.webhook_postmark_password
    )
    return parse.postmark_events(parse.json_body(body))


@router.post("/postmark")
async def postmark(request: Request) -> JSONResponse:
    """Postmark's Bounce and SpamComplaint webhooks, behind HTTP basic auth."""
    authorization = request.headers.get("authorization")
    return await _handle(
        request,
        lambda web: bool(
            web.settings.webhook_postmark_user and web.settings.webhook_postmark_password
        ),
        lambda web, body: _postmark(web, body, authorization),
    )


# --- SendGrid ---------------------------------------------------------------------------------


def _sendgrid(web: Web, body: bytes, signature: str | None, timestamp: str | None) -> list:
    settings = web.settings
    assert settings.webhook_sendgrid_public_key
    verify.check_sendgrid(
        settings.webhook_sendgrid_public_key, body, signature, timestamp, settings.webhook_max_age
    )
    return parse.sendgrid_events(parse.json_body(body))


@router.post("/sendgrid")
async def sendgrid(request: Request) -> JSONResponse:
    """SendGrid's signed Event Webhook: ECDSA over timestamp + body."""
    signature = request.headers.get("x-twilio-email-event-webhook-signature")
    timestamp = request.headers.get("x-twilio-email-event-webhook-timestamp")
    return await _handle(
        request,
        lambda web: bool(web.settings.webhook_sendgrid_public_key),
        lambda web, body: _sendgrid(web, body, signature, timestamp),
    )


# --- Mailgun ----------------------------------------------------------------------------------


def _mailgun(web: Web, body: bytes) -> Verified:
    settings = web.settings
    assert settings.webhook_mailgun_signing_key
    payload = parse.json_body(body)
    if not isinstance(payload, dict):
        raise parse.PayloadError('a Mailgun webhook body is {"signature", "event-data"}')
    token = verify.check_mailgun(
        settings.webhook_mailgun_signing_key, payload.get("signature"), settings.webhook_max_age
    )
    event = payload.get("event-data")
    if not isinstance(event, dict):
        raise parse.PayloadError('no "event-data" object')
    return Verified(parse.mailgun_events(event), once=f"mailgun:{token}")


@router.post("/mailgun")
async def mailgun(request: Request) -> JSONResponse:
    """Mailgun's webhooks (JSON): HMAC of timestamp + token, fresh, each token once."""
    return await _handle(
        request, lambda web: bool(web.settings.webhook_mailgun_signing_key), _mailgun
    )


# --- Amazon SES through SNS -------------------------------------------------------------------


def _ses(web: Web, body: bytes) -> list[BounceEvent]:
    message = parse.json_body(body)
    if not isinstance(message, dict):
        raise parse.PayloadError("an SNS message is a JSON object")
    sns.verify_message(web.settings, _certs, message)
    kind = message.get("Type")
    if kind == "SubscriptionConfirmation":
        try:
            sns.confirm_subscription(web.settings, message)
        except httpx.HTTPError as error:
            # Ours to retry: SNS sends the confirmation again.
            raise parse.PayloadError(f"the subscription could not be confirmed: {error}") from None
        log.info("confirmed the SNS subscription to %s", message.get("TopicArn"))
        return []
    if kind != "Notification":
        return []
    try:
        inner = json.loads(str(message.get("Message", "")))
    except json.JSONDecodeError:
        return []  # a topic's test message, not an SES notification
    return parse.ses_events(inner) if isinstance(inner, dict) else []


@router.post("/ses")
async def ses(request: Request) -> JSONResponse:
    """SES bounce and complaint notifications through SNS, and its subscription confirmation."""
    return await _handle(request, lambda web: bool(web.settings.webhook_ses_topics), _ses)
