"""The confirmation queue on SQLite and PostgreSQL: claims, leases, sign-ups during a send."""

from __future__ import annotations

from datetime import timedelta

from newsletter import confirmations, storage, subscriptions
from newsletter.confirmations import LEASE, send_confirmations
from newsletter.web.ratelimit import MemoryRateLimiter


def _queue(db, email: str = "ada@example.org", keywords: str = "diffusion", now=None) -> int:
    with db.session() as session:
        return storage.queue_confirmation(
            session,
            email=email,
            keywords=keywords,
            timezone="UTC",
            send_hour=7,
            digest_size=10,
            now=now or storage.utcnow(),
        )


def _smtp(db, smtp_server):
    return db.settings.model_copy(update={"smtp_url": smtp_server.url})


def test_one_row_per_address_and_one_sender_per_row(backend_db):
    now = storage.utcnow()
    first = _queue(backend_db, now=now)
    assert _queue(backend_db, keywords="agents", now=now) == first
    with backend_db.session() as session:
        [claim] = storage.claim_confirmations(session, now, LEASE)
        assert claim.keywords == "agents" and claim.attempts == 1
    with backend_db.session() as session:  # another sender, same moment: nothing for it
        assert storage.claim_confirmations(session, now, LEASE) == []
        assert storage.claim_confirmations(session, now, LEASE, ids=[first]) == []


def test_a_dead_senders_request_is_sent_once_its_lease_is_over(backend_db, smtp_server):
    settings = _smtp(backend_db, smtp_server)
    now = storage.utcnow()
    _queue(backend_db, now=now)
    with backend_db.session() as session:  # a sender claimed it and died
        storage.claim_confirmations(session, now - LEASE - timedelta(seconds=1), LEASE)
    report = send_confirmations(backend_db, settings, MemoryRateLimiter(), now=now)
    assert report.sent == 1 and len(smtp_server.to("ada@example.org")) == 1
    again = send_confirmations(backend_db, settings, MemoryRateLimiter(), now=now)
    assert again.as_dict() == {"sent": 0, "skipped": 0, "deferred": 0, "retry": 0, "failed": 0}
    with backend_db.session() as session:
        assert storage.confirmation_requests(session) == []
        ada = storage.subscriber_by_email(session, "ada@example.org")
        assert ada.confirm_sent_at == now and ada.keywords == "diffusion"


def test_a_sign_up_during_the_send_is_handled_after_it(backend_db, smtp_server):
    settings = _smtp(backend_db, smtp_server)
    now = storage.utcnow()
    with backend_db.session() as session:
        subscriber_id = subscriptions.subscribe(
            session, settings, email="ada@example.org", keywords="diffusion", now=now
        ).id
    _queue(backend_db, now=now)
    with backend_db.session() as session:
        [claim] = storage.claim_confirmations(session, now, LEASE)
    _queue(backend_db, keywords="agents", now=now)  # typed again while the mail was sent
    with backend_db.session() as session:
        storage.mark_confirmation_sent(session, claim, subscriber_id, now)
        [waiting] = storage.confirmation_requests(session)
        assert waiting.state == "queued" and waiting.lease_until is None
    # Handled again: no second link within two minutes, but what was typed is kept aside.
    report = send_confirmations(backend_db, settings, MemoryRateLimiter(), now=now)
    assert report.skipped == 1 and smtp_server.messages == []
    with backend_db.session() as session:
        ada = storage.subscriber_by_id(session, subscriber_id)
        assert ada.keywords == "diffusion"
        assert ada.pending_preferences["keywords"] == "agents"
        assert storage.confirmation_requests(session) == []


def test_retries_back_off_and_stop_after_the_last_try(backend_db, faulty_smtp_server):
    settings = _smtp(backend_db, faulty_smtp_server).model_copy(update={"max_attempts": 3})
    faulty_smtp_server.reply_for["ada@example.org"] = "451 4.3.0 Try again later"
    now = storage.utcnow()
    _queue(backend_db, now=now)
    limiter = MemoryRateLimiter()
    waits = []
    for _ in range(3):
        report = send_confirmations(backend_db, settings, limiter, now=now)
        with backend_db.session() as session:
            [row] = storage.confirmation_requests(session)
        if row.next_attempt_at:
            waits.append(row.next_attempt_at - now)
            assert send_confirmations(backend_db, settings, limiter, now=now).retry == 0
            now = row.next_attempt_at
    assert report.failed == 1 and row.state == "failed" and "451" in row.error
    assert waits == [confirmations.backoff(settings, 1), confirmations.backoff(settings, 2)]
    assert waits[1] == 2 * waits[0]
    with backend_db.session() as session:
        assert storage.subscriber_by_email(session, "ada@example.org").confirm_sent_at is None
