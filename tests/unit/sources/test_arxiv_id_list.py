"""arXiv's answer to an id_list query: the papers it has, the ids it has none for."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from newsletter.sources import SourceError
from newsletter.sources.arxiv import parse_id_list

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures"
ANSWER = (FIXTURES / "likes" / "arxiv_atom_id_list.xml").read_bytes()
ASKED = ["2606.13677", "cond-mat/0603029", "2401.99999"]
HEAD = (
    b'<feed xmlns="http://www.w3.org/2005/Atom" '
    b'xmlns:opensearch="http://a9.com/-/spec/opensearch/1.1/">'
)


def test_the_papers_arxiv_has_and_the_id_it_left_out():
    result = parse_id_list(ANSWER, ASKED)
    assert [paper.id for paper in result.papers] == ["2606.13677", "cond-mat/0603029"]
    mana = result.papers[0]
    assert mana.title == "Mana: Dexterous Manipulation of Articulated Tools"
    assert mana.authors[0] == "Zhao-Heng Yin" and "cs.RO" in mana.categories
    assert result.papers[1].published.year == 2006  # the 2016 serialisation reads alike
    assert result.missing == ["2401.99999"] and result.unusable == []


def test_the_old_apis_empty_entry_for_an_unknown_id_is_a_missing_id():
    feed = HEAD + b"<opensearch:totalResults>1</opensearch:totalResults><entry/></feed>"
    result = parse_id_list(feed, ["2208.05394"])
    assert result.papers == [] and result.missing == ["2208.05394"]


def test_an_entry_that_cannot_be_read_is_neither_stored_nor_missing():
    entry = b"<entry><id>http://arxiv.org/abs/2401.00001v1</id><title></title></entry>"
    feed = HEAD + b"<opensearch:totalResults>1</opensearch:totalResults>" + entry + b"</feed>"
    result = parse_id_list(feed, ["2401.00001"])
    assert (result.papers, result.missing, result.unusable) == ([], [], ["2401.00001"])


def test_a_short_page_is_asked_again_not_taken_as_no_papers():
    feed = HEAD + b"<opensearch:totalResults>3</opensearch:totalResults></feed>"
    with pytest.raises(SourceError, match="an empty page for 2 ids of 3 results"):
        parse_id_list(feed, ["2401.00001", "2401.00002"])
    none = HEAD + b"<opensearch:totalResults>0</opensearch:totalResults></feed>"
    assert parse_id_list(none, ["2401.00001"]).missing == ["2401.00001"]


def test_an_error_feed_and_a_broken_one_raise():
    error = json.loads((FIXTURES / "sources" / "arxiv_atom_error_400.golden.json").read_text())
    with pytest.raises(SourceError, match="incorrect id format for abc"):
        parse_id_list(error["body"].encode(), ["abc"])
    with pytest.raises(SourceError, match="malformed XML"):
        parse_id_list(ANSWER[:500], ASKED)
