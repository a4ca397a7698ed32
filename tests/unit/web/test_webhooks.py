"""Each provider's documented webhook body, signed right and forged, through the real app.

A valid one changes the subscriber it names (a hard bounce suppresses, a complaint
unsubscribes); a forged, stale, replayed or unconfigured one answers 4xx and the database is
as it was. SNS certificates and subscription confirmations are served by a local HTTPS server
with a self-signed certificate, let through by the test-only NEWSLETTER_SNS_CERT_HOSTS.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import hmac
import http.server
import ipaddress
import json
import secrets
import ssl
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.x509.oid import NameOID
from sqlalchemy import func, select

from newsletter import storage
from newsletter.bounces.events import is_suppressed
from newsletter.config import load_settings
from newsletter.models import (
    ACTIVE,
    BOUNCING,
    SENT,
    UNSUBSCRIBED,
    BounceEvent,
    Delivery,
    Subscriber,
    WebhookToken,
)
from newsletter.web.webhooks import sns

FIXTURES = Path(__file__).parents[2] / "fixtures" / "webhooks"
TOPIC = "arn:aws:sns:us-west-2:123456789012:MyTopic"
GENERIC_SECRET = "generic-" + "s" * 24
MAILGUN_KEY = "key-mailgun-test"
SENDGRID_KEY = ec.generate_private_key(ec.SECP256R1())
SENDGRID_PUBLIC = base64.b64encode(
    SENDGRID_KEY.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
).decode()


def fixture(name: str):
    return json.loads((FIXTURES / name).read_text())


# --- a local HTTPS server standing in for sns.<region>.amazonaws.com ---------------------------


def _certificate(key, subject: str, *, san_ip: str | None = None, days: int = 1):
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
    now = datetime.now(UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=days))
    )
    if san_ip:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(san_ip))]),
            critical=False,
        ).add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
    return builder.sign(key, hashes.SHA256())


class FakeSNS:
    """Serves the signing certificate and answers SubscribeURLs; records every GET."""

    def __init__(self, folder: Path) -> None:
        self.signing_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        cert = _certificate(self.signing_key, "sns.amazonaws.com")
        self.cert_pem = cert.public_bytes(serialization.Encoding.PEM)
        tls_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        tls_cert = _certificate(tls_key, "127.0.0.1", san_ip="127.0.0.1")
        self.ca_file = folder / "ca.pem"
        self.ca_file.write_bytes(tls_cert.public_bytes(serialization.Encoding.PEM))
        key_file = folder / "key.pem"
        key_file.write_bytes(
            tls_key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        self.hits: list[str] = []
        fake = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - the http.server API
                fake.hits.append(self.path)
                body = (
                    fake.cert_pem
                    if self.path.endswith(".pem")
                    else b"<ConfirmSubscriptionResponse/>"
                )
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(self.ca_file, key_file)
        self.server.socket = context.wrap_socket(self.server.socket, server_side=True)
        self.host = f"127.0.0.1:{self.server.server_address[1]}"
        self.cert_url = f"https://{self.host}/SimpleNotificationService-test.pem"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def sign(self, message: dict, version: str = "1") -> dict:
        """The SNS message with this server's certificate URL and a valid signature."""
        signed = {**message, "SignatureVersion": version, "SigningCertURL": self.cert_url}
        algorithm = hashes.SHA1() if version == "1" else hashes.SHA256()
        raw = self.signing_key.sign(sns.signed_string(signed), padding.PKCS1v15(), algorithm)
        signed["Signature"] = base64.b64encode(raw).decode()
        return signed


@pytest.fixture(scope="module")
def fake_sns(tmp_path_factory):
    server = FakeSNS(tmp_path_factory.mktemp("sns"))
    yield server
    server.server.shutdown()


