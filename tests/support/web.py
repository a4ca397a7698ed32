"""The web app served for real: uvicorn in a thread, a test client, Debian's headless Chromium."""

from __future__ import annotations

import threading
import time
import warnings
from typing import Any

from .net import free_port

CHROMIUM = "/usr/bin/chromium"
# Without the background-networking flags Chromium keeps dialling Google on a closed network.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def web_test_client_class() -> Any:
    """starlette's TestClient; it warns that plain httpx is deprecated, which is fine here."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from starlette.testclient import TestClient
    return TestClient


class LiveSites:
    """The app under uvicorn (service.web_server), as `newsletter run` serves it, in threads."""

    def __init__(self) -> None:
        self.running: list[tuple[Any, threading.Thread]] = []

    def start(self, settings: Any, db: Any) -> str:
        """Serve the app for `settings` and `db` on a free port; returns the site's base URL."""
        from newsletter.service import web_server
        from newsletter.web.app import create_app

        port = free_port()
        settings = settings.model_copy(
            update={"host": "127.0.0.1", "port": port, "base_url": f"http://127.0.0.1:{port}"}
        )
        server = web_server(settings, create_app(settings, db), log_level="warning")
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        self.running.append((server, thread))
        deadline = time.monotonic() + 20
        while not server.started:
            assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
            time.sleep(0.02)
        return settings.base_url

    def stop(self) -> None:
        """Ask every server started to exit, and wait for its thread."""
        for server, thread in self.running:
            server.should_exit = True
            thread.join(timeout=20)
