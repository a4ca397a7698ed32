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
        "Your first digest comes within a few minutes, around <strong>21:05</strong> today (Europe/Paris)"
        in text
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
