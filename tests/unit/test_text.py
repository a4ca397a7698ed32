"""TeX in titles and abstracts rendered as readable Unicode, on real abstracts with markup."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from newsletter.sources import arxiv, hf_daily
from newsletter.text import tex_to_text

FIXTURES = Path(__file__).parents[1] / "fixtures"
ABSTRACTS = {
    a["id"]: a["abstract"] for a in json.loads((FIXTURES / "tex/abstracts.json").read_text())
}


def test_times_and_micro_in_an_arxiv_abstract_and_a_bare_percent_kept():
    text = tex_to_text(ABSTRACTS["http://arxiv.org/abs/2606.13501v1"])
    assert "throughput by up to 6.01×, reduces mean latency by up to 95%, low" in text
    assert "approximately 60 μs." in text
    assert "$" not in text and "\\" not in text


def test_hugging_face_braced_names_read_as_the_authors_wrote_them():
    text = tex_to_text(ABSTRACTS["2606.11409"])
    assert "varies by up to ~5× across harm categories" in text
    assert "{approx}" not in text and "{times}" not in text


def test_textbf_escaped_percent_and_textcolor_in_a_real_abstract():
    text = tex_to_text(ABSTRACTS["2309.14348"])
    assert "we introduce a Robustly Aligned LLM (RA-LLM)" in text
    assert "from nearly 100% to around 10% or less." in text
    assert text.endswith(
        "WARNING: This paper contains unsafe model responses. Reader discretion is advised."
    )
    assert "red" not in text.split("less.")[1]  # the colour's name is not text
    assert "{" not in text and "\\" not in text


@pytest.mark.parametrize(
    ("tex", "shown"),
    [
        ("$\\times$", "×"),
        ("$\\sim$", "~"),
        ("\\textcolor{red}{x}", "x"),
        ("$O(n^2)$", "O(n²)"),
        ("a \\emph{new} view", "a new view"),
        ("costs 100\\%", "costs 100%"),
        ("$x_{10}$", "x₁₀"),
        ("$\\alpha$-divergence", "α-divergence"),
    ],
)
def test_issue_cases(tex, shown):
    assert tex_to_text(tex) == shown


@pytest.mark.parametrize(
    "plain",
    ["Label noise, revisited", "A < B & C", "95% of {Set} members", "C++ and C# compared"],
)
def test_text_without_markup_is_unchanged(plain):
    assert tex_to_text(plain) == plain


def test_unbalanced_markup_keeps_the_words():
    assert "words" in tex_to_text("broken \\textbf{words and $x")


def test_sources_store_clean_text_so_ranking_sees_words():
    papers = arxiv.parse_atom((FIXTURES / "sources/arxiv_atom_query.xml").read_bytes()).papers
    gf = next(p for p in papers if p.id == "2606.13501")
    assert "6.01×" in gf.abstract and "$" not in gf.abstract
    hf = hf_daily.parse((FIXTURES / "sources/hf_daily_papers_2026-06-12.json").read_bytes()).papers
    paper = next(p for p in hf if p.id == "2606.11409")
    assert "~5×" in paper.abstract
