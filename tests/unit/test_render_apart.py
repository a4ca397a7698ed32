"""Words found apart: the ranker says which entries, the digest labels them without re-reading."""

from __future__ import annotations

from datetime import date

import pytest
from bs4 import BeautifulSoup
from sqlalchemy import select

from newsletter import pipeline, storage
from newsletter.config import Settings
from newsletter.models import Delivery
from newsletter.paper import Paper
from newsletter.profile import parse_profile
from newsletter.ranking import PaperIndex, rank_papers
from newsletter.render import DigestItem, EditionRenderer
from newsletter.sources import hf_daily
from tests.support.ledger import demo_day_subscribers

EDITION = date(2026, 12, 1)
APART = Paper(
    id="2612.00002",
    title="Score-based diffusion",
    abstract="We study diffusion on graphs. Separately, several models of mixing are compared.",
    source="arxiv",
)
TOGETHER = Paper(
    id="2612.00003",
    title="Fast samplers",
    abstract="Latent diffusion models are fast.",
    source="arxiv",
)


@pytest.fixture
def config() -> Settings:
    return Settings(
        secret_key="test",
        base_url="https://news.example.org",
        from_address="Paper Digest <digest@news.example.org>",
    )


def labels(config: Settings, items: list[DigestItem]) -> list[list[str]]:
    html = (
        EditionRenderer(config, EDITION)
        .render_digest(
            email="reader@example.net",
            keywords_text="diffusion models",
            items=items,
            trending=[],
            unsubscribe_url="https://news.example.org/unsubscribe/T",
            manage_url="https://news.example.org/manage/T",
        )
        .html
    )
    cards = BeautifulSoup(html, "html.parser").select("div.card")
    return [[s.get_text() for s in card.select("span.label")] for card in cards]


def test_the_ranker_says_which_entries_matched_only_apart():
    matches = {m.paper_id: m for m in rank_papers([APART, TOGETHER], "diffusion models, graphs")}
    assert matches[APART.id].apart == ("diffusion models",)
    assert matches[TOGETHER.id].apart == ()
    # A quoted phrase or a one-word entry is never "apart".
    quoted = rank_papers([APART, TOGETHER], '"diffusion models", graphs')
    assert all(m.apart == () for m in quoted)


def test_the_digest_takes_apart_from_the_ranker_and_reads_no_paper_text(config, monkeypatch):
    def no_reading(self, paper):
        raise AssertionError(f"the paper's terms were read again for {paper.id}")

    monkeypatch.setattr(EditionRenderer, "_fields", no_reading)
    where = {"diffusion models": ("title", "abstract")}
    items = [
        DigestItem(APART, ("diffusion models",), where=where, apart=("diffusion models",)),
        DigestItem(TOGETHER, ("diffusion models",), where=where, apart=()),
    ]
    assert labels(config, items) == [
        ["diffusion + models in title, abstract"],
        ["diffusion models in title, abstract"],
    ]


def test_rows_planned_before_the_ranker_said_so_still_label_words_apart(config):
    where = {"diffusion models": ("title", "abstract")}
    items = [DigestItem(p, ("diffusion models",), where=where) for p in (APART, TOGETHER)]
    assert labels(config, items) == [
        ["diffusion + models in title, abstract"],
        ["diffusion models in title, abstract"],
    ]


SOME = Paper(
    id="2612.00004",
    title="Heat kernels",
    abstract="We study diffusion on graphs.",
    source="arxiv",
)


def test_a_paper_with_some_of_the_words_is_labelled_by_those_it_has(config):
    """A paper matched in part never shows the entry as if it had every word: the ranker names
    the words it has, and a row that names the entry (planned before) reads them again."""
    # "models" commoner than the other words, so that the two others carry most of the idf.
    others = [Paper(id=f"2612.0010{i}", title=f"Models of kind {i}", abstract="") for i in (1, 2)]
    window = [APART, SOME, *others]
    matches = {m.paper_id: m for m in rank_papers(window, "graph diffusion models")}
    assert not {p.id for p in others} & matches.keys()  # one word of three: no match
    assert matches[APART.id].apart == ("graph diffusion models",)
    some = matches[SOME.id]
    assert some.matched == ("graph + diffusion",) and some.apart == ()
    assert some.where == {"graph + diffusion": ("abstract",)}
    assert some.score < matches[APART.id].score
    told = DigestItem(SOME, some.matched, where=some.where, apart=some.apart)
    entry = "graph diffusion models"
    before = DigestItem(SOME, (entry,), where={entry: ("abstract",)})
    assert labels(config, [told, before]) == [["graph + diffusion in abstract"]] * 2


@pytest.mark.parametrize(
    "profile",
    [
        "diffusion models, language models, reinforcement learning",
        "large language models, video generation, reward model",
        "vision language, policy optimization^2, agents",
        'multimodal reasoning, "image editing", benchmark',
    ],
)
def test_labels_from_the_ranker_are_those_read_from_the_text(config, profile):
    """The recorded day: what the reader sees is the same either way, card for card."""
    papers = list(hf_daily.parse(pipeline.DEMO_DATA.read_bytes()).papers)
    by_id = {p.id: p for p in papers}
    matches = PaperIndex(papers).rank(parse_profile(profile), top_k=30)
    assert matches
    renderer = EditionRenderer(config, EDITION)
    for m in matches:
        paper = by_id[m.paper_id]
        told = renderer.explanation(DigestItem(paper, m.matched, where=m.where, apart=m.apart))
        read = renderer.explanation(DigestItem(paper, m.matched, where=m.where))
        assert told == read, m.paper_id


def test_the_ledger_keeps_apart_and_reads_rows_without_it():
    stored = [
        {"id": "a", "score": 1.0, "matched": ["x y"], "apart": ["x y"]},
        {"id": "b", "score": 1.0, "matched": ["x y"], "apart": []},
        {"id": "c", "score": 1.0, "matched": ["x y"]},
    ]
    assert [i.apart for i in storage.planned_items(stored)] == [("x y",), (), None]
    with pytest.raises(storage.MalformedItems, match="apart"):
        storage.planned_items([{"id": "d", "score": 1.0, "apart": "x y"}])


def test_a_planned_row_stores_apart_and_its_digest_shows_it(db, settings, outbox):
    demo_day_subscribers(db, settings, ["ada@example.org"], "language models, video generation")
    assert pipeline.plan(db, settings).planned == 1
    with db.session() as session:
        items = session.scalars(select(Delivery.items)).one()
    assert items and all(isinstance(item["apart"], list) for item in items)
    assert pipeline.deliver(db, settings).sent == 1
    [message] = outbox()
    text = " ".join(message.get_body(("plain",)).get_content().split())
    for item in items:
        for entry in item["apart"]:
            assert entry.replace(" ", " + ") in text