@pytest.fixture
def settings(tmp_path, fake_sns):
    return load_settings(
        var_dir=tmp_path / "var",
        secret_key="test-secret",
        sources="hf_daily",
        webhook_generic_secret=GENERIC_SECRET,
        webhook_postmark_user="postmark",
        webhook_postmark_password="pm-password",
        webhook_sendgrid_public_key=SENDGRID_PUBLIC,
        webhook_mailgun_signing_key=MAILGUN_KEY,
        webhook_ses_topics=TOPIC,
        sns_cert_hosts=fake_sns.host,
        sns_ca_file=fake_sns.ca_file,
    )


# --- the database before and after -----------------------------------------------------------


def was_sent(w, email: str) -> int:
    """A subscriber who was sent a digest an hour ago (so a report may name their address)."""
    subscriber_id = w.add(email)
    now = storage.utcnow()
    with w.db.session() as session:
        session.add(
            Delivery(
                subscriber_id=subscriber_id,
                edition=now.date(),
                state=SENT,
                items=[],
                created_at=now - timedelta(hours=1),
                sent_at=now - timedelta(hours=1),
            )
        )
    return subscriber_id


def snapshot(w) -> tuple:
    """Every subscriber's state and the number of stored events: what a forgery must not move."""
    with w.db.session() as session:
        states = tuple(session.execute(select(Subscriber.id, Subscriber.state)))
        events = session.scalar(select(func.count()).select_from(BounceEvent))
    return states, events


def suppressed(w, email: str) -> bool:
    with w.db.session() as session:
        return is_suppressed(session, w.settings, email)


def post_json(w, path: str, payload, **headers):
    body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    return w.client.post(
        path, content=body, headers={"content-type": "application/json", **headers}
    )


# --- SES through SNS ---------------------------------------------------------------------------


def ses_notification(fake_sns, inner: dict, version: str = "1") -> dict:
    message = fixture("sns_notification.json")
    message["Message"] = json.dumps(inner)
    message.pop("Subject")  # SES notifications carry none
    return fake_sns.sign(message, version)


@pytest.mark.parametrize("version", ["1", "2"])
def test_an_ses_hard_bounce_signed_by_sns_suppresses_the_subscriber(w, fake_sns, version):
    jane = was_sent(w, "jane@example.com")
    other = was_sent(w, "mary@example.com")
    response = post_json(
        w, "/webhooks/ses", ses_notification(fake_sns, fixture("ses_bounce.json"), version)
    )
    assert response.status_code == 200, response.text
    assert response.json()["outcomes"] == ["suppressed"]
    assert w.get(jane).state == BOUNCING and suppressed(w, "jane@example.com")
    assert w.get(other).state == ACTIVE
    with w.db.session() as session:
        [event] = storage.bounce_events_for(session, jane)
        assert "550 5.1.1" in event.reason and event.source == "ses"


def test_an_ses_complaint_unsubscribes_at_once(w, fake_sns):
    richard = was_sent(w, "richard@example.com")
    response = post_json(
        w, "/webhooks/ses", ses_notification(fake_sns, fixture("ses_complaint.json"))
    )
    assert response.status_code == 200, response.text
    assert w.get(richard).state == UNSUBSCRIBED and suppressed(w, "richard@example.com")
    with w.db.session() as session:  # counted: the complaint rate reads these events
        [event] = storage.bounce_events_for(session, richard)
        assert event.kind == "complaint" and event.outcome == "unsubscribed"


def test_the_same_sns_notification_twice_counts_once(w, fake_sns):
    jane = was_sent(w, "jane@example.com")
    message = ses_notification(fake_sns, fixture("ses_bounce.json"))
    assert post_json(w, "/webhooks/ses", message).json()["outcomes"] == ["suppressed"]
    assert post_json(w, "/webhooks/ses", message).json()["outcomes"] == ["duplicate"]
    with w.db.session() as session:
        assert len(storage.bounce_events_for(session, jane)) == 1


