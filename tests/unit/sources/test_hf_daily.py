"""Parsing Hugging Face Daily Papers: the recorded API answer, the day page, and bad input."""

from __future__ import annotations

import html
import json
import re
from collections.abc import Callable
from datetime import date
from typing import Any

import pytest

from newsletter.sources import SourceError, hf_daily
from newsletter.text import tex_to_text

HF_JSON = "hf_daily_papers_2026-06-12.json"
HF_PAGE = "hf_daily_page_2026-06-12.html"
Read = Callable[[str], bytes]


def dump(value: Any) -> bytes:
    return json.dumps(value).encode("utf-8")


def page_with(props: str) -> bytes:
    element = (
        f'<div class="SVELTE_HYDRATER contents" data-target="DailyPapers" data-props="{props}">'
    )
    return f"<!doctype html><html><body>{element}</div></body></html>".encode()


def test_every_recorded_entry_becomes_a_paper_with_the_recorded_values(
    recorded: Read, hf_entries: list[dict[str, Any]]
) -> None:
    result = hf_daily.parse(recorded(HF_JSON))

    assert result.skipped == 0
    assert [p.id for p in result.papers] == [e["paper"]["id"] for e in hf_entries]
    for paper, entry in zip(result.papers, hf_entries, strict=True):
        raw = entry["paper"]
        assert paper.title == " ".join(raw["title"].split())
        assert paper.abstract == tex_to_text(raw["summary"])  # TeX as Unicode
        assert paper.authors == [a["name"] for a in raw["authors"]]
        assert paper.upvotes == raw["upvotes"]
        assert paper.comments == entry["numComments"]
        assert paper.keywords == raw["ai_keywords"]
        assert paper.ai_summary == raw["ai_summary"]
        assert paper.github_repo == raw.get("githubRepo")
        assert paper.github_stars == raw.get("githubStars")
        assert paper.project_page == raw.get("projectPage")
        assert paper.published == date(2026, 6, 12)
        assert paper.source == "hf_daily"
        assert paper.url == f"https://huggingface.co/papers/{raw['id']}"
        assert paper.categories == []


def test_recorded_values_spot_checked(recorded: Read) -> None:
    papers = {p.id: p for p in hf_daily.parse(recorded(HF_JSON)).papers}

    first = papers["2606.00467"]
    assert first.title.startswith("On the Limits of LLM Adaptability")
    assert first.authors == ["Etienne Casanova", "Rafal Kocielnik", "R. Michael Alvarez"]
    assert (first.upvotes, first.comments) == (0, 2)
    assert first.keywords[:3] == [
        "zero-shot annotation",
        "LLM-as-a-judge",
        "model-internalized priors",
    ]
    assert first.github_repo is None and first.github_stars is None and first.project_page is None

    msa = papers["2606.13392"]
    assert (msa.upvotes, msa.comments) == (103, 4)
    assert (msa.github_repo, msa.github_stars) == ("https://github.com/MiniMax-AI/MSA", 251)

    both = papers["2606.08063"]
    assert both.project_page == "https://huggingface.co/spaces/Jiaqi-hkust/Robust-U1"
    assert both.github_stars == 86


def test_hidden_authors_are_kept(recorded: Read, hf_entries: list[dict[str, Any]]) -> None:
    hidden = [a["name"] for e in hf_entries for a in e["paper"]["authors"] if a.get("hidden")]
    assert hidden, "the recording holds an author marked hidden"
    authors = {a for p in hf_daily.parse(recorded(HF_JSON)).papers for a in p.authors}
    assert set(hidden) <= authors


def test_newlines_in_recorded_abstracts_are_collapsed(recorded: Read) -> None:
    raw = json.loads(recorded(HF_JSON))
    summary = next(e["paper"]["summary"] for e in raw if e["paper"]["id"] == "2606.09446")
    assert "\n  Our contr" in summary

    paper = next(p for p in hf_daily.parse(recorded(HF_JSON)).papers if p.id == "2606.09446")
    assert "positioning. Our contr" in paper.abstract
    assert "\n" not in paper.abstract and "  " not in paper.abstract


