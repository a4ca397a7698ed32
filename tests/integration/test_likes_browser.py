"""A reader uploads their BibTeX library on the settings page in a real browser (Chromium):
the multipart form, its CSRF token and the page's body limit work together."""

from __future__ import annotations

from pathlib import Path

import pytest

from newsletter import profile, storage, subscriptions, tokens
from tests.support.web import demo_site, watched_page

pytestmark = [pytest.mark.integration, pytest.mark.browser]

LIBRARY = Path(__file__).resolve().parents[1] / "fixtures" / "likes" / "library.bib"
EMAIL = "ada@example.org"


def _add_reader(settings, db) -> None:
    with db.session() as session:
        subscriptions.subscribe(
            session,
            settings,
            email=EMAIL,
            keywords="diffusion",
            now=storage.utcnow(),
            confirmed=True,
        )


def test_uploading_a_library_on_the_settings_page(tmp_path, chromium, smtp_server):
    with (
        demo_site(tmp_path / "var", smtp_server.url, "likes-browser", _add_reader) as (
            settings,
            db,
        ),
        watched_page(chromium) as page,
    ):
        with db.session() as session:
            reader = storage.subscriber_by_email(session, EMAIL)
            token = tokens.make_token(settings, "manage", reader.id, reader.link_key)
        page.goto(f"{settings.base_url}/manage/{token}")
        page.fill("#liked_papers", "https://arxiv.org/abs/2606.13501v1")
        page.set_input_files("#liked_file", str(LIBRARY))
        page.click("form.card button[type=submit]")
        report = page.locator(".likes-report")
        report.wait_for()
        assert "From your BibTeX file:" in report.inner_text()
        assert "A paper whose eprint is elsewhere" in report.inner_text()
        # The box now lists every liked paper, the typed one first.
        listed = page.input_value("#liked_papers").splitlines()
        assert listed[0] == "2606.13501" and len(listed) == 5
        with db.session() as session:
            reader = storage.subscriber_by_email(session, EMAIL)
            assert profile.parse_profile(reader.keywords).likes == tuple(listed)
        assert page.problems == []