def forgeries(fake_sns):
    good = ses_notification(fake_sns, fixture("ses_bounce.json"))
    tampered = {**good, "Message": good["Message"].replace("Permanent", "Permanent ")}
    other_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    wrong_key = dict(good)
    wrong_key["Signature"] = base64.b64encode(
        other_key.sign(sns.signed_string(good), padding.PKCS1v15(), hashes.SHA1())
    ).decode()
    return {
        "tampered message": tampered,
        "signed by another key": wrong_key,
        "certificate from another host": {
            **good,
            "SigningCertURL": "https://sns.us-west-2.amazonaws.com.evil.example/x.pem",
        },
        "certificate over http": {
            **good,
            "SigningCertURL": good["SigningCertURL"].replace("https", "http"),
        },
        "another topic": {**good, "TopicArn": "arn:aws:sns:us-west-2:123456789012:Other"},
        "unknown signature version": {**good, "SignatureVersion": "3"},
        "no signature": {k: v for k, v in good.items() if k != "Signature"},
    }


@pytest.mark.parametrize(
    "case",
    [
        "tampered message",
        "signed by another key",
        "certificate from another host",
        "certificate over http",
        "another topic",
        "unknown signature version",
        "no signature",
    ],
)
def test_a_forged_sns_message_changes_nothing(w, fake_sns, case):
    jane = was_sent(w, "jane@example.com")
    before = snapshot(w)
    response = post_json(w, "/webhooks/ses", forgeries(fake_sns)[case])
    assert response.status_code == 403, response.text
    assert snapshot(w) == before and w.get(jane).state == ACTIVE
    assert not suppressed(w, "jane@example.com")


def test_a_subscription_confirmation_gets_its_subscribe_url(w, fake_sns):
    message = fixture("sns_subscription_confirmation.json")
    message["SubscribeURL"] = f"https://{fake_sns.host}/?Action=ConfirmSubscription&Token=abc"
    fake_sns.hits.clear()
    response = post_json(w, "/webhooks/ses", fake_sns.sign(message, "2"))
    assert response.status_code == 200, response.text
    assert "/?Action=ConfirmSubscription&Token=abc" in fake_sns.hits


def test_a_confirmation_naming_a_foreign_subscribe_url_is_not_followed(w, fake_sns):
    message = fixture("sns_subscription_confirmation.json")  # documented URL: a real SNS host
    message["SubscribeURL"] = "https://attacker.example/?Action=ConfirmSubscription"
    fake_sns.hits.clear()
    response = post_json(w, "/webhooks/ses", fake_sns.sign(message))
    assert response.status_code == 403
    assert not any("ConfirmSubscription" in hit for hit in fake_sns.hits)


def test_the_product_default_allows_only_the_real_sns_hosts():
    plain = load_settings(secret_key="x" * 20)
    assert sns.allowed_url(plain, fixture("sns_notification.json")["SigningCertURL"], pem=True)
    assert sns.allowed_url(plain, "https://sns.cn-north-1.amazonaws.com.cn/a.pem", pem=True)
    for url in (
        "https://127.0.0.1:8443/a.pem",
        "http://sns.us-west-2.amazonaws.com/a.pem",
        "https://sns.us-west-2.amazonaws.com.evil.example/a.pem",
        "https://evil.example/sns.us-west-2.amazonaws.com/a.pem",
        "https://user@sns.us-west-2.amazonaws.com/a.pem",
        "https://sns.us-west-2.amazonaws.com:8443/a.pem",
        "https://sns.us-west-2.amazonaws.com/a.pem?x=1",
        "https://sns.us-west-2.amazonaws.com/a.txt",
        "https://s3.us-west-2.amazonaws.com/a.pem",
    ):
        assert not sns.allowed_url(plain, url, pem=True), url


def test_the_certificate_is_fetched_once(w, fake_sns):
    was_sent(w, "jane@example.com")
    fake_sns.hits.clear()
    for _ in range(3):
        post_json(w, "/webhooks/ses", ses_notification(fake_sns, fixture("ses_bounce.json")))
    assert sum(hit.endswith(".pem") for hit in fake_sns.hits) <= 1


# --- Postmark ----------------------------------------------------------------------------------


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


