"""What a running service leaves behind: private files, logs without working links or passwords.

Every test runs the real `newsletter` command in a subprocess, as an operator would.
"""

from __future__ import annotations

import os
import signal
import socket
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from newsletter import storage, tokens
from newsletter.config import load_settings
from newsletter.db import Database
from tests.support.net import free_port

NEWSLETTER = [sys.executable, "-m", "newsletter"]
SECRET = "at-rest-secret"


def environment(tmp_path: Path, **values: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("NEWSLETTER_")}
    env |= {
        "NEWSLETTER_VAR_DIR": str(tmp_path / "var"),
        "NEWSLETTER_SECRET_KEY": SECRET,
        "NEWSLETTER_SOURCES": "hf_daily",
        "NEWSLETTER_HF_BASE_URL": "http://127.0.0.1:9",  # offline
        "NEWSLETTER_HTTP_RETRIES": "0",
    }
    env |= {f"NEWSLETTER_{k.upper()}": v for k, v in values.items()}
    return env


def newsletter(tmp_path: Path, *args: str, **values: str) -> subprocess.CompletedProcess[str]:
    """Run one `newsletter` command under the usual umask (022), as a login shell has it."""
    return subprocess.run(
        [*NEWSLETTER, *args],
        cwd=tmp_path,
        env=environment(tmp_path, **values),
        capture_output=True,
        text=True,
        timeout=120,
        preexec_fn=lambda: os.umask(0o022),
    )


class Server:
    """`newsletter web` (or `run`) in a subprocess, its output in a log file."""

    def __init__(self, tmp_path: Path, command: str = "web") -> None:
        self.port = free_port()
        self.log = tmp_path / f"{command}.log"
        self.url = f"http://127.0.0.1:{self.port}"
        self.tmp_path = tmp_path
        self.command = command

    @contextmanager
    def running(self) -> Iterator[Server]:
        env = environment(self.tmp_path, port=str(self.port), base_url=self.url)
        with self.log.open("wb") as out:
            process = subprocess.Popen(
                [*NEWSLETTER, self.command],
                cwd=self.tmp_path,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                preexec_fn=lambda: os.umask(0o022),
            )
            try:
                self._wait(process)
                yield self
            finally:
                process.send_signal(signal.SIGTERM)
                process.wait(timeout=30)

    def _wait(self, process: subprocess.Popen[bytes]) -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            assert process.poll() is None, self.text()
            try:
                httpx.get(f"{self.url}/healthz", timeout=2)
                return
            except httpx.TransportError:
                time.sleep(0.1)
        raise TimeoutError(self.text())

    def text(self) -> str:
        return self.log.read_text(errors="replace")


def modes(var: Path) -> dict[str, str]:
    """Every path under var/ (var/ included) and its permission bits, octal."""
    found = {".": oct(stat.S_IMODE(var.stat().st_mode))}
    for path in var.rglob("*"):
        found[str(path.relative_to(var))] = oct(stat.S_IMODE(path.lstat().st_mode))
    return found


def loose(found: dict[str, str]) -> dict[str, str]:
    """The paths whose mode is not private (0700 for directories, 0600 for files)."""
    return {name: mode for name, mode in found.items() if mode not in ("0o700", "0o600")}


# var/: private from the first run, and tightened when it was not ------------------------------


def test_every_file_in_var_is_private_to_the_service_user(tmp_path):
    demo = newsletter(tmp_path, "demo")
    assert demo.returncode == 0, demo.stderr
    preview = newsletter(tmp_path, "preview", "demo@example.org")
    assert preview.returncode == 0, preview.stderr
    var = tmp_path / "var"
    with Server(tmp_path).running() as server:
        assert httpx.get(f"{server.url}/preview?keywords=agents").status_code == 200
        found = modes(var)  # while the database is open: -wal and -shm exist
    names = set(found)
    assert {"newsletter.db", "newsletter.db-wal", "newsletter.db-shm", "outbox"} <= names
    assert any(n.startswith("outbox/") and n.endswith(".eml") for n in names)
    assert any(n.startswith("previews/") and n.endswith(".html") for n in names)
    assert found["."] == "0o700"
    assert loose(found) == {}


def test_a_loose_var_left_by_an_older_version_is_tightened_at_start(tmp_path):
    assert newsletter(tmp_path, "demo").returncode == 0
    var = tmp_path / "var"
    for path in [var, *var.rglob("*")]:
        path.chmod(0o755 if path.is_dir() else 0o644)
    (var / "newsletter.log").write_text("an operator's own log\n")
    assert loose(modes(var))
    status = newsletter(tmp_path, "status")
    assert status.returncode == 0, status.stderr
    assert loose(modes(var)) == {}


# Logs: no working link in any line -----------------------------------------------------------


