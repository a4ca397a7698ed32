"""Property: whatever happens to a recorded response, parsing returns papers or SourceError."""

from __future__ import annotations

import html
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from lxml import etree

from newsletter.sources import ParseResult, SourceError, arxiv, hf_daily
from newsletter.sources.base import arxiv_id

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "sources"
Parser = Callable[[bytes], ParseResult]


def _small_page() -> bytes:
    # The page parser is the slowest; three recorded entries keep the examples many and quick.
    entries = json.loads((FIXTURES / "hf_daily_papers_2026-06-12.json").read_bytes())[:3]
    props = html.escape(json.dumps({"dailyPapers": entries}), quote=True)
    return (
        '<!doctype html><html><body><div class="SVELTE_HYDRATER contents" '
        f'data-target="DailyPapers" data-props="{props}"></div></body></html>'
    ).encode()


def _error_body() -> bytes:
    return json.loads((FIXTURES / "arxiv_atom_error_400.golden.json").read_bytes())["body"].encode()


RECORDED = {
    "hf_json": (FIXTURES / "hf_daily_papers_2026-06-12.json").read_bytes(),
    "hf_page": _small_page(),
    "rss_cs_lg": (FIXTURES / "arxiv_rss_cs_LG.xml").read_bytes(),
    "rss_multi": (FIXTURES / "arxiv_rss_multi_category.xml").read_bytes(),
    "atom": (FIXTURES / "arxiv_atom_query.xml").read_bytes(),
    "atom_2016": (FIXTURES / "arxiv_atom_query_legacy_2016.xml").read_bytes(),
    "atom_error": _error_body(),
}
PARSERS: dict[str, Parser] = {
    "hf_json": hf_daily.parse,
    "hf_page": hf_daily.parse_page,
    "rss_cs_lg": arxiv.parse_rss,
    "rss_multi": lambda raw: arxiv.parse_rss(raw, include_cross=True),
    "atom": arxiv.parse_atom,
    "atom_2016": arxiv.parse_atom,
    "atom_error": arxiv.parse_atom,
}
XML_NAMES = ["rss_cs_lg", "rss_multi", "atom", "atom_2016", "atom_error"]
PROPERTY = settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def parse_only_source_errors(parser: Parser, raw: bytes) -> None:
    """The property itself: papers that make sense, or SourceError, never anything else."""
    try:
        result = parser(raw)
    except SourceError as exc:
        assert exc.source in ("hf_daily", "arxiv") and exc.message
        return
    assert isinstance(result, ParseResult) and result.skipped >= 0
    for paper in result.papers:
        assert paper.title and paper.title == paper.title.strip()
        assert arxiv_id(paper.id) == paper.id


# Byte-level damage --------------------------------------------------------------------------
position = st.floats(min_value=0, max_value=1, exclude_max=True)
mutation = st.one_of(
    st.tuples(st.just("truncate"), position, st.just(b"")),
    st.tuples(st.just("flip"), position, st.binary(min_size=1, max_size=1)),
    st.tuples(st.just("insert"), position, st.binary(min_size=1, max_size=8)),
    st.tuples(st.just("delete"), position, st.binary(min_size=1, max_size=64)),
)


def damage(raw: bytes, mutations: list[tuple[str, float, bytes]]) -> bytes:
    data = bytearray(raw)
    for kind, where, extra in mutations:
        at = int(where * len(data)) if data else 0
        if kind == "truncate":
            del data[at:]
        elif kind == "flip" and at < len(data):
            data[at] ^= extra[0] or 0xFF
        elif kind == "insert":
            data[at:at] = extra
        elif kind == "delete":
            del data[at : at + len(extra)]  # the length of `extra` is the span removed
    return bytes(data)


@PROPERTY
@given(name=st.sampled_from(sorted(RECORDED)), mutations=st.lists(mutation, min_size=1, max_size=4))
def test_damaged_bytes_raise_nothing_but_source_error(
    name: str, mutations: list[tuple[str, float, bytes]]
) -> None:
    parse_only_source_errors(PARSERS[name], damage(RECORDED[name], mutations))


@PROPERTY
@given(name=st.sampled_from(sorted(RECORDED)), parser=st.sampled_from(sorted(PARSERS)))
def test_any_recording_given_to_any_parser_raises_nothing_but_source_error(
    name: str, parser: str
) -> None:
    parse_only_source_errors(PARSERS[parser], RECORDED[name])


# Structural damage --------------------------------------------------------------------------
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=6,
)


def json_slots(value: Any) -> list[tuple[Any, Any]]:
    """Every (container, key or index) in a JSON document."""
    slots: list[tuple[Any, Any]] = []
    stack = [value]
    while stack:
        node = stack.pop()
        pairs = (
            node.items()
            if isinstance(node, dict)
            else enumerate(node)
            if isinstance(node, list)
            else ()
        )
        for key, child in pairs:
            slots.append((node, key))
            stack.append(child)
    return slots


@PROPERTY
@given(data=st.data(), as_page=st.booleans())
def test_deleted_or_replaced_json_parts_raise_nothing_but_source_error(
    data: st.DataObject, as_page: bool
) -> None:
    entries = json.loads(RECORDED["hf_json"])[:4]
    for _ in range(data.draw(st.integers(min_value=1, max_value=5))):
        slots = json_slots(entries)
        container, key = data.draw(st.sampled_from(slots))
        if data.draw(st.booleans()):
            del container[key]
        else:
            container[key] = data.draw(json_values)
    if as_page:
        props = html.escape(json.dumps({"dailyPapers": entries}), quote=True)
        raw = f'<div data-target="DailyPapers" data-props="{props}"></div>'.encode()
        parse_only_source_errors(hf_daily.parse_page, raw)
    else:
        parse_only_source_errors(hf_daily.parse, json.dumps(entries).encode())


@PROPERTY
@given(data=st.data(), name=st.sampled_from(XML_NAMES))
def test_deleted_or_altered_xml_elements_raise_nothing_but_source_error(
    data: st.DataObject, name: str
) -> None:
    root = etree.fromstring(RECORDED[name])
    for _ in range(data.draw(st.integers(min_value=1, max_value=6))):
        elements = [e for e in root.iter() if e is not root and isinstance(e.tag, str)]
        if not elements:
            break
        element = data.draw(st.sampled_from(elements))
        action = data.draw(st.sampled_from(["delete", "text", "empty", "attributes"]))
        if action == "delete":
            parent = element.getparent()
            assert parent is not None
            parent.remove(element)
        elif action == "text":
            element.text = data.draw(
                st.text(
                    alphabet=st.characters(codec="utf-8", exclude_categories=["Cs", "Cc"]),
                    max_size=40,
                )
            )
        elif action == "empty":
            element.text = None
            for child in list(element):
                element.remove(child)
        else:
            element.attrib.clear()
    parse_only_source_errors(PARSERS[name], etree.tostring(root))