@pytest.mark.parametrize(
    ("name", "state"),
    [("postmark_bounce.json", BOUNCING), ("postmark_spam_complaint.json", UNSUBSCRIBED)],
)
def test_a_postmark_webhook_with_its_basic_auth_changes_the_subscriber(w, name, state):
    john = was_sent(w, "john@example.com")
    response = post_json(
        w, "/webhooks/postmark", fixture(name), authorization=basic("postmark", "pm-password")
    )
    assert response.status_code == 200, response.text
    assert w.get(john).state == state


@pytest.mark.parametrize(
    "authorization",
    [
        None,
        basic("postmark", "wrong"),
        basic("other", "pm-password"),
        "Bearer pm-password",
        "Basic !!",
    ],
)
def test_a_postmark_webhook_without_the_right_auth_changes_nothing(w, authorization):
    john = was_sent(w, "john@example.com")
    before = snapshot(w)
    headers = {"authorization": authorization} if authorization else {}
    response = post_json(w, "/webhooks/postmark", fixture("postmark_bounce.json"), **headers)
    assert response.status_code == 403
    assert snapshot(w) == before and w.get(john).state == ACTIVE


# --- SendGrid ----------------------------------------------------------------------------------


def sendgrid_headers(body: bytes, timestamp: int | None = None, key=SENDGRID_KEY) -> dict:
    stamp = str(int(time.time()) if timestamp is None else timestamp)
    signature = key.sign(stamp.encode() + body, ec.ECDSA(hashes.SHA256()))
    return {
        "x-twilio-email-event-webhook-signature": base64.b64encode(signature).decode(),
        "x-twilio-email-event-webhook-timestamp": stamp,
    }


def test_a_signed_sendgrid_batch_applies_its_bounce_and_complaint(w):
    subscriber = was_sent(w, "example@test.com")
    body = json.dumps(fixture("sendgrid_events.json")).encode()
    response = post_json(w, "/webhooks/sendgrid", body, **sendgrid_headers(body))
    assert response.status_code == 200, response.text
    # processed is ignored; the bounce suppresses, the complaint then unsubscribes.
    assert response.json()["outcomes"] == ["suppressed", "unsubscribed"]
    assert w.get(subscriber).state == UNSUBSCRIBED and suppressed(w, "example@test.com")


def test_a_forged_stale_or_altered_sendgrid_batch_changes_nothing(w):
    subscriber = was_sent(w, "example@test.com")
    body = json.dumps(fixture("sendgrid_events.json")).encode()
    before = snapshot(w)
    cases = [
        {},
        sendgrid_headers(body, key=ec.generate_private_key(ec.SECP256R1())),
        sendgrid_headers(body, timestamp=int(time.time()) - 3600),
        {**sendgrid_headers(body), "x-twilio-email-event-webhook-signature": "bm90IGEgc2ln"},
    ]
    for headers in cases:
        assert post_json(w, "/webhooks/sendgrid", body, **headers).status_code == 403
    altered = body.replace(b"example@test.com", b"other@test.com")
    assert post_json(w, "/webhooks/sendgrid", altered, **sendgrid_headers(body)).status_code == 403
    assert snapshot(w) == before and w.get(subscriber).state == ACTIVE


# --- Mailgun -----------------------------------------------------------------------------------


def mailgun_signed(name: str, key: str = MAILGUN_KEY, timestamp: int | None = None) -> dict:
    payload = fixture(name)
    stamp = str(int(time.time()) if timestamp is None else timestamp)
    token = secrets.token_hex(25)
    digest = hmac.new(key.encode(), (stamp + token).encode(), hashlib.sha256).hexdigest()
    payload["signature"] = {"timestamp": stamp, "token": token, "signature": digest}
    return payload


@pytest.mark.parametrize(
    ("name", "state"),
    [("mailgun_failed_permanent.json", BOUNCING), ("mailgun_complained.json", UNSUBSCRIBED)],
)
def test_a_signed_mailgun_webhook_changes_the_subscriber(w, name, state):
    alice = was_sent(w, "alice@example.com")
    response = post_json(w, "/webhooks/mailgun", mailgun_signed(name))
    assert response.status_code == 200, response.text
    assert w.get(alice).state == state


