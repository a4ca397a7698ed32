"""`newsletter db upgrade --wait`: each failed attempt says why; it gives up when told to."""

from __future__ import annotations

import socket
import time

from typer.testing import CliRunner

from newsletter.cli import app

runner = CliRunner()


def test_a_database_that_never_answers_fails_after_the_wait_with_every_attempt_said(
    tmp_path, monkeypatch
):
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    monkeypatch.setenv("NEWSLETTER_VAR_DIR", str(tmp_path / "var"))
    monkeypatch.setenv("NEWSLETTER_SECRET_KEY", "test-secret")
    monkeypatch.setenv(
        "NEWSLETTER_DATABASE_URL", f"postgresql+psycopg://app:pw-hidden@127.0.0.1:{port}/news"
    )
    started = time.monotonic()
    result = runner.invoke(app, ["db", "upgrade", "--wait", "2.5"])
    took = time.monotonic() - started
    assert result.exit_code == 1, result.output
    attempts = [line for line in result.stderr.splitlines() if "not answering yet" in line]
    assert len(attempts) >= 2 and "(attempt 1: " in attempts[0]
    assert "Connection refused" in attempts[0] and "s left" in attempts[0]
    assert "did not answer within 2.5 s" in " ".join(result.stderr.split())
    assert "pw-hidden" not in result.output
    assert 2.5 <= took < 10


def test_without_wait_a_missing_database_fails_at_once(tmp_path, monkeypatch):
    monkeypatch.setenv("NEWSLETTER_VAR_DIR", str(tmp_path / "var"))
    monkeypatch.setenv("NEWSLETTER_SECRET_KEY", "test-secret")
    monkeypatch.setenv("NEWSLETTER_DATABASE_URL", "postgresql+psycopg://app@127.0.0.1:1/news")
    result = runner.invoke(app, ["db", "upgrade"])
    assert result.exit_code == 2 and "cannot open the database" in result.stderr
    assert "not answering yet" not in result.stderr