def test_the_day_page_gives_the_same_papers_as_the_api(recorded: Read) -> None:
    page = recorded(HF_PAGE)
    assert b"&quot;dailyPapers&quot;" in page  # the data really is HTML-escaped in the page

    assert hf_daily.parse_page(page) == hf_daily.parse(recorded(HF_JSON))


def test_a_page_without_the_data_element_is_an_error() -> None:
    with pytest.raises(SourceError, match="page has no DailyPapers data element") as caught:
        hf_daily.parse_page(b"<html><body><h1>We are down for maintenance</h1></body></html>")
    assert caught.value.source == "hf_daily"


def test_a_page_naming_daily_papers_only_in_text_is_an_error() -> None:
    page = b'<html><body><div data-target="Other">DailyPapers</div></body></html>'
    with pytest.raises(SourceError, match="no DailyPapers data element"):
        hf_daily.parse_page(page)


def test_a_data_element_without_props_is_an_error() -> None:
    page = b'<html><body><div data-target="DailyPapers"></div></body></html>'
    with pytest.raises(SourceError, match="has no data-props"):
        hf_daily.parse_page(page)


def test_truncated_data_props_name_the_problem(hf_entries: list[dict[str, Any]]) -> None:
    props = json.dumps({"dailyPapers": hf_entries})[:500]
    with pytest.raises(SourceError, match="data-props holds truncated JSON"):
        hf_daily.parse_page(page_with(html.escape(props)))


def test_data_props_without_daily_papers_is_an_error() -> None:
    with pytest.raises(SourceError, match="no dailyPapers list"):
        hf_daily.parse_page(page_with(html.escape(json.dumps({"papers": []}))))


def test_truncated_json_names_where_it_ends(recorded: Read) -> None:
    raw = recorded(HF_JSON)
    cut = raw[:80]
    lines = cut.decode().split("\n")
    with pytest.raises(SourceError) as caught:
        hf_daily.parse(cut)
    assert str(caught.value) == (
        f"hf_daily: truncated JSON at line {len(lines)} column {len(lines[-1]) + 1}"
    )


def test_truncated_json_on_one_line_matches_the_documented_message() -> None:
    one_line = json.dumps([{"paper": {"id": "2401.00001", "title": "A title"}}] * 3)
    with pytest.raises(SourceError) as caught:
        hf_daily.parse(one_line[:79].encode())
    assert str(caught.value) == "hf_daily: truncated JSON at line 1 column 80"


def test_malformed_json_is_not_called_truncated() -> None:
    with pytest.raises(SourceError, match=r"malformed JSON at line 1 column 3"):
        hf_daily.parse(b"[{]")


def test_invalid_utf8_is_a_source_error() -> None:
    with pytest.raises(SourceError, match="unreadable JSON"):
        hf_daily.parse(b'[{"paper": "\xff\xfe"}]')


def test_an_object_instead_of_the_array_is_a_changed_shape() -> None:
    with pytest.raises(SourceError, match="expected a JSON array of papers, got an object"):
        hf_daily.parse(dump({"error": "Invalid date"}))


def test_an_empty_day_is_not_an_error() -> None:
    assert hf_daily.parse(b"[]") == hf_daily.ParseResult([], 0)


def test_bad_entries_are_skipped_and_counted(hf_entries: list[dict[str, Any]]) -> None:
    del hf_entries[0]["paper"]["id"]
    hf_entries[1]["paper"]["title"] = "   "
    hf_entries[1]["title"] = ""
    hf_entries[2] = "not an entry"
    hf_entries[3]["paper"]["id"] = "not-an-arxiv-id"
    del hf_entries[4]["paper"]

    result = hf_daily.parse(dump(hf_entries))

    assert result.skipped == 5
    assert len(result.papers) == 25
    assert result.papers[0].id == hf_entries[5]["paper"]["id"]


def test_a_response_of_only_bad_entries_is_an_error() -> None:
    with pytest.raises(SourceError, match=r"none of the 2 entries is usable \(paper has no id\)"):
        hf_daily.parse(dump([{"paper": {"title": "x"}}, {"paper": {"title": "y"}}]))