def test_a_forged_stale_or_replayed_mailgun_webhook_changes_nothing(w):
    alice = was_sent(w, "alice@example.com")
    before = snapshot(w)
    documented = fixture("mailgun_failed_permanent.json")  # signed with the docs' key, in 2018
    for payload in (
        documented,
        mailgun_signed("mailgun_failed_permanent.json", key="key-wrong"),
        mailgun_signed("mailgun_failed_permanent.json", timestamp=int(time.time()) - 3600),
        {k: v for k, v in documented.items() if k != "signature"},
    ):
        assert post_json(w, "/webhooks/mailgun", payload).status_code == 403
    assert snapshot(w) == before
    # A captured signature carrying another event: the token was used, so it is refused.
    first = mailgun_signed("mailgun_complained.json")
    first["event-data"]["recipient"] = "nobody@example.com"
    assert post_json(w, "/webhooks/mailgun", first).status_code == 422
    replay = fixture("mailgun_failed_permanent.json")
    replay["signature"] = first["signature"]
    assert post_json(w, "/webhooks/mailgun", replay).status_code == 403
    assert w.get(alice).state == ACTIVE and not suppressed(w, "alice@example.com")


# --- generic -----------------------------------------------------------------------------------


def bearer(secret: str = GENERIC_SECRET) -> dict:
    return {"authorization": f"Bearer {secret}"}


def test_generic_events_by_email_and_by_delivery_id(w):
    ada = was_sent(w, "ada@example.org")
    bob = was_sent(w, "bob@example.org")
    with w.db.session() as session:
        bob_delivery = session.scalar(select(Delivery.id).where(Delivery.subscriber_id == bob))
    hard = {"email": "ada@example.org", "kind": "hard", "reason": "550 5.1.1 no such user"}
    assert post_json(w, "/webhooks/generic", hard, **bearer()).status_code == 200
    assert w.get(ada).state == BOUNCING
    complaint = {"delivery_id": bob_delivery, "kind": "complaint", "reason": "abuse"}
    assert post_json(w, "/webhooks/generic", complaint, **bearer()).status_code == 200
    assert w.get(bob).state == UNSUBSCRIBED


def test_generic_soft_bounces_suppress_at_the_threshold(w):
    ada = was_sent(w, "ada@example.org")
    outcomes = []
    for number in range(w.settings.soft_bounce_threshold):
        soft = {
            "email": "ada@example.org",
            "kind": "soft",
            "reason": "452 full",
            "id": f"s{number}",
        }
        outcomes += post_json(w, "/webhooks/generic", soft, **bearer()).json()["outcomes"]
    assert outcomes == ["counted"] * (w.settings.soft_bounce_threshold - 1) + ["suppressed"]
    assert w.get(ada).state == BOUNCING


def test_generic_refuses_a_wrong_secret_bad_body_or_unknown_recipient(w):
    ada = was_sent(w, "ada@example.org")
    before = snapshot(w)
    hard = {"email": "ada@example.org", "kind": "hard"}
    assert post_json(w, "/webhooks/generic", hard).status_code == 403
    assert post_json(w, "/webhooks/generic", hard, **bearer("wrong")).status_code == 403
    for bad in (b"not json", {"email": "ada@example.org", "kind": "bounced"}, {"kind": "hard"}, []):
        assert post_json(w, "/webhooks/generic", bad, **bearer()).status_code == 400
    assert snapshot(w) == before
    unknown = {"email": "nobody@example.org", "kind": "hard"}
    response = post_json(w, "/webhooks/generic", unknown, **bearer())
    assert response.status_code == 422 and response.json()["outcomes"] == ["unknown"]
    assert snapshot(w)[0] == before[0] and w.get(ada).state == ACTIVE  # kept, changes no one


def test_an_oversized_body_is_refused(w):
    was_sent(w, "ada@example.org")
    huge = {"email": "ada@example.org", "kind": "hard", "reason": "x" * 100_000}
    assert post_json(w, "/webhooks/generic", huge, **bearer()).status_code == 413
    assert w.by_email("ada@example.org").state == ACTIVE


