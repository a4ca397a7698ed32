"""What the sources share: the error, text cleaning, arXiv ids and merging records by id."""

from __future__ import annotations

from collections.abc import Callable
from datetime import date

import pytest

from newsletter.paper import Paper
from newsletter.sources import SOURCES, SourceError, arxiv, clean_text, hf_daily, merge_papers
from newsletter.sources.base import MAX_COUNT, arxiv_id, count

Read = Callable[[str], bytes]


def test_source_error_names_the_source_and_the_problem() -> None:
    error = SourceError("hf_daily", "truncated JSON at line 1 column 80")
    assert (error.source, error.message) == ("hf_daily", "truncated JSON at line 1 column 80")
    assert str(error) == "hf_daily: truncated JSON at line 1 column 80"


def test_sources_registry_holds_both_modules() -> None:
    assert set(SOURCES) == {"hf_daily", "arxiv"}
    assert (SOURCES["hf_daily"], SOURCES["arxiv"]) == (hf_daily, arxiv)
    assert all(callable(module.fetch) for module in SOURCES.values())


@pytest.mark.parametrize(
    ("raw", "clean"),
    [
        ("  Deep\n  learning  ", "Deep learning"),
        ("A &amp; B &lt;3", "A & B <3"),
        ("tab\tand&nbsp;nbsp&#10;newline", "tab and nbsp newline"),
        ("&amp;lt;", "&lt;"),  # decoded once: double-escaped text stays escaped once
        ("", ""),
        (None, ""),
    ],
)
def test_clean_text(raw: str | None, clean: str) -> None:
    assert clean_text(raw) == clean


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("2401.01234", "2401.01234"),
        ("2401.01234v12", "2401.01234"),
        ("0704.0001", "0704.0001"),
        ("cond-mat/0603029v1", "cond-mat/0603029"),
        ("math.GT/0309136", "math.GT/0309136"),
        ("2401.1234", "2401.1234"),
        ("", None),
        ("2401", None),
        ("http://arxiv.org/abs/2401.01234", None),
        ("../../etc/passwd", None),
    ],
)
def test_arxiv_id(raw: str, expected: str | None) -> None:
    assert arxiv_id(raw) == expected


def test_merge_combines_what_each_source_knows(recorded: Read) -> None:
    hf = Paper(
        id="2609.26811",
        title="The Drift Contract",
        abstract="short",
        upvotes=12,
        comments=3,
        keywords=["local learning"],
        source="hf_daily",
        published=date(2026, 9, 25),
        url="https://huggingface.co/papers/2609.26811",
    )
    from_rss = arxiv.parse_rss(recorded("arxiv_rss_multi_category.xml")).papers
    merged = merge_papers([hf, *from_rss])

    assert [p.id for p in merged] == ["2609.26811", "2609.26820"]
    drift = merged[0]
    assert drift.source == "arxiv+hf_daily"
    assert (drift.upvotes, drift.comments, drift.keywords) == (12, 3, ["local learning"])
    assert drift.categories == ["cs.LG"]
    assert drift.authors == ["Fabien Polly"]
    assert drift.abstract.startswith("Local learning trains each layer")  # the longer one
    assert drift.published == date(2026, 9, 24)  # the earlier day
    assert drift.announce_type == "new"


def test_merge_keeps_one_record_per_id_whatever_the_version() -> None:
    papers = [Paper(id="2401.00001", title="a"), Paper(id="2401.00002", title="b")]
    papers.append(Paper(id="2401.00001v2", title="a longer title"))
    merged = merge_papers(papers)
    assert [(p.id, p.title) for p in merged] == [
        ("2401.00001", "a longer title"),
        ("2401.00002", "b"),
    ]


def test_merge_of_nothing_is_nothing() -> None:
    assert merge_papers([]) == []


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (12, 12),
        (0, 0),
        (-5, 0),  # a negative count is no count at all
        (10**20, MAX_COUNT),  # more than the INTEGER column holds
        (12.0, 12),
        (12.5, None),
        (float("nan"), None),
        (float("inf"), None),
        (True, None),  # a flag, not a count
        ("42", 42),
        (" 42 ", 42),
        ("9" * 5000, MAX_COUNT),  # past int()'s digit limit, and no need to convert it
        ("\u00b2", None),  # "²".isdigit() is True, int("²") raises
        ("\u0663", None),  # Arabic-Indic three
        ("-3", None),
        ("", None),
        (None, None),
        ([1], None),
    ],
)
def test_count_is_strict_and_clamped(raw: object, expected: int | None) -> None:
    assert count(raw) == expected
