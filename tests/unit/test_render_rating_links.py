"""The rating links under each card: in both parts, and within Gmail's clipping size."""

from __future__ import annotations

import re
from datetime import date, timedelta

import pytest

from newsletter import logs, tokens
from newsletter.render import MAX_HTML_BYTES
from newsletter.sources import hf_daily
from newsletter.tokens import TokenError
from tests.unit.test_render_size import DATA, TITLE, render

EDITION = date(2026, 6, 12)
RATE = "https://news.example.org/rate/"


@pytest.fixture(scope="module")
def papers():
    return list(hf_daily.parse((DATA / "hf_daily_papers_2026-06-12.json").read_bytes()).papers)


def rate_url(settings):
    return lambda paper_id: tokens.rate_link(settings, 7, "k" * 22, EDITION, paper_id)


def test_a_large_digest_with_rating_links_is_cut_below_the_cap_and_each_card_keeps_both(papers):
    from newsletter.config import Settings

    config = Settings(secret_key="t", base_url="https://news.example.org")
    email, items = render(papers, 300, rate_url=rate_url(config))
    assert len(email.html.encode()) <= MAX_HTML_BYTES
    shown = len(TITLE.findall(email.html))
    assert 1 <= shown < 300
    more = re.findall(r'href="(https://news\.example\.org/rate/[^"]+)/more"', email.html)
    less = re.findall(r'href="(https://news\.example\.org/rate/[^"]+)/less"', email.html)
    assert more == less and len(more) == shown
    # Each card's links name its own paper.
    for url, item in zip(more, items, strict=False):
        link = tokens.read_rate_token(config, url.removeprefix(RATE), today=EDITION)
        assert link.paper_id == item.paper.id
    text_more = re.findall(
        r"\n   More like this: (\S+)/more\n   Less like this: (\S+)/less", email.text
    )
    assert [a for a, b in text_more if a == b] == more  # the text part: the cards it shows


def test_without_rating_links_the_cards_are_as_before(papers):
    email, _ = render(papers, 5)
    assert "like this" not in email.html and "like this" not in email.text


def test_a_rating_token_is_for_its_purpose_only_and_expires_with_its_edition(settings):
    token = tokens.make_rate_token(settings, 7, "key", EDITION, "2401.12345")
    link = tokens.read_rate_token(settings, token, today=EDITION)
    assert (link.subscriber_id, link.link_key, link.edition, link.paper_id) == (
        7,
        "key",
        EDITION,
        "2401.12345",
    )
    late = EDITION + timedelta(days=tokens.RATE_LINK_DAYS + 1)
    with pytest.raises(TokenError) as caught:
        tokens.read_rate_token(settings, token, today=late)
    assert caught.value.expired
    # No other purpose's token reads as a rating one, nor a rating token as another.
    for purpose in tokens.PURPOSES:
        with pytest.raises(TokenError) as caught:
            tokens.read_rate_token(
                settings, tokens.make_token(settings, purpose, 7, "key"), today=EDITION
            )
        assert not caught.value.expired
        with pytest.raises(TokenError):
            tokens.read_token(settings, purpose, token)
    with pytest.raises(TokenError):
        tokens.read_view_token(settings, token)
    # A logged rating link does not work: the access log shows "/rate/…/less".
    url = tokens.rate_link(settings, 7, "key", EDITION, "2401.12345") + "/less"
    assert token not in logs.redact(f"GET {url}") and "/rate/…/less" in logs.redact(url)
    other = settings.model_copy(update={"secret_key": "another"})
    with pytest.raises(TokenError):
        tokens.read_rate_token(other, token, today=EDITION)