def test_an_endpoint_without_its_secret_answers_404(tmp_path):
    from fastapi.testclient import TestClient

    from newsletter.db import Database
    from newsletter.web.app import create_app

    plain = load_settings(var_dir=tmp_path / "var", secret_key="test-secret", sources="hf_daily")
    database = Database(plain)
    database.upgrade()
    try:
        with TestClient(create_app(plain, database)) as client:
            for provider in ("ses", "postmark", "sendgrid", "mailgun", "generic"):
                assert client.post(f"/webhooks/{provider}", json={}).status_code == 404
    finally:
        database.dispose()


def test_a_bad_sendgrid_key_is_refused_naming_the_variable(tmp_path):
    from newsletter.config import ConfigError

    with pytest.raises(ConfigError, match="NEWSLETTER_WEBHOOK_SENDGRID_PUBLIC_KEY"):
        load_settings(
            var_dir=tmp_path, secret_key="test-secret", webhook_sendgrid_public_key="nope"
        )


def test_fixtures_are_the_documented_bodies():
    """The recorded bodies keep their documented shape (the tests above rely on it)."""
    assert fixture("postmark_bounce.json")["Type"] == "HardBounce"
    assert {e["event"] for e in fixture("sendgrid_events.json")} == {
        "processed",
        "bounce",
        "spamreport",
    }
    assert copy.deepcopy(fixture("ses_bounce.json"))["bounce"]["bounceType"] == "Permanent"


def test_a_mailgun_token_replayed_to_another_web_process_is_refused(w):
    """The tokens seen are in the database, shared by every web process."""
    from fastapi.testclient import TestClient

    from newsletter.web.app import create_app

    alice = was_sent(w, "alice@example.com")
    first = mailgun_signed("mailgun_complained.json")
    first["event-data"]["recipient"] = "nobody@example.com"
    assert post_json(w, "/webhooks/mailgun", first).status_code == 422
    with w.db.session() as session:  # not in this process's memory: in the shared database
        token = f"mailgun:{first['signature']['token']}"
        assert session.get(WebhookToken, token) is not None
    replay = fixture("mailgun_failed_permanent.json")
    replay["signature"] = first["signature"]
    with TestClient(create_app(w.settings, w.db)) as other:
        assert other.post("/webhooks/mailgun", json=replay).status_code == 403
    assert w.get(alice).state == ACTIVE


def test_a_mailgun_token_is_not_spent_when_recording_fails(w, monkeypatch):
    """A database error while recording rolls the token back: the provider's retry works."""
    from newsletter.web import webhooks

    alice = was_sent(w, "alice@example.com")
    payload = mailgun_signed("mailgun_failed_permanent.json")

    def broken(*args, **kwargs):
        raise RuntimeError("the database went away")

    monkeypatch.setattr(webhooks, "record", broken)
    with pytest.raises(RuntimeError):
        post_json(w, "/webhooks/mailgun", payload)
    monkeypatch.undo()
    assert post_json(w, "/webhooks/mailgun", payload).status_code == 200
    assert w.get(alice).state == BOUNCING


def test_a_full_sendgrid_batch_is_taken_and_a_larger_one_refused(w):
    """SendGrid batches up to 768 KB: more than the site's 64 KiB, less than its own 1 MiB."""
    subscriber = was_sent(w, "example@test.com")
    events = fixture("sendgrid_events.json")
    filler = [{**events[0], "sg_event_id": f"p{n}", "category": "c" * 200} for n in range(1700)]
    body = json.dumps([*filler, events[1]]).encode()
    assert 700_000 < len(body) < 1024 * 1024
    response = post_json(w, "/webhooks/sendgrid", body, **sendgrid_headers(body))
    assert response.status_code == 200, response.text[:200]
    assert w.get(subscriber).state == BOUNCING
    huge = json.dumps(filler * 2).encode()
    assert post_json(w, "/webhooks/sendgrid", huge, **sendgrid_headers(huge)).status_code == 413