def test_the_access_log_never_records_a_working_link(tmp_path):
    added = newsletter(tmp_path, "subscribe", "ada@example.org", "--keywords", "diffusion")
    assert added.returncode == 0, added.stderr
    settings = load_settings(var_dir=tmp_path / "var", secret_key=SECRET)
    database = Database(settings)
    with database.session() as session:
        ada = storage.subscriber_by_email(session, "ada@example.org")
        assert ada is not None
        ada_id, key = ada.id, ada.link_key
    database.dispose()
    links = {p: tokens.make_token(settings, p, ada_id, key) for p in tokens_used()}
    with Server(tmp_path).running() as server:
        for purpose, token in links.items():
            response = httpx.get(f"{server.url}/{purpose}/{token}?from=mail")
            assert response.status_code == 200, (purpose, response.text[:200])
        one_click = httpx.post(
            f"{server.url}/unsubscribe/{links['unsubscribe']}",
            content=b"List-Unsubscribe=One-Click",
            headers={"content-type": "application/x-www-form-urlencoded"},
        )
        assert one_click.status_code == 200
        httpx.get(f"{server.url}/manage/{links['manage']}/no-such-page")
        time.sleep(0.5)  # the access log is written after the response
        log = server.text()
    for token in links.values():
        assert token not in log
        assert token.split(".")[0] not in log  # not even the payload part
    for purpose in links:
        assert f'"GET /{purpose}/…?from=mail HTTP/1.1" 200' in log, log
    assert '"POST /unsubscribe/… HTTP/1.1" 200' in log


def tokens_used() -> tuple[str, ...]:
    return ("confirm", "manage", "unsubscribe")


# Malformed requests: one line each, not a traceback ------------------------------------------


def raw_request(port: int, data: bytes, *, wait_reply: bool) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as conn:
        conn.sendall(data)
        if not wait_reply:
            return b""
        reply = b""
        try:
            while chunk := conn.recv(65536):
                reply += chunk
        except TimeoutError:
            pass
        return reply


def new_lines(server: Server, before: str) -> list[str]:
    time.sleep(0.5)
    return [line for line in server.text()[len(before) :].splitlines() if line.strip()]


def test_a_client_hanging_up_mid_body_logs_one_line(tmp_path):
    with Server(tmp_path).running() as server:
        before = server.text()
        head = (
            b"POST / HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            b"Content-Type: application/x-www-form-urlencoded\r\nContent-Length: 4000\r\n\r\n"
        )
        raw_request(server.port, head + b"email=ada%40example.org&keywo", wait_reply=False)
        lines = new_lines(server, before)
    assert "Traceback" not in "\n".join(lines)
    assert len(lines) == 1, lines
    assert "POST /" in lines[0]


def test_a_bad_chunked_body_logs_one_line(tmp_path):
    with Server(tmp_path).running() as server:
        before = server.text()
        request = (
            b"POST /manage/abc.def HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            b"Content-Type: application/x-www-form-urlencoded\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n"
            b"5\r\nemail\r\nzz-not-a-size\r\n\r\n"
        )
        reply = raw_request(server.port, request, wait_reply=True)
        lines = new_lines(server, before)
    assert reply.startswith(b"HTTP/1.1 400")
    assert "Traceback" not in "\n".join(lines)
    assert len(lines) == 1, lines
    assert "Invalid HTTP request" in lines[0]


# Passwords: a bad URL is named, never printed whole ------------------------------------------

PASSWORD = "hunter2-SECRET"


@pytest.mark.parametrize(
    ("variable", "url"),
    [
        ("smtp_url", f"smtp://mailer:{PASSWORD}@mail.example.org:notaport"),
        ("database_url", f"postgres://app:{PASSWORD}@db.example.org/news"),
        ("redis_url", f"http://:{PASSWORD}@redis.example.org:6379/0"),
    ],
)
def test_a_bad_url_is_named_with_its_password_hidden(tmp_path, variable, url):
    result = newsletter(tmp_path, "status", **{variable: url})
    assert result.returncode == 2
    output = result.stdout + result.stderr
    assert PASSWORD not in output
    assert f"NEWSLETTER_{variable.upper()}" in output and "***" in output


def test_an_unreachable_database_is_one_line_without_its_password(tmp_path):
    url = f"postgresql+psycopg://app:{PASSWORD}@127.0.0.1:{free_port()}/news"
    result = newsletter(tmp_path, "status", database_url=url)
    assert result.returncode == 2
    output = result.stdout + result.stderr
    assert PASSWORD not in output, output[-3000:]
    assert "Traceback" not in output and "app:***@127.0.0.1" in output


def test_an_unreachable_broker_is_reported_without_its_password(tmp_path):
    url = f"redis://:{PASSWORD}@127.0.0.1:{free_port()}/0"
    result = newsletter(tmp_path, "status", redis_url=url)
    output = result.stdout + result.stderr
    assert "broker unreachable" in output
    assert PASSWORD not in output