def test_the_top_level_title_stands_in_for_a_missing_paper_title() -> None:
    entry = {"paper": {"id": "2401.00001v2", "summary": "s"}, "title": "From the entry"}
    (paper,) = hf_daily.parse(dump([entry])).papers
    assert (paper.id, paper.title) == ("2401.00001", "From the entry")


def test_old_style_arxiv_ids_are_accepted() -> None:
    entry = {"paper": {"id": "hep-th/9901001", "title": "Old"}}
    assert hf_daily.parse(dump([entry])).papers[0].id == "hep-th/9901001"


def test_entities_and_whitespace_are_cleaned() -> None:
    entry = {
        "paper": {
            "id": "2401.00001",
            "title": "  Fast &amp; Robust\n   Learning ",
            "summary": "Line one.\n\n  Line&nbsp;two &lt;3",
            "authors": [{"name": " Ada\nLovelace "}, {"name": ""}, {"nom": "x"}, "bad"],
            "ai_keywords": ["label noise", "label noise", " ", 7],
        }
    }
    (paper,) = hf_daily.parse(dump([entry])).papers
    assert paper.title == "Fast & Robust Learning"
    assert paper.abstract == "Line one. Line two <3"
    assert paper.authors == ["Ada Lovelace"]
    assert paper.keywords == ["label noise"]


def test_unexpected_value_types_fall_back_to_defaults() -> None:
    entry = {
        "numComments": "many",
        "paper": {
            "id": "2401.00001",
            "title": "T",
            "upvotes": True,
            "githubStars": -3,
            "githubRepo": "javascript:alert(1)",
            "projectPage": 42,
            "submittedOnDailyAt": "yesterday",
            "authors": {"name": "not a list"},
        },
    }
    (paper,) = hf_daily.parse(dump([entry])).papers
    # A flag and a word are no counts; a negative count is none at all.
    assert (paper.upvotes, paper.comments, paper.github_stars) == (0, 0, 0)
    assert paper.github_repo is None and paper.project_page is None
    assert paper.published is None and paper.authors == []


def test_the_page_fixture_is_what_the_builder_makes(recorded: Read) -> None:
    # The page fixture is generated; a hand edit that breaks the escaping would show here.
    page = recorded(HF_PAGE).decode()
    props = re.search(r'data-target="DailyPapers" data-props="([^"]*)"', page)
    assert props is not None
    assert json.loads(html.unescape(props.group(1)))["dailyPapers"] == json.loads(recorded(HF_JSON))


def test_counts_are_clamped_to_what_the_database_holds(hf_entries: list[dict[str, Any]]) -> None:
    hf_entries[0]["paper"].update(githubStars=10**20, upvotes=-7)
    hf_entries[0]["numComments"] = 2**31
    hf_entries[1]["paper"]["upvotes"] = 123454321
    # A number too long for int() (4,300 digits) fails no more than its own field.
    raw = dump(hf_entries[:2]).replace(b": 123454321", b": " + b"9" * 5000)
    first, second = hf_daily.parse(raw).papers
    assert (first.github_stars, first.upvotes, first.comments) == (2**31 - 1, 0, 2**31 - 1)
    assert second.upvotes == 2**31 - 1


def test_nan_and_infinite_counts_are_no_counts() -> None:
    entry = b'[{"numComments": NaN, "paper": {"id": "2401.00001", "title": "T",'
    entry += b' "upvotes": Infinity, "githubStars": -Infinity}}]'
    (paper,) = hf_daily.parse(entry).papers
    assert (paper.upvotes, paper.comments, paper.github_stars) == (0, 0, None)


def test_an_entry_that_breaks_the_parser_is_skipped_not_the_day(
    hf_entries: list[dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    real = hf_daily._keywords

    def keywords(value: Any) -> list[str]:
        if value == ["boom"]:
            raise TypeError("a shape nobody foresaw")
        return real(value)

    monkeypatch.setattr(hf_daily, "_keywords", keywords)
    hf_entries[0]["paper"]["ai_keywords"] = ["boom"]
    result = hf_daily.parse(dump(hf_entries))
    assert result.skipped == 1 and len(result.papers) == len(hf_entries) - 1
