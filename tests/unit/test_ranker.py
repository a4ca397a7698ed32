"""The service's ranking policy: the CLI, the planner and the pages rank alike, as set."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import select
from typer.testing import CliRunner

from newsletter import pipeline, storage, subscriptions
from newsletter.cli import app
from newsletter.config import load_settings
from newsletter.db import Database
from newsletter.models import Delivery
from newsletter.planned import PlannedRow
from newsletter.profile import parse_profile
from newsletter.ranker import PaperWindow, RankingPolicy, RecentPapers
from newsletter.sources import hf_daily

DAY_FILE = pipeline.DEMO_DATA
KEYWORDS = 'large language models, "reinforcement learning", agents, diffusion, -medical'


@pytest.fixture
def day_jsonl(tmp_path: Path) -> Path:
    """The bundled Hugging Face day as paper JSONL, the input of `newsletter rank`."""
    papers = hf_daily.parse(DAY_FILE.read_bytes()).papers
    path = tmp_path / "day.jsonl"
    path.write_text("".join(p.to_json() + "\n" for p in papers), encoding="utf-8")
    return path


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A deployment whose ranking settings are not the library's defaults."""
    monkeypatch.setenv("NEWSLETTER_VAR_DIR", str(tmp_path / "var"))
    monkeypatch.setenv("NEWSLETTER_SECRET_KEY", "test-secret")
    monkeypatch.setenv("NEWSLETTER_MIN_SCORE", "25")
    monkeypatch.setenv("NEWSLETTER_POPULARITY_WEIGHT", "0.6")
    monkeypatch.setenv("NEWSLETTER_DIGEST_SIZE", "7")


def cli_rank(*args: str) -> list[tuple[str, float]]:
    result = CliRunner().invoke(app, ["rank", *args, "--format", "json"])
    assert result.exit_code == 0, result.output
    return [(r["id"], round(r["score"], 2)) for r in json.loads(result.stdout)["results"]]


def planned(day_jsonl: Path, keywords: str) -> list[tuple[str, float]]:
    """What the planner puts in the ledger for one subscriber, the papers of `day_jsonl` stored."""
    from newsletter.paper import read_jsonl

    settings = load_settings()
    db = Database(settings)
    db.upgrade()
    try:
        papers = read_jsonl(day_jsonl.read_text(encoding="utf-8"))
        pipeline.load_papers(db, papers, source="hf_daily", url="file:day.jsonl")
        with db.session() as session:
            subscriptions.subscribe(
                session,
                settings,
                email="ada@example.org",
                keywords=keywords,
                now=storage.utcnow(),
                send_hour=0,
                confirmed=True,
            )
        report = pipeline.plan(db, settings)
        assert report.due == 1
        with db.session() as session:
            (row,) = session.scalars(select(Delivery)).all()
            return [(item["id"], item["score"]) for item in row.items]
    finally:
        db.dispose()


@pytest.mark.parametrize(
    "keywords", [KEYWORDS, "reasoning, -vision", "speculative decoding, sparse attention"]
)
def test_the_cli_ranks_a_day_exactly_as_the_planner_does(env, day_jsonl, keywords):
    """Same papers, same order, same scores: min score, popularity and digest size from the
    settings apply to `newsletter rank` as to the digests."""
    from_cli = cli_rank("--papers", str(day_jsonl), "--keywords", keywords)
    from_planner = planned(day_jsonl, keywords)
    assert from_planner, "the profile should match something that day"
    assert from_cli == from_planner


def test_the_settings_change_what_the_cli_lists(env, day_jsonl, monkeypatch):
    """The equality above means something: these settings do change the ranking."""
    tuned = cli_rank("--papers", str(day_jsonl), "--keywords", KEYWORDS)
    for name in ("MIN_SCORE", "POPULARITY_WEIGHT", "DIGEST_SIZE"):
        monkeypatch.delenv(f"NEWSLETTER_{name}")
    default = cli_rank("--papers", str(day_jsonl), "--keywords", KEYWORDS)
    assert len(tuned) <= 7 and min(score for _, score in tuned) >= 25
    assert tuned != default[: len(tuned)]


