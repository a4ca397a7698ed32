"""Honest words on the pages: when the first digest comes, what the preview already sent."""

from __future__ import annotations

from datetime import datetime

import pytest

from newsletter.schedule import first_digest_time


def _at(w, moment: datetime) -> None:
    w.web.clock = lambda: moment


@pytest.fixture
def pending(w, outbox) -> str:
    w.signup()  # send hour 07:00, Europe/Paris (UTC+1 in December)
    [message] = outbox()
    return w.confirm_path(message)


def test_an_evening_confirmation_says_the_digest_comes_within_minutes(w, pending):
    _at(w, datetime(2026, 12, 1, 20, 2))  # 21:02 in Paris, past the send hour
    page = w.post_form(pending)
    text = " ".join(page.text.split())
    assert (
        "Your first digest comes within a few minutes, around <strong>21:05</strong> today "
        "(Europe/Paris)" in text
    )
    assert "arrives around 07:00" not in text
    assert "After that, one comes every day around 07:00." in text


def test_a_night_confirmation_says_the_send_hour_today(w, pending):
    _at(w, datetime(2026, 12, 1, 4, 0))  # 05:00 in Paris
    page = w.client.get(pending)
    assert "your first digest comes around <strong>07:00</strong> today (Europe/Paris)" in " ".join(
        page.text.split()
    )
    page = w.post_form(pending)
    assert "Your first digest comes around <strong>07:00</strong> today" in " ".join(
        page.text.split()
    )


def test_schedule_times_follow_the_plan_interval_and_the_ledger():
    evening = datetime(2026, 12, 1, 20, 2)
    assert f"{first_digest_time(evening, 7, 'Europe/Paris'):%d %H:%M}" == "01 21:05"
    assert (
        f"{first_digest_time(datetime(2026, 12, 1, 20, 55), 7, 'Europe/Paris'):%d %H:%M}"
        == "01 22:00"
    )
    planned = first_digest_time(evening, 7, "Europe/Paris", planned_today=True)
    assert f"{planned:%d %H:%M}" == "02 07:00"
    assert f"{first_digest_time(evening, 22, 'Europe/Paris'):%d %H:%M}" == "01 22:00"


def _manage_preview(w, subscriber: int) -> str:
    page = w.client.get(w.path("manage", subscriber)).text
    block = page.split('id="preview-results"', 1)[1].split("</section>", 1)[0]
    return " ".join(block.split())


def _send_todays_digest(w, db) -> list[str]:
    from newsletter import pipeline, storage

    (row,) = pipeline.plan(db, w.settings, write=False).rows
    with db.session() as session:  # today's digest, written to the ledger as the planner does
        storage.create_deliveries(session, [row], storage.utcnow())
    w.web.papers.invalidate()
    return [item.paper_id for item in row.items]


def test_after_a_digest_the_preview_counts_and_shows_the_sent_papers(w, db, web_papers):
    subscriber = w.add(keywords="agents, reasoning", send_hour=0, digest_size=4)
    assert "already sent" not in _manage_preview(w, subscriber)
    sent = _send_todays_digest(w, db)
    after = _manage_preview(w, subscriber)
    new = after.count('<li class="paper">')
    assert len(sent) == 4 and new >= 1
    assert after.count('<li class="paper paper-sent">') == 4
    assert after.count("Already sent to you") == 4
    assert f"match: {new} new, 4 already sent to you." in after


def test_when_every_match_was_sent_the_preview_says_so(w, db, web_papers):
    subscriber = w.add(keywords="agents, reasoning", send_hour=0, digest_size=50)
    sent = _send_todays_digest(w, db)
    after = _manage_preview(w, subscriber)
    assert "None of the" not in after and "Try broader words" not in after
    assert f"Nothing new since your last digest: {len(sent)} of the 30 latest papers match" in after
    assert after.count('<li class="paper paper-sent">') == len(sent)


def test_form_errors_are_sentences_marked_invalid_shown_once_without_the_input(w):
    page = w.post_form(
        "/",
        email="<i>ada</i>",
        keywords='"label noise',
        send_hour="7",
        timezone="Europe/Paris",
        digest_size="10",
    )
    html = page.text
    assert page.status_code == 422
    assert (
        'id="email"' in html
        and 'aria-invalid="true"' in html.split('id="email"', 1)[1].split(">", 1)[0]
    )
    assert "&lt;i&gt;ada" not in html.split('id="email-error"', 1)[1].split("</p>", 1)[0]
    keywords_error = "A quote is not closed: add the closing &#34; (at column 1)."
    assert html.count(keywords_error) == 1, html
    assert "unclosed quote" not in html
    summary = html.split('class="alert alert-error"', 1)[1].split("</div>", 1)[0]
    assert '<a href="#email">Email address</a>' in summary
    assert '<a href="#keywords">Keywords</a>' in summary


def test_the_css_rule_for_invalid_fields_outranks_the_input_type_rule():
    from pathlib import Path

    import newsletter

    css = (Path(newsletter.__file__).parent / "templates/web/static/style.css").read_text()
    rule = ':is(input, select, textarea)[aria-invalid="true"] { border-color: var(--danger);'
    # Same specificity as input[type=email] (0,1,1), and later in the sheet: it wins.
    assert rule in css and css.index(rule) > css.index("input[type=email], input[type=number]")


def test_the_preview_labels_words_found_apart_as_words():
    from newsletter.paper import Paper
    from newsletter.web.papers import _shown

    apart = Paper(
        id="2612.00002",
        title="Score-based diffusion",
        abstract="We study diffusion on graphs. Several models of mixing are compared.",
        source="arxiv",
    )
    together = Paper(
        id="2612.00003", title="Latent diffusion models", abstract="Fast.", source="arxiv"
    )
    assert _shown(apart, ("diffusion models",)) == {"diffusion models": "diffusion + models"}
    assert _shown(together, ("diffusion models",)) == {"diffusion models": "diffusion models"}
