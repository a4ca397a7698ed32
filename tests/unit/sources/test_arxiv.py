"""Parsing arXiv: the daily RSS (new/cross/replace rules), the Atom API in both serialisations,
the error feed, and hostile or broken XML."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import date

import pytest
from lxml import etree

from newsletter.sources import SourceError, arxiv

RSS_CS_LG = "arxiv_rss_cs_LG.xml"
RSS_MULTI = "arxiv_rss_multi_category.xml"
ATOM = "arxiv_atom_query.xml"
ATOM_2016 = "arxiv_atom_query_legacy_2016.xml"
ATOM_ERROR = "arxiv_atom_error_400.golden.json"
Read = Callable[[str], bytes]
NS = {"arxiv": "http://arxiv.org/schemas/atom", "a": "http://www.w3.org/2005/Atom"}


def edit(raw: bytes, change: Callable[[etree._Element], object]) -> bytes:
    """The document after `change` was applied to its parsed tree."""
    root = etree.fromstring(raw)
    change(root)
    return etree.tostring(root)


def items(root: etree._Element) -> list[etree._Element]:
    return root.findall("channel/item")


def remove(element: etree._Element) -> None:
    parent = element.getparent()
    assert parent is not None
    parent.remove(element)


# RSS ----------------------------------------------------------------------------------------
def test_rss_cs_lg_gives_its_three_new_papers(recorded: Read) -> None:
    result = arxiv.parse_rss(recorded(RSS_CS_LG))

    assert result.skipped == 0
    assert [p.id for p in result.papers] == ["2604.21952", "2604.21953", "2604.21956"]
    first, second, third = result.papers
    assert first.title == (
        "Focus Session: Hardware and Software Techniques for Accelerating Multimodal "
        "Foundation Models"
    )
    assert first.authors == [
        "Muhammad Shafique",
        "Abdul Basit",
        "Muhammad Abdullah Hanif",
        "Alberto Marchisio",
        "Rachmad Vidya Wicaksana Putra",
        "Minghao Shao",
    ]
    assert first.categories == ["cs.LG", "cs.AI", "cs.AR", "cs.NE", "cs.RO"]
    assert second.categories == ["cs.LG", "cs.CY"]
    assert third.authors[-1] == "Milos Hauskrecht" and len(third.authors) == 5
    for paper in result.papers:
        assert paper.announce_type == "new"
        assert paper.published == date(2026, 4, 27)  # the channel's pubDate, New York time
        assert paper.source == "arxiv"
        assert paper.url == f"https://arxiv.org/abs/{paper.id}"


def test_rss_abstract_loses_its_announcement_header_and_entities(recorded: Read) -> None:
    first = arxiv.parse_rss(recorded(RSS_CS_LG)).papers[0]
    assert first.abstract.startswith("This work presents a multi-layered methodology")
    assert "visual resolution & stride" in first.abstract
    assert "Announce Type" not in first.abstract and "\n" not in first.abstract
    assert first.abstract.endswith("energy-efficient spiking-MFMs.")


def test_rss_multi_category_keeps_only_new_by_default(recorded: Read) -> None:
    result = arxiv.parse_rss(recorded(RSS_MULTI))

    assert [(p.id, p.announce_type) for p in result.papers] == [
        ("2609.26811", "new"),
        ("2609.26820", "new"),
    ]
    assert result.skipped == 0  # the cross and replace items are not "bad", only not new
    assert result.papers[0].authors == ["Fabien Polly"]
    assert result.papers[1].categories == ["cs.LG", "cs.AI"]
    assert all(p.published == date(2026, 9, 24) for p in result.papers)


def test_rss_cross_listings_come_with_include_cross(recorded: Read) -> None:
    result = arxiv.parse_rss(recorded(RSS_MULTI), include_cross=True)

    assert [p.id for p in result.papers] == ["2609.26811", "2609.26820", "2205.06398"]
    cross = result.papers[2]
    assert cross.announce_type == "cross"
    assert cross.title == "Outlier Detection for Multi-Network Data"
    assert cross.authors == ["Pritam Dey", "Zhengwu Zhang", "David B. Dunson"]
    assert cross.categories == ["stat.ME", "stat.AP", "stat.ML"]
    assert result.skipped == 0


def test_rss_replacements_never_count_as_new(recorded: Read) -> None:
    for include_cross in (False, True):
        ids = {
            p.id for p in arxiv.parse_rss(recorded(RSS_MULTI), include_cross=include_cross).papers
        }
        assert "2009.13987" not in ids


def test_rss_replace_cross_is_not_new_either(recorded: Read) -> None:
    def relabel(root: etree._Element) -> None:
        for item in items(root):
            item.find("arxiv:announce_type", NS).text = "replace-cross"  # type: ignore[union-attr]

    result = arxiv.parse_rss(edit(recorded(RSS_MULTI), relabel), include_cross=True)
    assert result.papers == [] and result.skipped == 0


def test_rss_announce_type_falls_back_to_the_description(recorded: Read) -> None:
    def drop_types(root: etree._Element) -> None:
        for item in items(root):
            remove(item.find("arxiv:announce_type", NS))  # type: ignore[arg-type]

    result = arxiv.parse_rss(edit(recorded(RSS_MULTI), drop_types), include_cross=True)
    assert [p.announce_type for p in result.papers] == ["new", "new", "cross"]


def test_rss_id_falls_back_to_the_link(recorded: Read) -> None:
    def drop_guids(root: etree._Element) -> None:
        for item in items(root):
            remove(item.find("guid"))  # type: ignore[arg-type]

    result = arxiv.parse_rss(edit(recorded(RSS_CS_LG), drop_guids))
    assert [p.id for p in result.papers] == ["2604.21952", "2604.21953", "2604.21956"]


def test_rss_bad_items_are_skipped_and_counted(recorded: Read) -> None:
    def spoil(root: etree._Element) -> None:
        first, second, _third = items(root)
        for tag in ("guid", "link", "description"):
            remove(first.find(tag))  # type: ignore[arg-type]
        second.find("title").text = " "  # type: ignore[union-attr]

    result = arxiv.parse_rss(edit(recorded(RSS_CS_LG), spoil))
    assert [p.id for p in result.papers] == ["2604.21956"]
    assert result.skipped == 2


def test_rss_a_bad_replacement_is_not_counted(recorded: Read) -> None:
    def spoil(root: etree._Element) -> None:
        replace = items(root)[3]
        remove(replace.find("title"))  # type: ignore[arg-type]
        remove(replace.find("guid"))  # type: ignore[arg-type]

    result = arxiv.parse_rss(edit(recorded(RSS_MULTI), spoil))
    assert len(result.papers) == 2 and result.skipped == 0


def test_rss_of_only_bad_items_is_an_error(recorded: Read) -> None:
    def untitle(root: etree._Element) -> None:
        for item in items(root):
            remove(item.find("title"))  # type: ignore[arg-type]

    with pytest.raises(
        SourceError, match=r"none of the 3 items is usable \(item 2604.21952 has no"
    ):
        arxiv.parse_rss(edit(recorded(RSS_CS_LG), untitle))


def test_rss_of_a_weekend_is_empty_not_an_error(recorded: Read) -> None:
    def weekend(root: etree._Element) -> None:
        for item in items(root):
            remove(item)

    assert arxiv.parse_rss(edit(recorded(RSS_CS_LG), weekend)) == arxiv.ParseResult([], 0)


def test_rss_without_channel_date_uses_the_item_date(recorded: Read) -> None:
    def undate(root: etree._Element) -> None:
        remove(root.find("channel/pubDate"))  # type: ignore[arg-type]

    papers = arxiv.parse_rss(edit(recorded(RSS_CS_LG), undate)).papers
    assert {p.published for p in papers} == {date(2026, 4, 27)}


def test_rss_authors_joined_with_and_are_split() -> None:
    assert arxiv._split_authors("A. One, B. Two and C. Three") == ["A. One", "B. Two", "C. Three"]
    assert arxiv._split_authors("A. One, B. Two, and C. Three") == ["A. One", "B. Two", "C. Three"]
    assert arxiv._split_authors("Sandra Andersen") == ["Sandra Andersen"]
    assert arxiv._split_authors("") == []


def test_an_atom_feed_is_not_rss(recorded: Read) -> None:
    with pytest.raises(SourceError, match=r"arxiv: unexpected root element <feed>, expected <rss>"):
        arxiv.parse_rss(recorded(ATOM))


def test_an_rss_without_channel_is_an_error() -> None:
    with pytest.raises(SourceError, match="RSS without a <channel>"):
        arxiv.parse_rss(b'<rss version="2.0"><item/></rss>')


@pytest.mark.parametrize(
    "raw", [b"", b"<rss><channel>", b"not xml at all", b"\xff\xfe<\x00r\x00"], ids=repr
)
def test_malformed_xml_is_a_source_error(raw: bytes) -> None:
    with pytest.raises(SourceError) as caught:
        arxiv.parse_rss(raw)
    assert caught.value.source == "arxiv"
    assert "XML" in caught.value.message


def test_an_entity_expansion_bomb_is_refused_quickly() -> None:
    lol = "".join(f'<!ENTITY lol{i} "{("&lol" + str(i - 1) + ";") * 10}">' for i in range(1, 10))
    bomb = f'<?xml version="1.0"?><!DOCTYPE rss [<!ENTITY lol0 "lol">{lol}]>'
    bomb += "<rss><channel><item><title>&lol9;</title></item></channel></rss>"
    started = time.perf_counter()
    # libxml2 may stop it first (amplification limit); otherwise the DTD is refused.
    with pytest.raises(SourceError, match="document type declaration|entity amplification"):
        arxiv.parse_rss(bomb.encode())
    assert time.perf_counter() - started < 1.0


def test_an_external_entity_is_never_read() -> None:
    xxe = (
        b'<?xml version="1.0"?><!DOCTYPE rss [<!ENTITY x SYSTEM "file:///etc/hostname">]>'
        b"<rss><channel><item><title>&x;</title></item></channel></rss>"
    )
    with pytest.raises(SourceError, match="document type declaration is refused"):
        arxiv.parse_rss(xxe)


# Atom API -----------------------------------------------------------------------------------
def test_atom_query_gives_its_five_papers(recorded: Read) -> None:
    result = arxiv.parse_atom(recorded(ATOM))

    assert result.skipped == 0
    assert [p.id for p in result.papers] == [
        "2606.13677",
        "2606.13591",
        "2606.13568",
        "2606.13515",
        "2606.13501",
    ]
    mana = result.papers[0]
    assert mana.title == "Mana: Dexterous Manipulation of Articulated Tools"
    assert mana.authors == ["Zhao-Heng Yin", "Guanya Shi", "Pieter Abbeel", "C. Karen Liu"]
    assert mana.categories == ["cs.RO", "cs.AI", "cs.CV", "cs.LG"]  # primary first
    assert "(<1 minute per tool)" in mana.abstract
    assert mana.published == date(2026, 6, 11)
    assert mana.url == "https://arxiv.org/abs/2606.13677" and mana.source == "arxiv"
    assert result.papers[2].authors == ["Snigdha Chandan Khilar"]
    assert result.papers[2].categories == ["cs.LG", "math-ph"]
    assert result.papers[3].categories == ["cs.CV", "cs.LG", "cs.RO"]
    assert len(result.papers[4].authors) == 9


def test_atom_abstract_paragraphs_are_joined(recorded: Read) -> None:
    gf_dit = arxiv.parse_atom(recorded(ATOM)).papers[4]
    assert "degraded service quality. This paper argues" in gf_dit.abstract
    assert "\n" not in gf_dit.abstract and "  " not in gf_dit.abstract


def test_atom_2016_serialisation_is_read_by_element_name(recorded: Read) -> None:
    (paper,) = arxiv.parse_atom(recorded(ATOM_2016)).papers

    assert paper.id == "cond-mat/0603029"
    assert paper.title == (
        "From stripe to checkerboard order on the square lattice in the presence "
        "of quenched disorder"
    )
    assert paper.authors == ["Adrian Del Maestro", "Bernd Rosenow", "Subir Sachdev"]
    assert paper.categories == ["cond-mat.str-el", "cond-mat.supr-con"]
    assert paper.published == date(2006, 3, 2)
    assert paper.abstract.startswith("We discuss the effects of quenched disorder")
    assert paper.url == "https://arxiv.org/abs/cond-mat/0603029"


def test_atom_error_feed_raises_arxivs_message(recorded: Read) -> None:
    with pytest.raises(SourceError) as caught:
        arxiv.parse_atom(recorded(ATOM_ERROR))
    assert str(caught.value) == "arxiv: arXiv API error: incorrect id format for abc"


def test_atom_bad_entries_are_skipped_and_counted(recorded: Read) -> None:
    def spoil(root: etree._Element) -> None:
        entries = root.findall("a:entry", NS)
        remove(entries[0].find("a:id", NS))  # type: ignore[arg-type]
        entries[1].find("a:title", NS).text = ""  # type: ignore[union-attr]

    result = arxiv.parse_atom(edit(recorded(ATOM), spoil))
    assert [p.id for p in result.papers] == ["2606.13568", "2606.13515", "2606.13501"]
    assert result.skipped == 2


def test_atom_without_entries_is_empty(recorded: Read) -> None:
    def clear(root: etree._Element) -> None:
        for entry in root.findall("a:entry", NS):
            remove(entry)

    assert arxiv.parse_atom(edit(recorded(ATOM), clear)) == arxiv.ParseResult([], 0)


def test_rss_is_not_an_atom_feed(recorded: Read) -> None:
    with pytest.raises(
        SourceError, match=r"unexpected root element <rss>, expected an Atom <feed>"
    ):
        arxiv.parse_atom(recorded(RSS_CS_LG))


def test_a_feed_in_another_namespace_is_not_atom() -> None:
    with pytest.raises(SourceError, match="unexpected root element <feed>"):
        arxiv.parse_atom(b'<feed xmlns="urn:something-else"><entry/></feed>')


def test_search_query_covers_the_days_and_categories() -> None:
    query = arxiv.search_query(date(2026, 6, 1), date(2026, 6, 3), ["cs.LG", "stat.ML"])
    assert query == "submittedDate:[202606010000 TO 202606032359] AND (cat:cs.LG OR cat:stat.ML)"
    assert arxiv.search_query(date(2026, 6, 1), date(2026, 6, 1), []) == (
        "submittedDate:[202606010000 TO 202606012359]"
    )
