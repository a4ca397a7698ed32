"""The dashboard's SVG charts: parsed from the page, their bars match the database counts."""

from __future__ import annotations

from collections import Counter
from datetime import date, datetime, timedelta

import pytest
from bs4 import BeautifulSoup
from sqlalchemy import select

from newsletter import storage
from newsletter.models import (
    ACTIVE,
    FAILED,
    PAUSED,
    PENDING,
    SENT,
    SKIPPED,
    UNSUBSCRIBED,
    Delivery,
    PaperRow,
    Subscriber,
)
from newsletter.paper import Paper
from newsletter.web.admin import accounts, charts

PASSWORD = "correct horse battery"
TODAY = storage.utcnow().date()


def day(offset: int) -> date:
    return TODAY - timedelta(days=offset)


def at(offset: int) -> datetime:
    return datetime.combine(day(offset), datetime.min.time()) + timedelta(hours=9)


@pytest.fixture
def dashboard(w, db):
    """An operator signed in; the overview page parsed."""
    with db.session() as session:
        accounts.add_operator(session, "olga", PASSWORD, storage.utcnow())
    assert w.post_form("/admin/login", username="olga", password=PASSWORD).status_code == 303

    def read() -> BeautifulSoup:
        response = w.client.get("/admin")
        assert response.status_code == 200
        return BeautifulSoup(response.text, "lxml")

    return read


def bars(page: BeautifulSoup, chart_id: str) -> dict[tuple[str, str], int]:
    svg = page.find("svg", id=chart_id)
    assert svg is not None, chart_id
    found = {
        (rect["data-day"], rect["data-series"]): int(rect["data-value"])
        for rect in svg.find_all("rect", attrs={"data-series": True})
    }
    return found


def people(db, rows) -> None:
    """Subscribers as (state, created, confirmed, unsubscribed) day offsets."""
    with db.session() as session:
        for index, (state, created, confirmed, left) in enumerate(rows):
            session.add(
                Subscriber(
                    email=f"s{index}@example.org",
                    state=state,
                    keywords="diffusion",
                    created_at=at(created),
                    confirmed_at=None if confirmed is None else at(confirmed),
                    unsubscribed_at=None if left is None else at(left),
                )
            )


def test_each_chart_has_an_accessible_title_and_description(w, db, dashboard):
    page = dashboard()
    for chart_id in ("chart-subscribers", "chart-deliveries", "chart-papers"):
        svg = page.find("svg", id=chart_id)
        assert svg["role"] == "img"
        title_id, desc_id = svg["aria-labelledby"].split()
        assert svg.find("title", id=title_id).text
        assert svg.find("desc", id=desc_id).text
    assert page.find("svg", id="chart-deliveries").find("text").text == "No data yet"


def test_deliveries_per_day_match_the_ledger(w, db, dashboard):
    people(db, [(ACTIVE, 9, 9, None)] * 3)
    plan = {3: [SENT, SENT, FAILED], 2: [SENT, SKIPPED, SKIPPED], 0: [SENT]}
    with db.session() as session:
        ids = list(session.scalars(select(Subscriber.id).order_by(Subscriber.id)))
        for offset, row_states in plan.items():
            for subscriber_id, state in zip(ids, row_states, strict=False):
                session.add(
                    Delivery(
                        subscriber_id=subscriber_id,
                        edition=day(offset),
                        state=state,
                        items=[],
                        created_at=at(offset),
                    )
                )
    with db.session() as session:
        expected = Counter(
            (edition.isoformat(), state)
            for edition, state in session.execute(select(Delivery.edition, Delivery.state))
        )
    found = bars(dashboard(), "chart-deliveries")
    assert found == dict(expected)
    assert found[(day(3).isoformat(), "failed")] == 1


def test_papers_per_day_match_the_papers_by_source(w, db, dashboard):
    papers = [
        Paper(id=f"2612.{n:05d}", title=f"Paper {n}", published=day(n % 3), source=source)
        for n, source in enumerate(["hf_daily"] * 5 + ["arxiv"] * 4 + ["arxiv,hf_daily"] * 2)
    ]
    with db.session() as session:
        storage.upsert_papers(session, papers, storage.utcnow())
        expected = Counter(
            (published.isoformat(), source)
            for published, source in session.execute(select(PaperRow.published, PaperRow.source))
        )
    assert bars(dashboard(), "chart-papers") == dict(expected)


def test_subscribers_over_time_follow_sign_up_confirmation_and_unsubscribe(w, db, dashboard):
    people(
        db,
        [
            (ACTIVE, 5, 4, None),  # pending on day -5, active from day -4
            (PAUSED, 5, 5, None),  # shown in their current state from confirmation
            (UNSUBSCRIBED, 4, 4, 2),  # active from -4, unsubscribed from -2
            (PENDING, 1, None, None),
        ],
    )
    found = bars(dashboard(), "chart-subscribers")
    assert {k: v for k, v in found.items() if k[0] == day(5).isoformat()} == {
        (day(5).isoformat(), PENDING): 1,
        (day(5).isoformat(), PAUSED): 1,
    }
    assert {k: v for k, v in found.items() if k[0] == day(3).isoformat()} == {
        (day(3).isoformat(), ACTIVE): 2,
        (day(3).isoformat(), PAUSED): 1,
    }
    assert {k: v for k, v in found.items() if k[0] == day(0).isoformat()} == {
        (day(0).isoformat(), ACTIVE): 1,
        (day(0).isoformat(), PAUSED): 1,
        (day(0).isoformat(), UNSUBSCRIBED): 1,
        (day(0).isoformat(), PENDING): 1,
    }
    assert not any(k[0] == day(6).isoformat() for k in found)  # nobody yet


def test_bars_are_stacked_and_scaled_to_the_largest_day():
    chart = charts.chart_of(
        "c", "T", "D", [(day(1), "sent", 6), (day(1), "failed", 2), (day(0), "sent", 4)]
    )
    svg = BeautifulSoup(str(charts.svg(chart)), "lxml")
    rects = {
        (r["data-day"], r["data-series"]): r
        for r in svg.find_all("rect", attrs={"data-series": True})
    }
    heights = {key: float(r["height"]) for key, r in rects.items()}
    full = heights[(day(1).isoformat(), "sent")] + heights[(day(1).isoformat(), "failed")]
    assert heights[(day(0).isoformat(), "sent")] == pytest.approx(full * 4 / 8, abs=0.1)
    sent, failed = rects[(day(1).isoformat(), "sent")], rects[(day(1).isoformat(), "failed")]
    # The series go up in chart.series order (here failed, then sent), each on the one below.
    assert chart.series == ["failed", "sent"]
    assert float(sent["y"]) + float(sent["height"]) == pytest.approx(float(failed["y"]), abs=0.1)
    assert sent.find("title").text == f"{day(1).isoformat()}, sent: 6"


def test_series_names_are_escaped():
    chart = charts.chart_of("c", "<T>", "D", [(day(0), '<script>"x"', 1)])
    markup = str(charts.svg(chart))
    assert "<script>" not in markup and "&lt;T&gt;" in markup
