"""Sign-up and confirmation mail for an internationalized address, over real SMTP (aiosmtpd)."""

from __future__ import annotations

import email
import email.policy
import re
import socket
import threading

import pytest

from newsletter import storage, subscriptions
from newsletter.config import load_settings
from newsletter.db import Database
from newsletter.mail import PermanentSendError
from newsletter.web.mail import send_confirmation

pytestmark = pytest.mark.integration

ZOE = "zoë@example.org"
CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


class Sink:
    """Keeps each accepted envelope."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.envelopes: list = []

    async def handle_DATA(self, server, session, envelope):  # noqa: N802
        with self.lock:
            self.envelopes.append(envelope)
        return "250 Message accepted for delivery"


@pytest.fixture(params=[True, False], ids=["smtputf8", "no-smtputf8"])
def relay(request):
    """An aiosmtpd server offering SMTPUTF8 or not; `.smtputf8` says which."""
    from aiosmtpd.controller import Controller

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    sink = Sink()
    controller = Controller(sink, hostname="127.0.0.1", port=port, enable_SMTPUTF8=request.param)
    controller.start()
    sink.url = f"smtp://127.0.0.1:{port}"  # type: ignore[attr-defined]
    sink.smtputf8 = request.param  # type: ignore[attr-defined]
    yield sink
    controller.stop()


@pytest.fixture
def service(tmp_path, relay):
    settings = load_settings(
        var_dir=tmp_path / "var", secret_key="test-secret", sources="hf_daily", smtp_url=relay.url
    )
    db = Database(settings)
    db.upgrade()
    yield settings, db
    db.dispose()


def confirmations(relay) -> list:
    with relay.lock:
        return [
            email.message_from_string(e.content.decode("utf-8"), policy=email.policy.default)
            for e in relay.envelopes
        ]


def test_the_sign_up_of_a_non_ascii_address_never_answers_500(service, relay):
    import warnings

    from newsletter.web.app import create_app

    with warnings.catch_warnings():  # starlette warns that plain httpx is deprecated
        warnings.simplefilter("ignore")
        from starlette.testclient import TestClient

    settings, db = service
    with TestClient(create_app(settings, db), follow_redirects=False) as client:
        token = CSRF.search(client.get("/").text).group(1)
        fields = {"email": ZOE, "keywords": "diffusion", "send_hour": "7", "timezone": "UTC"}
        answer = client.post("/", data={"csrf_token": token, "digest_size": "10", **fields})
    assert answer.status_code != 500, answer.text
    if relay.smtputf8:
        assert answer.status_code == 200 and "Check your inbox" in answer.text
        [message] = confirmations(relay)
        assert message["To"].addresses[0].addr_spec == ZOE
    else:
        assert relay.envelopes == []  # the relay cannot carry it: a clean refusal, no mail


def test_a_confirmation_to_a_non_ascii_address_arrives_or_fails_cleanly(service, relay):
    settings, db = service
    with db.session() as session:
        subscriber = subscriptions.subscribe(
            session, settings, email=ZOE, keywords="diffusion", now=storage.utcnow()
        )
        if relay.smtputf8:
            send_confirmation(settings, subscriber)
            assert subscriber.confirm_sent_at is not None
        else:
            with pytest.raises(PermanentSendError, match=r"no SMTPUTF8") as refused:
                send_confirmation(settings, subscriber)
            assert refused.value.stage == "address"
            assert subscriber.confirm_sent_at is None
    if relay.smtputf8:
        [message] = confirmations(relay)
        assert message["To"].addresses[0].addr_spec == ZOE
        assert "/confirm/" in message.get_body(("plain",)).get_content()
        assert relay.envelopes[0].rcpt_tos == [ZOE]
    else:
        assert relay.envelopes == []
