"""The web app served for real: uvicorn in a thread, a test client, Debian's headless Chromium."""

from __future__ import annotations

import threading
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
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
        port = free_port()
        settings = settings.model_copy(
            update={"host": "127.0.0.1", "port": port, "base_url": f"http://127.0.0.1:{port}"}
        )
        self.serve(settings, db)
        return settings.base_url

    def serve(self, settings: Any, db: Any) -> None:
        """Serve the app for `settings` and `db` where the settings say; back once it listens."""
        from newsletter.service import web_server
        from newsletter.web.app import create_app

        server = web_server(settings, create_app(settings, db), log_level="warning")
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        self.running.append((server, thread))
        deadline = time.monotonic() + 20
        while not server.started:
            assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
            time.sleep(0.02)

    def stop(self) -> None:
        """Ask every server started to exit, and wait for its thread."""
        for server, thread in self.running:
            server.should_exit = True
            thread.join(timeout=20)


@contextmanager
def demo_site(
    var_dir: Path,
    smtp_url: str,
    secret_key: str,
    prepare: Callable[[Any, Any], None] | None = None,
) -> Iterator[tuple[Any, Any]]:
    """The demo day's papers in a fresh database, served on a free port: (settings, db).

    `prepare(settings, db)` runs before the site is served (operators, subscribers, a digest
    already sent); mail goes to `smtp_url`. The server is stopped and the database closed
    at the end.
    """
    from newsletter import pipeline
    from newsletter.config import load_settings
    from newsletter.db import Database

    port = free_port()
    settings = load_settings(
        var_dir=var_dir,
        secret_key=secret_key,
        sources="hf_daily",
        smtp_url=smtp_url,
        host="127.0.0.1",
        port=port,
        base_url=f"http://127.0.0.1:{port}",
    )
    db = Database(settings)
    sites = LiveSites()
    try:
        db.upgrade()
        pipeline.load_demo_day(db)  # the papers the pages and the digests are made of
        if prepare is not None:
            prepare(settings, db)
        sites.serve(settings, db)
        yield settings, db
    finally:
        sites.stop()
        db.dispose()


@contextmanager
def watched_page(chromium: Any, **options: Any) -> Iterator[Any]:
    """A page in a new browser context (`options` for new_context), closed at the end.

    `page.problems` collects the console errors and uncaught script errors as they come.
    """
    context = chromium.new_context(**options)
    try:
        page = context.new_page()
        problems: list[str] = []
        page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda error: problems.append(str(error)))
        page.problems = problems
        yield page
    finally:
        context.close()
