"""The learned part's text analysis: many texts read at once (TermCounts, TextSpace) give
exactly the term counts and tf-idf vectors that reading them one word at a time gives."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp

from newsletter.paper import Paper, read_jsonl
from newsletter.ranking import feedback
from newsletter.ranking.feedback import TextSpace
from newsletter.ranking.terms import TermCounts, Vocabulary, text_terms

RELEVANCE = Path(__file__).resolve().parents[1] / "fixtures" / "relevance"

# What the analysis must keep doing: stems and curated acronyms, numbers and stopwords dropped
# (a pair spans them), no pair across punctuation nor from one part (title) to the next.
TRICKY = [
    ("Graph Neural Networks for the LLMs: semi-supervised, 3 models's   data-sets.", "Models"),
    ("", ""),
    ("...", "(a) the of"),
    ("Naïve Bayes — “quoted” words’ apostrophes… and x² ≈ 5×", "don't stop; it's fine"),
    ("ViT\tand\nGANs\u00a0with\u2009thin spaces", "tab\x1fseparated_words under_score"),
    ("one", ""),
]


@pytest.fixture(scope="module")
def papers() -> list[Paper]:
    return read_jsonl((RELEVANCE / "papers.jsonl").read_text(encoding="utf-8"))


def read_at_once(texts: Sequence[tuple[str, ...]]) -> list[list[tuple[str, int]]]:
    vocabulary = Vocabulary()
    counts = TermCounts.of(vocabulary, texts)
    terms = vocabulary.strings(counts.keys.tolist())
    tf = counts.tf.tolist()
    bounds = counts.indptr.tolist()
    return [
        list(zip(terms[a:b], tf[a:b], strict=True))
        for a, b in zip(bounds, bounds[1:], strict=False)
    ]


def test_one_texts_terms_are_its_stems_and_their_pairs():
    assert dict(text_terms(*TRICKY[0])) == {
        "graph": 1,
        "neural": 1,
        "network": 1,
        "llm": 1,
        "graph neural": 1,
        "neural network": 1,
        "network llm": 1,
        "semi": 1,
        "supervis": 1,
        "semi supervis": 1,
        "model": 2,
        "data": 1,
        "set": 1,
        "model data": 1,
        "data set": 1,
    }


def test_many_texts_at_once_count_as_one_at_a_time_in_the_same_order(papers):
    queries = json.loads((RELEVANCE / "queries.json").read_text(encoding="utf-8"))
    texts = [(p.title, p.abstract) for p in papers] + TRICKY + [(q["query"],) for q in queries]
    fast = read_at_once(texts)
    assert fast == [list(text_terms(*parts).items()) for parts in texts]
    assert sum(map(len, fast)) > 10_000  # the fixture papers, not only the short texts


def straightforward(window: Sequence[Paper], others: Sequence[tuple[str, ...]]):
    """The window's and other texts' tf-idf rows, built term by term from `text_terms`."""
    counts = [text_terms(p.title, p.abstract) for p in window]
    columns: dict[str, int] = {}
    for c in counts:
        for term in c:
            columns.setdefault(term, len(columns))
    df = np.zeros(len(columns))
    for c in counts:
        for term in c:
            df[columns[term]] += 1
    n = len(window)
    idf = np.log((1.0 + n) / (1.0 + df)) + 1.0

    def rows(of: Sequence[Mapping[str, int]]) -> np.ndarray:
        out = np.zeros((len(of), len(columns)))
        for i, c in enumerate(of):
            weights = {
                t: (1.0 + math.log(k)) * (idf[columns[t]] if t in columns else math.log(1 + n) + 1)
                for t, k in c.items()
            }
            norm = math.sqrt(sum(w * w for w in weights.values())) or 1.0
            for t, w in weights.items():
                if t in columns:
                    out[i, columns[t]] = w / norm
        return out

    return columns, rows(counts), rows([text_terms(*parts) for parts in others])


def assert_rows(matrix: sp.csr_matrix, expected: np.ndarray) -> None:
    assert matrix.shape == expected.shape
    np.testing.assert_allclose(matrix.toarray(), expected, rtol=1e-6, atol=1e-7)
    assert np.array_equal(matrix.toarray() != 0, expected != 0)


def assert_space(window: Sequence[Paper], outside: Sequence[Paper]) -> TextSpace:
    """The space of `window` and the rows of `outside` are those built term by term."""
    columns, expected_window, expected_outside = straightforward(
        window, [(p.title, p.abstract) for p in outside]
    )
    space = TextSpace(window)
    assert list(space.columns.items()) == list(columns.items())
    assert_rows(space.matrix, expected_window)
    assert_rows(space.vectors(outside), expected_outside)
    return space


def test_the_window_and_other_papers_are_the_vectors_read_term_by_term(papers):
    window, outside = papers[:90], papers[90:]
    space = assert_space(window, outside)
    _, _, expected_outside = straightforward(window, [(p.title, p.abstract) for p in outside])
    again = space.vectors(outside[::-1])  # kept rows, in the order asked
    assert_rows(again, expected_outside[::-1])


def test_profile_words_are_texts_read_as_a_paper_is(papers):
    texts = ["deep metric learning", "", "LLMs, -medical; graph neural networks", "class", "zzz"]
    _, _, expected = straightforward(papers, [(t,) for t in texts])
    space = TextSpace(papers)
    assert_rows(space.text_vectors(texts), expected)
    assert not space.text_vectors(["", "zzz"]).nnz  # no words, or none the window has


def test_a_space_that_forgets_what_it_kept_reads_the_same_rows(papers, monkeypatch):
    window, outside = papers[:60], papers[60:]
    _, _, expected = straightforward(window, [(p.title, p.abstract) for p in outside])
    monkeypatch.setattr(feedback, "COUNTS_KEPT", 10)
    space = TextSpace(window)
    for start in range(0, len(outside), 25):  # past COUNTS_KEPT: kept rows and new terms go
        assert_rows(space.vectors(outside[start : start + 25]), expected[start : start + 25])
    assert len(space._kept) <= 10 + 25


def test_a_term_with_a_space_in_it_counts_as_the_pair_it_spells(papers):
    """U+FDFB is one word whose term is two words: it is the same term as the pair of those
    two words written out, in the window and in papers from outside alike."""
    ligature = Paper(id="x1", title="جل جلاله ﷻ", abstract="graph neural networks", url="")
    plain = Paper(id="x2", title="جل جلاله", abstract="metric learning", url="")
    assert_space([ligature, *papers[:40]], [plain])
    assert_space([plain, *papers[:40]], [ligature])
    assert dict(text_terms(ligature.title))["جل جلاله"] == 2


def test_an_empty_window_has_no_columns_and_every_term_is_unseen():
    space = TextSpace([])
    other = Paper(id="y", title="graph neural networks", abstract="", url="")
    assert space.matrix.shape == (0, 0)
    assert space.vectors([other]).shape == (1, 0)
    assert space.text_vectors(["graph"]).shape == (1, 0)
