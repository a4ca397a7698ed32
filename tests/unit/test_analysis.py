"""Text normalization shared by papers and profiles."""

from __future__ import annotations

import pytest

from newsletter.analysis import (
    CONCEPT,
    PLAIN,
    Analyzer,
    fold,
    inflection,
    mine_acronyms,
    name_words,
    names_match,
    phrase_spans,
    split_words,
    stem,
)

LLM = CONCEPT + "llm"


def corpus_analyzer(*texts: str) -> Analyzer:
    """An analyzer that knows the words of these texts and the acronyms they define."""
    vocabulary = {w.folded for t in texts for w in split_words(t)}
    return Analyzer(vocabulary, [pair for t in texts for pair in mine_acronyms(t)])


def terms_of(analyzer: Analyzer, text: str) -> set[str]:
    return {t.term for t in analyzer.tokens(text)}


def test_fold_handles_case_and_unicode_forms() -> None:
    assert fold("LLM") == "llm"
    assert fold("\uff2c\uff2c\uff2d") == "llm"  # fullwidth
    assert fold("\ufb01ne-tuning") == "fine-tuning"  # the "fi" ligature
    assert fold("Stra\u00dfe") == "strasse"
    assert fold("Na\u00efve") == fold("naive") == "naive"
    assert fold("\u65e5\u672c\u8a9e") == "\u65e5\u672c\u8a9e"  # no accents to drop


def test_words_keep_their_character_spans_and_punctuation_gaps() -> None:
    text = "Graph  neural\nnetworks. Semi-supervised (GNNs)"
    words = split_words(text)
    assert [text[w.start : w.end] for w in words] == [
        "Graph",
        "neural",
        "networks",
        "Semi",
        "supervised",
        "GNNs",
    ]
    assert [w.gap for w in words] == [False, False, False, True, False, True]


def test_stems_make_plural_and_singular_equal_and_are_cached() -> None:
    assert stem("models") == stem("model") == "model"
    assert stem("networks") == stem("network")
    assert stem("models") is stem("models")


@pytest.mark.parametrize(
    ("word", "base"),
    [
        ("classes", "class"),
        ("models", "model"),
        ("studies", "study"),
        ("patches", "patch"),
        ("supervision", "supervision"),
        ("supervised", "supervised"),
        ("bias", "bias"),
        ("corpus", "corpus"),
    ],
)
def test_inflection_drops_plurals_only(word: str, base: str) -> None:
    assert inflection(word) == base


@pytest.mark.parametrize("word", ["LLM", "LLMs", "llm", "llms", "large language model"])
def test_curated_acronyms_and_expansions_meet(word: str) -> None:
    assert PLAIN.query_terms(word) == (LLM,)
    assert PLAIN.query_terms("Large Language Models") == (LLM,)


def test_an_acronym_inside_a_longer_keyword() -> None:
    assert PLAIN.query_terms("large language model agents") == (LLM, "agent")
    assert PLAIN.query_terms("LLM agents") == (LLM, "agent")


def test_capitalized_plural_acronyms_lose_their_s() -> None:
    assert PLAIN.query_terms("GANs") == PLAIN.query_terms("GAN")
    assert PLAIN.query_terms("ViTs") == PLAIN.query_terms("vision transformer")
    assert PLAIN.query_terms("LLaMAs") == PLAIN.query_terms("LLaMA") == ("llama",)
    assert PLAIN.query_terms("NeurIPS") == PLAIN.query_terms("neurips")  # a capital S stays


def test_hyphens_and_spaces_are_the_same() -> None:
    assert PLAIN.query_terms("semi-supervised") == PLAIN.query_terms("semi supervised")
    assert PLAIN.query_terms("Semi\u2010Supervised") == PLAIN.query_terms("semi supervised")


def test_concatenations_join_when_the_corpus_writes_the_word_whole() -> None:
    analyzer = corpus_analyzer("We train semisupervised models.", "A semi-supervised method.")
    joined = analyzer.query_terms("semisupervised")
    assert analyzer.query_terms("semi-supervised") == joined
    assert analyzer.query_terms("semi supervised") == joined
    # Every written form in a paper carries the joined term.
    for text in ("semisupervised", "semi-supervised", "semi supervised", "Semi Supervised"):
        assert joined[0] in terms_of(analyzer, f"A {text} method.")


def test_concatenations_split_when_the_corpus_only_writes_the_parts() -> None:
    analyzer = corpus_analyzer("A semi-supervised method.")
    assert analyzer.query_terms("semisupervised") == analyzer.query_terms("semi supervised")


def test_compounds_plural_forms_join_too() -> None:
    analyzer = corpus_analyzer("A new dataset.", "Two data sets.")
    assert analyzer.query_terms("data set") == analyzer.query_terms("datasets") == ("dataset",)


def test_papers_carry_the_acronym_concept_for_both_forms() -> None:
    text = "Large language models (LLMs) are big. We study an LLM here."
    tokens = [t for t in PLAIN.tokens(text) if t.term == LLM]
    assert [text[t.start : t.end] for t in tokens] == [
        "Large language models",
        "LLMs",
        "LLM",
    ]


def test_acronyms_are_mined_from_abstracts() -> None:
    text = (
        "We propose Class-Aware Feature Alignment (CAFA) for test-time adaptation; "
        "a chain-of-thought (CoT) and (e.g. this) are not all acronyms."
    )
    assert mine_acronyms(text) == [
        ("cafa", "Class-Aware Feature Alignment"),
        ("cot", "chain-of-thought"),
    ]
    analyzer = corpus_analyzer(text)
    concept = analyzer.query_terms("CAFA")
    assert concept == analyzer.query_terms("class aware feature alignment")
    assert concept[0].startswith(CONCEPT)
    assert concept[0] in terms_of(analyzer, "CAFA improves accuracy.")


def test_an_acronym_with_two_meanings_keeps_each_paper_s_own() -> None:
    first = "Continual learning (CL) forgets. CL is hard."
    second = "Contrastive learning (CL) aligns views."
    analyzer = corpus_analyzer(first, second)
    continual = analyzer.query_terms("continual learning")
    assert continual != analyzer.query_terms("contrastive learning")
    assert analyzer.query_terms("CL") == ("cl",)  # ambiguous: only the letters match
    local = analyzer.local_acronyms(mine_acronyms(first))
    paper_terms = {t.term for t in analyzer.tokens("CL is hard.", local)}
    assert continual[0] in paper_terms


def test_phrases_need_adjacency_and_stop_at_punctuation() -> None:
    by_term: dict = {}
    for token in PLAIN.tokens("graph neural network; graph, neural network"):
        by_term.setdefault(token.term, []).append(token)
    assert phrase_spans(by_term, ("graph", "neural", "network")) == [(0, 2)]
    assert phrase_spans(by_term, ("neural", "network")) == [(1, 2), (6, 7)]


def test_names_fold_accents_and_match_initials() -> None:
    assert name_words("J\u00fcrgen  Schmidhuber") == ("jurgen", "schmidhuber")
    author = name_words("Geoffrey E. Hinton")
    assert names_match(("hinton",), author)
    assert names_match(("g", "hinton"), author)
    assert names_match(("geoffrey", "hinton"), author)
    assert not names_match(("yann", "hinton"), author)
    assert not names_match(("geoffrey",), author)