def test_top_overrides_the_digest_size(env, day_jsonl):
    assert (
        len(cli_rank("--papers", str(day_jsonl), "--keywords", "agents, reasoning", "--top", "2"))
        == 2
    )


# The recent papers' index, one per process, shared by the planner and the pages ------------


@pytest.fixture
def tuned(tmp_path: Path) -> Database:
    settings = load_settings(
        var_dir=tmp_path / "var",
        secret_key="test-secret",
        sources="hf_daily",
        min_score=25,
        popularity_weight=0.6,
    )
    db = Database(settings)
    db.upgrade()
    pipeline.load_demo_day(db)
    with db.session() as session:
        for n, keywords in enumerate([KEYWORDS, "reasoning, -vision", "agents", "agents"]):
            subscriptions.subscribe(
                session,
                settings,
                email=f"r{n}@example.org",
                keywords=keywords,
                now=storage.utcnow(),
                send_hour=0,
                confirmed=True,
            )
    yield db
    db.dispose()


def dry_plan(db: Database, recent: RecentPapers | None = None, **kw: object) -> list[PlannedRow]:
    report = pipeline.plan(db, db.settings, write=False, recent=recent, **kw)
    return sorted(report.rows, key=lambda row: row.subscriber_id)


def test_the_planner_and_the_pages_rank_with_one_index(tuned):
    from newsletter.web.app import create_app

    recent = RecentPapers(tuned, tuned.settings)
    web = create_app(tuned.settings, tuned, recent=recent).state.web
    first = dry_plan(tuned, recent)
    window = recent.built
    assert window is not None and len(window) == 30
    assert web.papers.preview("agents", now=storage.utcnow(), top_k=3).considered == 30
    assert recent.built is window  # the page ranked the planner's index: nothing rebuilt
    assert dry_plan(tuned, recent) == first and recent.built is window  # nothing changed
    assert first == dry_plan(tuned)  # as a planner with an index of its own


def test_the_planner_never_ranks_a_stale_index(tuned):
    recent = RecentPapers(tuned, tuned.settings)
    dry_plan(tuned, recent)
    window = recent.built
    with tuned.session() as session:  # a collection run: one paper more, one with more upvotes
        papers = storage.recent_papers(session)
        storage.upsert_papers(
            session,
            [
                replace(papers[0], id="2699.00001"),
                replace(papers[1], upvotes=papers[1].upvotes + 500),
            ],
            storage.utcnow(),
        )
    again = dry_plan(tuned, recent)
    assert recent.built is not window and len(recent.built) == 31
    assert again == dry_plan(tuned)


def test_a_paper_leaving_the_window_is_no_longer_ranked(tuned):
    recent = RecentPapers(tuned, tuned.settings)
    now = storage.utcnow()
    assert len(recent.exact(now)) == 30
    later = now + timedelta(days=tuned.settings.paper_window_days, minutes=1)
    assert len(recent.exact(later)) == 0


def test_an_index_ranks_alike_all_day_long():
    """Why a plan later the same day may reuse an index: it ranks as one built then would."""
    papers = hf_daily.parse(DAY_FILE.read_bytes()).papers
    policy = RankingPolicy(min_score=5, popularity_weight=0.3, digest_size=10, window_days=2)
    profiles = [parse_profile(text) for text in (KEYWORDS, "agents", "reasoning, -vision")]

    def ranked(now: datetime) -> list[list[tuple[str, float]]]:
        window = PaperWindow.of(policy, papers, now)
        matches = window.rank(profiles, top_k=[10] * 3, exclude_ids=[frozenset()] * 3)
        return [[(m.paper_id, m.score) for m in found] for found in matches]

    morning = ranked(datetime(2026, 6, 13, 0, 5))
    assert morning == ranked(datetime(2026, 6, 13, 23, 55))
    assert morning != ranked(datetime(2026, 6, 20, 12, 0))  # freshness counts the days


def test_a_planner_refuses_an_index_of_other_settings(tuned):
    other = tuned.settings.model_copy(update={"min_score": 0.0})
    with pytest.raises(ValueError, match="other ranking settings"):
        dry_plan(tuned, RecentPapers(tuned, other))
