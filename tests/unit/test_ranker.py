"""The service's ranking policy: the CLI, the planner and the pages rank alike, from the settings."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from sqlalchemy import select
from typer.testing import CliRunner

from newsletter import pipeline, storage, subscriptions
from newsletter.cli import app
from newsletter.config import load_settings
from newsletter.db import Database
from newsletter.models import Delivery
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


@pytest.mark.parametrize("keywords", [KEYWORDS, "reasoning, -vision", "speculative decoding, sparse attention"])
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
    assert len(cli_rank("--papers", str(day_jsonl), "--keywords", "agents, reasoning", "--top", "2")) == 2
