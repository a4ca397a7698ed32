"""The admin dashboard through the web test client: off without operators, sign-in, guards,
searches, a subscriber's page and its actions, resends, editions and source runs."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from sqlalchemy import func, select

from newsletter import pipeline, storage
from newsletter.config import load_settings
from newsletter.models import (
    ACTIVE,
    FAILED,
    PAUSED,
    PLANNED,
    SENT,
    UNSUBSCRIBED,
    Delivery,
    DeliveryResend,
    Subscriber,
)
from newsletter.web.admin import accounts

PASSWORD = "correct horse battery"
REQUEST_KEY = re.compile(r'name="request_key" value="([^"]+)"')


def add_operator(db, name: str = "olga", password: str = PASSWORD) -> None:
    with db.session() as session:
        accounts.add_operator(session, name, password, storage.utcnow())


def login(w, client=None, name: str = "olga", password: str = PASSWORD):
    return w.post_form("/admin/login", client=client or w.client, username=name, password=password)


@pytest.fixture
def operator(w, db):
    """An operator signed in with w.client."""
    add_operator(db)
    response = login(w)
    assert response.status_code == 303, response.text
    return "olga"


def ledger(db) -> list[tuple]:
    with db.session() as session:
        rows = session.execute(
            select(Delivery.id, Delivery.subscriber_id, Delivery.edition, Delivery.state).order_by(
                Delivery.id
            )
        )
        return [tuple(row) for row in rows]


def states(db) -> dict[int, str]:
    with db.session() as session:
        return dict(session.execute(select(Subscriber.id, Subscriber.state)).all())


def action(w, subscriber_id: int, what: str, client=None, **fields):
    page = f"/admin/subscribers/{subscriber_id}"
    return w.post_form(page, f"{page}/{what}", client=client, **fields)


# Off until an operator exists ---------------------------------------------------------------


@pytest.mark.parametrize("path", ["/admin", "/admin/login", "/admin/subscribers", "/admin/sources"])
def test_the_dashboard_answers_404_while_no_operator_exists(w, path):
    assert w.client.get(path).status_code == 404


def test_a_login_post_is_404_too_while_no_operator_exists(w):
    token = w.csrf_token(w.client.get("/").text)
    response = w.client.post(
        "/admin/login", data={"csrf_token": token, "username": "x", "password": "y" * 12}
    )
    assert response.status_code == 404


# Guards -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "path", ["/admin", "/admin/subscribers", "/admin/subscribers/1", "/admin/editions"]
)
def test_an_anonymous_page_request_is_sent_to_the_login_page(w, db, path):
    add_operator(db)
    response = w.client.get(path)
    assert response.status_code == 303
    assert response.headers["location"] == "/admin/login"


@pytest.mark.parametrize("what", ["pause", "unsubscribe", "resend"])
def test_an_anonymous_action_is_sent_to_the_login_page_and_changes_nothing(w, db, what):
    add_operator(db)
    subscriber = w.add("ada@example.org")
    before = (states(db), ledger(db))
    # A valid CSRF token (from the login page), but no session.
    token = w.csrf_token(w.client.get("/admin/login").text)
    response = w.client.post(
        f"/admin/subscribers/{subscriber}/{what}",
        data={"csrf_token": token, "request_key": "k" * 24},
    )
    assert response.status_code == 303
    assert response.headers["location"] == "/admin/login"
    assert (states(db), ledger(db)) == before


@pytest.mark.parametrize(("name", "password"), [("olga", "wrong password"), ("nobody", PASSWORD)])
def test_a_wrong_name_or_password_gets_401_and_no_session(w, db, name, password):
    add_operator(db)
    response = login(w, name=name, password=password)
    assert response.status_code == 401
    assert "Wrong name or password." in response.text
    assert "newsletter_admin" not in response.headers.get("set-cookie", "")
    assert w.client.get("/admin").status_code == 303


def test_the_session_cookie_is_signed_httponly_strict_and_expires(w, db):
    add_operator(db)
    response = login(w)
    cookie = next(c for c in response.headers.get_list("set-cookie") if "admin" in c)
    assert cookie.startswith("newsletter_admin=")
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Max-Age=43200" in cookie
    assert "Secure" not in cookie  # http://: a Secure cookie would never come back
    with db.session() as session:
        assert storage.operator_by_username(session, "olga").last_login_at is not None


def test_over_https_the_session_cookie_is_secure_and_host_only(tmp_path, db):
    from newsletter.web.app import create_app

    from .conftest import WebHelper

    settings = load_settings(
        var_dir=tmp_path / "var", secret_key="test-secret", base_url="https://news.example.org"
    )
    add_operator(db)
    app = create_app(settings, db)
    from tests.conftest import web_test_client_class

    with web_test_client_class()(app, base_url="https://news.example.org") as client:
        page = client.get("/admin/login")
        token = WebHelper.csrf_token(page.text)
        response = client.post(
            "/admin/login",
            data={"csrf_token": token, "username": "olga", "password": PASSWORD},
            follow_redirects=False,
        )
    assert response.status_code == 303
    cookie = next(c for c in response.headers.get_list("set-cookie") if "admin" in c)
    assert cookie.startswith("__Host-newsletter_admin=")
    assert "Secure" in cookie and "HttpOnly" in cookie and "Path=/" in cookie


def test_a_forged_or_stale_session_cookie_is_refused(w, db, operator):
    cookie = w.client.cookies.get("newsletter_admin")
    w.client.cookies.set("newsletter_admin", cookie[:-2] + ("AA" if cookie[-2:] != "AA" else "BB"))
    assert w.client.get("/admin").status_code == 303


def test_a_new_password_or_a_removed_operator_ends_the_session(w, db, operator):
    assert w.client.get("/admin").status_code == 200
    add_operator(db, password="another long password")
    assert w.client.get("/admin").status_code == 303
    login(w, password="another long password")
    assert w.client.get("/admin").status_code == 200
    add_operator(db, "second")
    with db.session() as session:
        storage.remove_operator(session, "olga")
    assert w.client.get("/admin").status_code == 303


def test_logout_ends_the_session(w, operator):
    response = w.post_form("/admin", "/admin/logout")
    assert response.status_code == 303
    assert w.client.get("/admin").status_code == 303


@pytest.fixture
def still_window(web):
    """Rate-limit counters on a clock that stands still: no window ends mid-test."""
    from newsletter.web.ratelimit import MemoryRateLimiter

    web.limiter = MemoryRateLimiter(clock=lambda: 1_000_000.0)


def test_logins_are_rate_limited_per_name_even_with_the_right_password(w, db, still_window):
    add_operator(db)
    for attempt in range(10):
        client = w.new_client(f"192.0.2.{attempt + 10}")  # a new address each time
        assert login(w, client, password=f"guess number {attempt}").status_code == 401
    response = login(w, w.new_client("192.0.2.99"))
    assert response.status_code == 429
    assert "newsletter_admin" not in response.headers.get("set-cookie", "")


def test_logins_are_rate_limited_per_address(w, db, still_window):
    add_operator(db)
    client = w.new_client("198.51.100.7")
    for attempt in range(20):
        assert login(w, client, name=f"name{attempt}").status_code == 401
    assert login(w, client).status_code == 429
    assert login(w, w.new_client("198.51.100.8")).status_code == 303  # another address


def test_an_action_without_its_csrf_token_is_refused_and_changes_nothing(w, db, operator):
    subscriber = w.add("ada@example.org")
    response = w.client.post(f"/admin/subscribers/{subscriber}/pause", data={})
    assert response.status_code == 403
    assert states(db)[subscriber] == ACTIVE


def test_admin_pages_have_no_inline_script_or_style(w, db, operator):
    subscriber = w.add("ada@example.org")
    for path in ("/admin", f"/admin/subscribers/{subscriber}", "/admin/subscribers?address=a"):
        html = w.client.get(path).text
        assert not re.search(r"<script(?![^>]*\bsrc=)", html), path
        assert not re.search(r"<style|\sstyle=", html), path


# Subscribers --------------------------------------------------------------------------------


def test_search_by_address_state_and_keyword(w, db, operator):
    ada = w.add("ada@example.org", keywords="diffusion models")
    bob = w.add("bob@example.org", state=PAUSED, keywords='"label noise"')
    w.add("carol@example.net", keywords="diffusion, 100%_sure")

    def found(**query) -> set[str]:
        html = w.client.get("/admin/subscribers", params=query).text
        return set(re.findall(r'/admin/subscribers/\d+">([^<]+)<', html))

    assert found(address="EXAMPLE.ORG") == {"ada@example.org", "bob@example.org"}
    assert found(state="paused") == {"bob@example.org"}
    assert found(keyword="Diffusion") == {"ada@example.org", "carol@example.net"}
    assert found(keyword="diffusion", address="org") == {"ada@example.org"}
    assert found(keyword="%_") == {"carol@example.net"}  # literal, not wildcards
    assert found(keyword="0_s") == set()
    assert found(state="nonsense") == {"ada@example.org", "bob@example.org", "carol@example.net"}
    assert ada and bob


def sent_today(w, db, email: str = "ada@example.org", *, deliver: bool = True) -> int:
    """A subscriber whose digest of today was planned, and sent to the outbox."""
    subscriber = w.add(email, keywords="diffusion, agents, language models", timezone="UTC")
    pipeline.plan(db, w.settings, edition=storage.utcnow().date())
    if deliver:
        pipeline.deliver(db, w.settings)
    return subscriber


def test_a_subscriber_page_shows_the_profile_and_the_last_deliveries(w, db, operator, web_papers):
    subscriber = sent_today(w, db)
    html = w.client.get(f"/admin/subscribers/{subscriber}").text
    assert "ada@example.org" in html and "diffusion, agents, language models" in html
    today = storage.utcnow().date().isoformat()
    row = re.search(rf'<tr data-edition="{today}">(.*?)</tr>', html, re.S)
    assert row and "<td>sent</td>" in row.group(1)
    assert f"digest.{today.replace('-', '')}." in row.group(1)  # its Message-ID


def test_a_subscriber_page_shows_the_bounces_reported_later(w, db, operator, web_papers):
    from newsletter.models import HARD

    subscriber = sent_today(w, db)
    with db.session() as session:
        storage.add_bounce_event(
            session,
            subscriber_id=subscriber,
            kind=HARD,
            status="5.1.1",
            recipient="ada@example.org",
            reported_recipient="ada@example.org",
            reason="smtp; 550 5.1.1 <ada@example.org>: Recipient address rejected",
            source="dsn",
            outcome="suppressed",
            received_at=storage.utcnow(),
        )
    html = w.client.get(f"/admin/subscribers/{subscriber}").text
    section = html.split('id="bounces-heading"', 1)[1]
    assert "5.1.1" in section and "suppressed" in section and "dsn" in section
    assert "Recipient address rejected" in section and "&lt;ada@example.org&gt;" in section


def test_pause_resume_and_unsubscribe_from_the_dashboard(w, db, operator, web_papers):
    subscriber = sent_today(w, db, deliver=False)
    assert [r[3] for r in ledger(db)] == [PLANNED]
    response = action(w, subscriber, "pause")
    assert response.status_code == 303
    assert response.headers["location"] == f"/admin/subscribers/{subscriber}?done=paused"
    assert states(db)[subscriber] == PAUSED
    assert ledger(db) == []  # what was planned is cancelled, as the subscriber's own pause does
    assert "The subscriber is paused" in w.client.get(response.headers["location"]).text
    action(w, subscriber, "resume")
    assert states(db)[subscriber] == ACTIVE
    key = w.get(subscriber).link_key
    action(w, subscriber, "unsubscribe")
    assert states(db)[subscriber] == UNSUBSCRIBED
    assert w.get(subscriber).link_key != key  # their links are revoked


def test_an_unknown_subscriber_is_404(w, operator):
    assert w.client.get("/admin/subscribers/999").status_code == 404


def _resend(w, subscriber: int, key: str | None = None):
    page = w.client.get(f"/admin/subscribers/{subscriber}").text
    key = key or REQUEST_KEY.search(page).group(1)
    token = w.csrf_token(page)
    response = w.client.post(
        f"/admin/subscribers/{subscriber}/resend", data={"csrf_token": token, "request_key": key}
    )
    return response, key


def test_resend_plans_todays_digest_again_with_a_new_message_id_once_per_click(
    w, db, operator, web_papers, outbox
):
    subscriber = sent_today(w, db)
    [first] = outbox()
    [(old_id, _, edition, state)] = ledger(db)
    assert state == SENT

    response, key = _resend(w, subscriber)
    assert response.headers["location"].endswith("?done=resent")
    [(new_id, _, again, state)] = ledger(db)
    assert (again, state) == (edition, PLANNED) and new_id != old_id

    # The same click once more (a double submit, a reload of the POST): nothing more.
    response, _ = _resend(w, subscriber, key)
    assert response.headers["location"].endswith("?done=repeated")
    # Another click while the digest is still planned: nothing either.
    response, _ = _resend(w, subscriber)
    assert response.headers["location"].endswith("?done=busy")
    assert [row[0] for row in ledger(db)] == [new_id]

    pipeline.deliver(db, w.settings)
    messages = outbox()
    assert len(messages) == 2
    domain = first["Message-ID"].rstrip(">").split("@")[1]
    resent = f"<digest.{edition:%Y%m%d}.{new_id}@{domain}>"
    assert {m["Message-ID"] for m in messages} == {first["Message-ID"], resent}
    with db.session() as session:
        [record] = session.scalars(select(DeliveryResend)).all()
        assert (record.operator, record.previous_delivery_id, record.delivery_id) == (
            "olga",
            old_id,
            new_id,
        )
        assert record.previous_message_id == first["Message-ID"]
    assert "Sent again by an operator" in w.client.get(f"/admin/subscribers/{subscriber}").text


@pytest.mark.parametrize("state", [PAUSED, UNSUBSCRIBED, "bouncing"])
def test_resend_to_a_subscriber_who_is_not_active_changes_nothing(
    w, db, operator, web_papers, state
):
    subscriber = sent_today(w, db)
    key = REQUEST_KEY.search(w.client.get(f"/admin/subscribers/{subscriber}").text).group(1)
    with db.session() as session:
        session.get(Subscriber, subscriber).state = state
    before = ledger(db)
    assert "Resend today" not in w.client.get(f"/admin/subscribers/{subscriber}").text
    response, _ = _resend(w, subscriber, key)
    assert response.headers["location"].endswith("?done=inactive")
    assert ledger(db) == before


def test_resend_without_a_digest_today_changes_nothing(w, db, operator):
    subscriber = w.add("ada@example.org")
    response, _ = _resend(w, subscriber)
    assert response.headers["location"].endswith("?done=missing")
    assert ledger(db) == []


def test_resend_needs_a_well_formed_request_key(w, db, operator, web_papers):
    subscriber = sent_today(w, db)
    before = ledger(db)
    response, _ = _resend(w, subscriber, key="<bad>")
    assert response.status_code == 422
    assert ledger(db) == before


def test_resend_of_a_failed_digest(w, db, operator, web_papers):
    subscriber = sent_today(w, db, deliver=False)
    with db.session() as session:
        session.execute(Delivery.__table__.update().values(state=FAILED, error="550 no such user"))
    response, _ = _resend(w, subscriber)
    assert response.headers["location"].endswith("?done=resent")
    assert [row[3] for row in ledger(db)] == [PLANNED]


# Editions and source runs -------------------------------------------------------------------


def test_the_editions_page_counts_each_state_and_shows_the_errors(w, db, operator, web_papers):
    for name in ("a", "b", "c"):
        w.add(f"{name}@example.org", keywords="diffusion, agents", timezone="UTC")
    w.add("none@example.org", keywords="zzzqqq nothing matches", timezone="UTC")
    today = storage.utcnow().date()
    pipeline.plan(db, w.settings, edition=today)
    with db.session() as session:
        first = session.scalar(select(func.min(Delivery.id)).where(Delivery.state == PLANNED))
        session.execute(
            Delivery.__table__.update()
            .where(Delivery.id == first)
            .values(state=FAILED, error="550 5.1.1 mailbox unavailable")
        )
    html = w.client.get("/admin/editions").text
    row = re.search(rf'<tr data-edition="{today}">(.*?)</tr>', html, re.S).group(1)
    cells = dict(re.findall(r'<td data-state="(\w+)">(\d+)</td>', row))
    assert cells == {
        "planned": "2",
        "sending": "0",
        "retry": "0",
        "sent": "0",
        "failed": "1",
        "skipped": "1",
    }
    assert "550 5.1.1 mailbox unavailable" in html


def test_the_source_runs_page_lists_the_runs(w, db, operator):
    with db.session() as session:
        now = storage.utcnow()
        storage.record_source_run(
            session,
            source="arxiv",
            started_at=now - timedelta(hours=1),
            outcome="error",
            error="HTTP 503 from export.arxiv.org",
        )
        storage.record_source_run(
            session, source="hf_daily", started_at=now, outcome="ok", papers_new=7
        )
    html = w.client.get("/admin/sources").text
    assert "HTTP 503 from export.arxiv.org" in html
    assert html.index("hf_daily") < html.index("arxiv")  # the latest first


# Distributed mode: several web processes, one database, one Redis --------------------------


@pytest.mark.redis
def test_two_web_processes_share_sessions_and_login_limits_through_redis(tmp_path, redis_url):
    """A session signed by one web process is good on another; the sign-in limit of a name
    counts the attempts made on both (Redis counters, as in distributed mode)."""
    from newsletter.db import Database
    from newsletter.web.app import create_app
    from tests.conftest import web_test_client_class

    from .conftest import WebHelper

    settings = load_settings(
        var_dir=tmp_path / "var", secret_key="test-secret", redis_url=redis_url
    )
    db = Database(settings)
    db.upgrade()
    add_operator(db)
    client_class = web_test_client_class()
    try:
        with (
            client_class(create_app(settings, db), follow_redirects=False) as one,
            client_class(create_app(settings, db), follow_redirects=False) as two,
        ):

            def attempt(client, password: str):
                token = WebHelper.csrf_token(client.get("/admin/login").text)
                data = {"csrf_token": token, "username": "olga", "password": password}
                return client.post("/admin/login", data=data)

            import redis

            from newsletter.web.ratelimit import RedisRateLimiter

            for client in (one, two):  # a clock that stands still: no window ends mid-test
                limiter = RedisRateLimiter(redis.Redis.from_url(redis_url), clock=lambda: 1e6)
                client.app.state.web.limiter = limiter
            assert attempt(one, PASSWORD).status_code == 303
            two.cookies.set("newsletter_admin", one.cookies.get("newsletter_admin"))
            assert two.get("/admin").status_code == 200
            for client in (one, two):
                client.cookies.delete("newsletter_admin")  # anonymous again, on both
            for n in range(9):
                assert attempt(one if n % 2 else two, f"wrong guess {n}").status_code == 401
            assert attempt(two, PASSWORD).status_code == 429  # the 11th try of the name
    finally:
        db.dispose()


def test_a_session_older_than_twelve_hours_is_refused(w, db, operator):
    """The same cookie, signed as the app signs it but 12 hours and a minute ago."""
    import time

    from itsdangerous import TimestampSigner, URLSafeTimedSerializer

    from newsletter.web.admin import auth

    class PastSigner(TimestampSigner):
        def get_timestamp(self) -> int:
            return int(time.time()) - auth.SESSION_SECONDS - 60

    current = w.client.cookies.get("newsletter_admin")
    payload = URLSafeTimedSerializer(w.settings.secret_key, salt="newsletter.admin.session").loads(
        current
    )
    old = URLSafeTimedSerializer(
        w.settings.secret_key, salt="newsletter.admin.session", signer=PastSigner
    ).dumps(payload)
    w.client.cookies.set("newsletter_admin", old)
    assert w.client.get("/admin").status_code == 303
    w.client.cookies.set("newsletter_admin", current)
    assert w.client.get("/admin").status_code == 200


def test_a_hash_made_with_weaker_parameters_is_upgraded_at_sign_in(w, db):
    from argon2 import PasswordHasher

    weak = PasswordHasher(time_cost=1, memory_cost=8192, parallelism=1).hash(PASSWORD)
    with db.session() as session:
        storage.add_operator(session, "olga", weak, storage.utcnow())
    assert login(w).status_code == 303
    with db.session() as session:
        stored = storage.operator_by_username(session, "olga").password_hash
    assert stored != weak and not accounts.needs_rehash(stored)
    assert accounts.verify_password(stored, PASSWORD)
    assert w.client.get("/admin").status_code == 200  # the session is of the new hash


def test_resend_finds_a_weekly_subscriber_s_digest_of_this_week(w, db, operator, web_papers):
    """A weekly edition is keyed by the week's Monday: resend looks for that, not today."""
    today = storage.utcnow().date()
    subscriber = w.add(
        "wendy@example.org",
        keywords="diffusion, agents, language models",
        timezone="UTC",
        frequency="weekly",
        send_weekday=today.weekday(),
        send_hour=0,
    )
    pipeline.plan(db, w.settings)
    pipeline.deliver(db, w.settings)
    [(old_id, _, edition, state)] = ledger(db)
    assert (edition, state) == (today - timedelta(days=today.weekday()), SENT)
    assert f"({edition.isoformat()})" in w.client.get(f"/admin/subscribers/{subscriber}").text
    response, _ = _resend(w, subscriber)
    assert response.headers["location"].endswith("?done=resent")
    [(new_id, _, again, state)] = ledger(db)
    assert (again, state) == (edition, PLANNED) and new_id != old_id
