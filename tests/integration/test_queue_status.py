"""`newsletter status` in the distributed mode: queues and workers, read by the core alone."""

from __future__ import annotations

import socket

import pytest
import redis
from typer.testing import CliRunner

from newsletter.cli import app
from newsletter.config import load_settings
from newsletter.queues import queue_lengths, workers_seen

pytestmark = [pytest.mark.integration, pytest.mark.redis]


@pytest.fixture
def values(tmp_path, redis_url) -> dict[str, str]:
    return {"var_dir": str(tmp_path / "var"), "secret_key": "test-secret", "redis_url": redis_url}


@pytest.fixture
def env(values, monkeypatch) -> None:
    for name, value in values.items():
        monkeypatch.setenv(f"NEWSLETTER_{name.upper()}", value)


def status() -> str:
    result = CliRunner().invoke(app, ["status"])
    assert result.exit_code == 0, result.output
    return " ".join(result.output.split())


def test_waiting_messages_are_counted_in_every_priority(values, env, redis_url):
    client = redis.Redis.from_url(redis_url)
    client.lpush("mail", "a", "b")
    client.lpush("mail\x06\x163", "c")  # kombu's list for priority 3
    client.lpush("plan", "d")
    client.close()
    assert queue_lengths(load_settings()) == {"collect": 0, "plan": 1, "mail": 3}
    output = status()
    assert "distributed mode" in output
    assert "Queues" in output and "mail │ 3" in output and "plan │ 1" in output
    assert "Workers seen: none" in output


def test_a_running_worker_answers(values, env, celery_processes):
    worker = celery_processes("worker", "status1", values)
    worker.wait_for(" ready.", timeout=60)
    name = f"status1@{socket.gethostname()}"
    assert workers_seen(load_settings(), timeout=2.0) == [name]
    assert f"Workers seen: {name}" in status()


def test_an_unreachable_broker_is_said_and_the_rest_still_shown(tmp_path, monkeypatch):
    monkeypatch.setenv("NEWSLETTER_VAR_DIR", str(tmp_path / "var"))
    monkeypatch.setenv("NEWSLETTER_SECRET_KEY", "test-secret")
    monkeypatch.setenv("NEWSLETTER_REDIS_URL", "redis://127.0.0.1:9/0")
    result = CliRunner().invoke(app, ["status"])
    assert result.exit_code == 0, result.output
    assert "Subscribers" in result.output and "broker unreachable" in result.output
