"""Shared test fixtures. Each area appends its own section below."""

from __future__ import annotations

import os

import pytest


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory):
    """Tests never see the developer's NEWSLETTER_* variables or .env file."""
    for name in list(os.environ):
        if name.startswith("NEWSLETTER_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path_factory.mktemp("cwd"))


# --- Core: settings and a migrated database --------------------------------------------------


@pytest.fixture
def settings(tmp_path):
    from newsletter.config import load_settings

    return load_settings(var_dir=tmp_path / "var", secret_key="test-secret", sources="hf_daily")


@pytest.fixture
def db(settings):
    from newsletter.db import Database

    database = Database(settings)
    database.upgrade()
    yield database
    database.dispose()


# --- Mail: a real SMTP server (aiosmtpd) on loopback ----------------------------------------


class SMTPSink:
    """An aiosmtpd handler that keeps every message it accepts, parsed."""

    def __init__(self) -> None:
        import threading

        self.messages: list = []
        self.envelopes: list = []
        self.lock = threading.Lock()
        self.reply_for: dict[str, str] = {}  # recipient -> SMTP reply to answer instead

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):  # noqa: N802
        reply = self.reply_for.get(address)
        if reply:
            return reply
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):  # noqa: N802
        import email
        import email.policy

        message = email.message_from_bytes(envelope.content, policy=email.policy.default)
        with self.lock:
            self.envelopes.append(envelope)
            self.messages.append(message)
        return "250 Message accepted for delivery"

    def to(self, address: str) -> list:
        with self.lock:
            return [m for m, e in zip(self.messages, self.envelopes) if address in e.rcpt_tos]


@pytest.fixture
def smtp_server():
    """A running aiosmtpd server; `.url` is ready for NEWSLETTER_SMTP_URL."""
    import socket

    from aiosmtpd.controller import Controller

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    sink = SMTPSink()
    controller = Controller(sink, hostname="127.0.0.1", port=port)
    controller.start()
    sink.port = port  # type: ignore[attr-defined]
    sink.url = f"smtp://127.0.0.1:{port}"  # type: ignore[attr-defined]
    yield sink
    controller.stop()
