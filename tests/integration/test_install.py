"""The wheel, installed into a fresh venv, runs `demo`, `web` and `run` from an empty directory."""

from __future__ import annotations

import email
import email.policy
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

ROOT = Path(__file__).resolve().parents[2]
# Building and installing the wheel takes a minute or two (dependencies from pip's cache).
pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def clean_env(**extra: str) -> dict[str, str]:
    # Nothing may lead the installed command back to the checkout.
    drop = ("NEWSLETTER_", "PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")
    env = {k: v for k, v in os.environ.items() if not k.startswith(drop)}
    return env | extra


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """The bin/ of a fresh venv holding only the built wheel and its dependencies."""
    work = tmp_path_factory.mktemp("wheel")
    source = work / "source"
    # Built from a copy, so no build/ or .egg-info is left in the checkout.
    shutil.copytree(
        ROOT,
        source,
        ignore=shutil.ignore_patterns(".venv", "var", ".git", "build", "*.egg-info", "__pycache__"),
    )
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(work / "dist"), "."],
        cwd=source,
        check=True,
        env=clean_env(),
        timeout=300,
    )
    [wheel] = (work / "dist").glob("paper_newsletter-*.whl")
    venv = work / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    subprocess.run(
        [str(venv / "bin" / "pip"), "install", "-q", str(wheel)],
        check=True,
        env=clean_env(),
        timeout=600,
    )
    return venv / "bin"


def test_the_installed_package_is_the_wheel_not_the_checkout(installed, tmp_path):
    where = subprocess.run(
        [str(installed / "python"), "-c", "import newsletter; print(newsletter.__file__)"],
        cwd=tmp_path,
        env=clean_env(),
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert where.startswith(str(installed.parent)), where


def test_demo_from_an_empty_directory_writes_the_digest(installed, tmp_path):
    result = subprocess.run(
        [str(installed / "newsletter"), "demo"],
        cwd=tmp_path,
        env=clean_env(COLUMNS="300"),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    [path] = (tmp_path / "var" / "outbox").glob("*.eml")
    assert str(path.name) in result.stdout
    message = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
    assert message["To"] == "demo@example.org"
    assert message.get_body(("html",)) is not None


def _serve(installed: Path, cwd: Path, *argv: str) -> None:
    port = free_port()
    log = cwd / "serve.log"
    env = clean_env(
        # No internet in a test: the sources refuse at once.
        NEWSLETTER_HF_BASE_URL="http://127.0.0.1:9",
        NEWSLETTER_ARXIV_RSS_URL="http://127.0.0.1:9/rss",
        NEWSLETTER_ARXIV_API_URL="http://127.0.0.1:9/api/query",
        NEWSLETTER_HTTP_RETRIES="0",
    )
    with log.open("wb") as out:
        process = subprocess.Popen(
            [str(installed / "newsletter"), *argv, "--port", str(port)],
            cwd=cwd,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 60
        while True:
            assert process.poll() is None, log.read_text()
            try:
                page = httpx.get(f"http://127.0.0.1:{port}/", timeout=2)
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline, log.read_text()
                time.sleep(0.3)
        assert page.status_code == 200 and "<form" in page.text, log.read_text()
        script = httpx.get(f"http://127.0.0.1:{port}/static/app.js", timeout=5)
        assert script.status_code == 200 and script.text
    finally:
        process.send_signal(signal.SIGINT)
        code = process.wait(timeout=30)
    assert code == 0, log.read_text()


def test_web_with_a_port_from_an_empty_directory_serves_the_pages(installed, tmp_path):
    _serve(installed, tmp_path, "web")


def test_run_with_a_port_from_an_empty_directory_serves_the_pages(installed, tmp_path):
    _serve(installed, tmp_path, "run")
