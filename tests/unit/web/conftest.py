"""Helpers of the web tests: forms with their CSRF token, subscribers in each state, links."""

from __future__ import annotations

import re
import time
from datetime import datetime, timedelta
from urllib.parse import urlsplit

import pytest
from itsdangerous import TimestampSigner, URLSafeTimedSerializer

from newsletter import storage, subscriptions, tokens
from newsletter.models import ACTIVE, Subscriber

CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')
CONFIRM_LINK = re.compile(r"https?://\S+/confirm/[A-Za-z0-9_.\-]+")


class WebHelper:
    """Drives the app like a browser would, and reads the database behind it."""

    def __init__(self, client, settings, db, web) -> None:
        self.client = client
        self.settings = settings
        self.db = db
        self.web = web

    def new_client(self, ip: str = "192.0.2.1"):
        """Another browser (no cookies), from another address."""
        return type(self.client)(self.client.app, client=(ip, 50000), follow_redirects=False)

    @staticmethod
    def csrf_token(html: str) -> str:
        found = CSRF.search(html)
        assert found, "the page has no form with a CSRF token"
        return found.group(1)

    @staticmethod
    def confirm_path(message) -> str:
        """The path of the confirmation link in a mail's text part."""
        text = message.get_body(("plain",)).get_content()
        found = CONFIRM_LINK.search(text)
        assert found, text
        return urlsplit(found.group(0)).path

    def old_token(self, purpose: str, subscriber_id: int, *, hours: float) -> str:
        """A token signed as tokens.py signs it, but `hours` ago."""
        signed_at = int(time.time() - hours * 3600)

        class PastSigner(TimestampSigner):
            def get_timestamp(self) -> int:
                return signed_at

        key = self.get(subscriber_id).link_key
        serializer = URLSafeTimedSerializer(
            self.settings.secret_key, salt=f"newsletter.{purpose}", signer=PastSigner
        )
        return str(serializer.dumps([subscriber_id, key]))

    def expired_token(self, subscriber_id: int) -> str:
        """A confirmation token signed `confirm_hours` + 1 hours ago."""
        token = self.old_token("confirm", subscriber_id, hours=self.settings.confirm_hours + 1)
        with pytest.raises(tokens.TokenError) as caught:  # signed exactly as tokens.py does
            tokens.read_token(self.settings, "confirm", token)
        assert caught.value.expired
        return token

    def post_form(self, page: str, action: str | None = None, client=None, **fields):
        """GET `page`, then POST its form to `action` (default: the page) with its token."""
        client = client or self.client
        token = self.csrf_token(client.get(page).text)
        return client.post(action or page, data={"csrf_token": token, **fields})

    def signup(self, email: str = "ada@example.org", client=None, **fields):
        values = {
            "email": email,
            "keywords": 'diffusion models, "label noise", -medical',
            "send_hour": "7",
            "timezone": "Europe/Paris",
            "digest_size": "10",
            **fields,
        }
        page = self.post_form("/", client=client, **values)
        self.settle()
        return page

    def settle(self) -> None:
        """Wait until the background sender has sent what the sign-ups queued and is due."""
        sender = getattr(self.web, "confirmations", None)
        if sender is not None:
            sender.flush()

    def add(self, email: str = "bob@example.org", state: str = ACTIVE, **values) -> int:
        """A subscriber in `state`, added as an operator would; returns the id."""
        with self.db.session() as session:
            subscriber = subscriptions.subscribe(
                session,
                self.settings,
                email=email,
                keywords=values.pop("keywords", "diffusion"),
                now=storage.utcnow(),
                confirmed=state != "pending",
                **values,
            )
            subscriber.state = state
            return subscriber.id

    def get(self, subscriber_id: int) -> Subscriber:
        with self.db.session() as session:
            subscriber = storage.subscriber_by_id(session, subscriber_id)
            assert subscriber is not None
            return subscriber

    def by_email(self, email: str) -> Subscriber | None:
        with self.db.session() as session:
            return storage.subscriber_by_email(session, email)

    def token(self, purpose: str, subscriber_id: int) -> str:
        subscriber = self.get(subscriber_id)
        return tokens.make_token(self.settings, purpose, subscriber_id, subscriber.link_key)

    def path(self, purpose: str, subscriber_id: int) -> str:
        return f"/{purpose}/{self.token(purpose, subscriber_id)}"

    def revoke(self, subscriber_id: int) -> None:
        with self.db.session() as session:
            subscriber = storage.subscriber_by_id(session, subscriber_id)
            assert subscriber is not None
            subscriber.link_key = tokens.new_link_key()

    def travel(self, delta: timedelta) -> datetime:
        """Move the app's clock forward by `delta` from now; returns the new time."""
        moment = storage.utcnow() + delta
        self.web.clock = lambda: moment
        return moment


@pytest.fixture
def w(web_client, settings, db, web) -> WebHelper:
    return WebHelper(web_client, settings, db, web)
