"""Ranking papers against profiles: matching, scores, explanations, top-k, many at once."""

from __future__ import annotations

import json
import pickle
from datetime import UTC, date, datetime
from pathlib import Path

import numpy as np
import pytest

from newsletter.paper import Paper, read_jsonl
from newsletter.profile import parse_profile
from newsletter.ranking import (
    COVERAGE_FLOOR,
    K1,
    PARTIAL_COVER,
    PARTIAL_WORDS,
    Match,
    PaperIndex,
    format_rank_json,
    rank_papers,
    snippet_text,
)

RELEVANCE = Path(__file__).resolve().parents[1] / "fixtures" / "relevance" / "papers.jsonl"


def paper(pid: str, title: str, abstract: str = "", **fields: object) -> Paper:
    return Paper(id=pid, title=title, abstract=abstract, **fields)  # type: ignore[arg-type]


def ids(matches: list[Match]) -> list[str]:
    return [m.paper_id for m in matches]


def rank(papers: list[Paper], profile: str, **kw: object) -> list[Match]:
    return rank_papers(papers, profile, **kw)


@pytest.fixture(scope="module")
def relevance() -> list[Paper]:
    return read_jsonl(RELEVANCE.read_text(encoding="utf-8"))


# Matching ----------------------------------------------------------------------------------

GNN = paper(
    "gnn",
    "Learning on molecules",
    "We train a graph neural network on molecular graphs and compare it with baselines.",
)
SCATTERED = paper(
    "scattered",
    "Sparse signals",
    "The graph is sparse. A neural decoder helps. The network stays small.",
)
OTHER = paper("other", "Protein design", "Language models design proteins.")


@pytest.mark.parametrize("profile", ['"graph neural network"', "graph neural network", "GNNs"])
def test_a_phrase_beats_the_same_words_apart(profile: str) -> None:
    found = rank([SCATTERED, GNN, OTHER], profile)
    assert ids(found)[0] == "gnn"
    assert "other" not in ids(found)


NOISY = paper("noisy", "Robust training", "We study label noise in large datasets.")
APART = paper("apart", "Data cleaning", "Each label is checked twice. Noise is then removed.")


def test_quoted_phrases_need_adjacency_unquoted_words_do_not() -> None:
    assert ids(rank([APART, NOISY], '"label noise"')) == ["noisy"]
    loose = rank([APART, NOISY], "label noise")
    assert ids(loose) == ["noisy", "apart"]
    assert loose[0].score > 2 * loose[1].score


@pytest.mark.parametrize(
    "profile", ["semi-supervised", '"semi supervised"', "semisupervised", "Semi-Supervised"]
)
def test_hyphen_space_and_concatenation_variants_match_each_other(profile: str) -> None:
    papers = [
        paper("hyphen", "A semi-supervised method"),
        paper("space", "A semi supervised method"),
        paper("joined", "A semisupervised method"),
        paper("none", "A supervised method"),
    ]
    assert sorted(ids(rank(papers, profile))) == ["hyphen", "joined", "space"]


@pytest.mark.parametrize(
    "profile", ["LLM", "LLMs", "llm", "large language model", "Large Language Models"]
)
def test_acronyms_and_expansions_match_each_other(profile: str) -> None:
    papers = [
        paper("expansion", "Scaling large language models"),
        paper("plural", "Why LLMs hallucinate"),
        paper("defined", "Agents", "Large language models (LLMs) act. The LLM plans."),
        paper("none", "Language of models"),
    ]
    assert sorted(ids(rank(papers, profile))) == ["defined", "expansion", "plural"]


def test_case_and_plural_do_not_matter() -> None:
    papers = [
        paper("a", "Diffusion Models"),
        paper("b", "a diffusion model"),
        paper("c", "DIFFUSION"),
    ]
    assert sorted(ids(rank(papers, '"Diffusion model"'))) == ["a", "b"]
    for profile in ("diffusion models", "DIFFUSION MODELS"):
        found = rank(papers, profile)
        # "c" has one of the two words, the commoner one here: under PARTIAL_COVER.
        assert sorted(ids(found)) == ["a", "b"]


def test_an_entry_matches_in_part_by_the_share_of_its_idf_it_has() -> None:
    """A paper with only some words of an unquoted entry matches, the weaker the rarer the
    words it lacks, if it has at least two of them carrying half the entry's idf: one word of
    it, or its common words alone, do not match."""
    papers = [
        paper("all", "Protein diffusion models"),
        paper("rare", "Diffusion of proteins"),  # lacks "models", the commonest
        paper("one", "Protein folding"),  # one word of three
        paper("common", "Diffusion models for code"),  # two words, but the common ones
        paper("code", "Models for code"),
        paper("heat", "Diffusion of heat"),
        paper("gas", "Diffusion in gases"),
        *[paper(f"m{i}", f"Models of kind {i}") for i in range(8)],
    ]
    index = PaperIndex(papers)
    profile = parse_profile("protein diffusion models")
    protein, diffusion, models = (index.idf(t) for t in index.analyzer.bag_terms(profile.text))
    total = protein + diffusion + models
    assert (diffusion + models) / total < PARTIAL_COVER <= (protein + diffusion) / total
    found = index.rank(profile, top_k=20)
    assert ids(found) == ["all", "rare"]
    assert found[0].score > 2 * found[1].score
    rare = found[1]
    assert rare.matched == ("protein + diffusion",) and rare.where == {
        "protein + diffusion": ("title",)
    }
    assert rare.apart == ()
    assert PARTIAL_WORDS == 2


def test_a_word_itself_beats_its_derivations_but_not_its_plural() -> None:
    papers = [
        paper("derived", "Weakly supervised detection"),
        paper("own", "Weak supervision for detection"),
        paper("plural", "Weak supervisions for detection"),
    ]
    found = rank(papers, "supervision")
    assert ids(found) == ["own", "plural", "derived"]
    assert found[0].score == found[1].score
    assert rank(papers, "supervised")[0].paper_id == "derived"


def test_acronyms_mined_from_abstracts_match_their_long_form() -> None:
    papers = [
        paper(
            "defines", "Test-time adaptation", "We propose Class-Aware Feature Alignment (CAFA)."
        ),
        paper("uses", "Better CAFA", "CAFA helps."),
    ]
    assert sorted(ids(rank(papers, "class aware feature alignment"))) == ["defines", "uses"]


def test_exclusions_remove_papers() -> None:
    papers = [
        paper("med", "Vision for medical imaging"),
        paper("fold", "Vision and protein folding"),
        paper("apart", "Vision: protein design, folding later"),
        paper("plain", "Vision transformers"),
    ]
    assert sorted(ids(rank(papers, "vision, -medical"))) == ["apart", "fold", "plain"]
    assert sorted(ids(rank(papers, 'vision, -"protein folding"'))) == ["apart", "med", "plain"]


def test_author_and_category_only_profiles_select() -> None:
    papers = [
        paper("a", "One", authors=["Geoffrey E. Hinton"], categories=["cs.LG"]),
        paper("b", "Two", authors=["Yann LeCun"], categories=["cs.CV", "cs.LG"]),
        paper("c", "Three", authors=["Ada Lovelace"], categories=["math.CO"]),
    ]
    assert ids(rank(papers, "author:G. Hinton")) == ["a"]
    assert sorted(ids(rank(papers, "cat:cs.LG"))) == ["a", "b"]
    assert sorted(ids(rank(papers, "cat:cs"))) == ["a", "b"]
    # Beside an author, categories only steer: "c" is in math but not by LeCun.
    assert ids(rank(papers, 'author:"yann lecun", cat:math')) == ["b"]


def test_categories_steer_a_keyword_profile_without_selecting() -> None:
    papers = [
        paper("lg", "Diffusion models", categories=["cs.LG"]),
        paper("cv", "Diffusion models", categories=["cs.CV"]),
        paper("off", "Protein design", categories=["cs.LG"]),
    ]
    found = rank(papers, "diffusion, cat:cs.LG")
    assert ids(found) == ["lg", "cv"]
    assert found[1].score == pytest.approx(found[0].score * 0.7, rel=1e-3)


def test_an_author_entry_selects_beside_keywords() -> None:
    papers = [
        paper("by", "Capsules", authors=["Geoffrey Hinton"]),
        paper("about", "Diffusion models"),
    ]
    assert sorted(ids(rank(papers, "diffusion, author:hinton"))) == ["about", "by"]


# Scores ----------------------------------------------------------------------------------------


def test_one_title_mention_of_a_one_entry_profile_scores_as_documented() -> None:
    (found,) = rank([paper("a", "Diffusion for robots")], "diffusion")
    strength = 3.0 / (3.0 + K1)  # title weight 3, average length, no abstract
    assert found.score == pytest.approx(
        100 * (COVERAGE_FLOOR + (1 - COVERAGE_FLOOR) * strength), abs=0.01
    )


def test_covering_more_entries_scores_higher() -> None:
    papers = [paper("one", "Diffusion for robots"), paper("two", "Diffusion for robots and LLMs")]
    found = rank(papers, "diffusion, LLM, protein")
    assert ids(found) == ["two", "one"]


def test_scores_stay_within_0_and_100_and_come_best_first(relevance: list[Paper]) -> None:
    index = PaperIndex(relevance)
    for text in (
        "class",
        "supervision^10, class^0.1",
        "learning, models, data",
        "author:x, cat:y, z",
    ):
        found = index.rank(parse_profile(text), top_k=50)
        assert all(0 < m.score <= 100 for m in found)
        assert [m.score for m in found] == sorted((m.score for m in found), reverse=True)


def test_popularity_and_recency_break_ties() -> None:
    twins = [
        paper("old", "Diffusion", published=date(2026, 5, 1), upvotes=40),
        paper("new", "Diffusion", published=date(2026, 6, 11), upvotes=40),
        paper("liked", "Diffusion", published=date(2026, 6, 11), upvotes=90),
        paper("plain", "Diffusion", published=date(2026, 6, 11), upvotes=0),
    ]
    now = datetime(2026, 6, 12, tzinfo=UTC)
    found = rank(twins, "diffusion", now=now)
    assert ids(found) == ["liked", "new", "old", "plain"]
    assert found[0].score - found[-1].score < 6  # a tie-breaker, not a ranking signal
    flat = rank(twins, "diffusion", now=now, popularity_weight=0.0)
    assert ids(flat)[-1] == "old"


def test_exact_ties_keep_a_fixed_order_whatever_k() -> None:
    twins = [paper(f"p{i}", "Diffusion") for i in range(12)]
    index = PaperIndex(twins)
    profile = parse_profile("diffusion")
    everything = ids(index.rank(profile, top_k=12))
    for k in range(1, 12):
        assert ids(index.rank(profile, top_k=k)) == everything[:k]


# Top-k, exclusions, min score ------------------------------------------------------------------


def test_top_k_exclude_ids_and_min_score_are_respected(relevance: list[Paper]) -> None:
    index = PaperIndex(relevance)
    profile = parse_profile("class")
    best = index.rank(profile, top_k=20)
    assert len(best) == 20
    assert ids(index.rank(profile, top_k=5)) == ids(best)[:5]
    skipped = frozenset(ids(best)[:3])
    assert ids(index.rank(profile, top_k=5, exclude_ids=skipped)) == ids(best)[3:8]
    floor = best[10].score
    assert all(m.score >= floor for m in index.rank(profile, top_k=50, min_score=floor))
    assert index.rank(profile, top_k=0) == []


def test_a_profile_matching_nothing_gets_nothing() -> None:
    assert rank([GNN], "quantum chromodynamics") == []
    assert PaperIndex([]).rank(parse_profile("anything")) == []


def test_duplicate_paper_ids_count_once() -> None:
    assert ids(rank([GNN, GNN, SCATTERED], "graph")) == ["gnn", "scattered"]


# Many profiles at once ----------------------------------------------------------------------


def test_rank_many_equals_rank_for_each_profile(relevance: list[Paper]) -> None:
    texts = [
        "class",
        "supervision",
        "Class",  # equal to the first, written differently
        "class",  # the same text again
        "knowledge distillation, -diffusion",
        'self-supervised learning^2, "contrastive"',
        "large language models",
        "LLM, vision-language models, prompt",
        "continual learning, catastrophic forgetting^3, -replay",
        "author:nobody, cat:cs.LG",
        "zero-shot, few-shot, open vocabulary, segmentation",
        "supervised, prompts",  # same stems as the next, different words: scored apart
        "supervision, prompt",
    ]
    profiles = [parse_profile(t) for t in texts]
    index = PaperIndex(relevance)
    top_k = [5, 10, 3, 7, 10, 10, 4, 10, 10, 10, 8, 10, 10]
    excluded = [
        frozenset({"seed-855f81cc1f", "unknown"}) if i % 2 else frozenset() for i in range(13)
    ]
    many = index.rank_many(profiles, top_k=top_k, min_score=5.0, exclude_ids=excluded, block_size=3)
    for profile, k, skip, got in zip(profiles, top_k, excluded, many, strict=True):
        assert got == index.rank(profile, top_k=k, min_score=5.0, exclude_ids=skip)
        assert not skip & set(ids(got))
        assert len(got) <= k
    assert many[2][0].matched == ("Class",)  # labels are each subscriber's own
    assert many[0][0].matched == ("class",)


def test_huge_indexes_score_the_same_with_sparse_matrices(relevance: list[Paper]) -> None:
    from newsletter.ranking.scoring import _Plan

    index = PaperIndex(relevance)
    profiles = [parse_profile(t) for t in ("class, -diffusion", "LLM, cat:cs.LG", "supervision")]
    dense, sparse = _Plan(index, profiles), _Plan(index, profiles, dense_limit=0)
    assert isinstance(dense.values, np.ndarray) and not isinstance(sparse.values, np.ndarray)
    assert np.allclose(dense.scores(0, 3), sparse.scores(0, 3))


def test_rank_many_checks_its_arguments() -> None:
    index = PaperIndex([GNN])
    with pytest.raises(ValueError, match="one value per profile"):
        index.rank_many([parse_profile("graph")], top_k=[1, 2])
    assert index.rank_many([]) == []


# Explanations -----------------------------------------------------------------------------


EXPLAINED = paper(
    "x",
    "Diffusion policies for robots on Mars",
    "We study <b>diffusion</b> models & robot learning. Large language models (LLMs) plan; "
    "diffusion executes.",
    keywords=["diffusion policy", "robotics"],
    authors=["Cheng Chi"],
    categories=["cs.RO"],
)


def test_explanations_name_the_entries_as_written_and_where_they_matched() -> None:
    (found,) = rank(
        [EXPLAINED],
        'Diffusion^2, "Large Language Models", author:chi, cat:cs.RO, -medical, quantum',
    )
    assert found.matched == ("Diffusion", '"Large Language Models"', "author:chi", "cat:cs.RO")
    assert found.where == {
        "Diffusion": ("title", "abstract", "keywords"),
        '"Large Language Models"': ("abstract",),
        "author:chi": ("authors",),
        "cat:cs.RO": ("categories",),
    }


def test_snippets_are_escaped_and_mark_the_matches() -> None:
    (found,) = rank([EXPLAINED], "diffusion, LLM")
    assert found.snippet_html == (
        "We study &lt;b&gt;<mark>diffusion</mark>&lt;/b&gt; models &amp; robot learning. "
        "<mark>Large language models</mark> (<mark>LLMs</mark>) plan; "
        "<mark>diffusion</mark> executes."
    )
    assert found.snippet_text == (
        "We study <b>*diffusion*</b> models & robot learning. *Large language models* (*LLMs*) "
        "plan; *diffusion* executes."
    )


def test_the_text_excerpt_follows_from_the_html_one(relevance: list[Paper]) -> None:
    """Stored digests keep only the HTML excerpt: the text one must be derivable exactly."""
    odd = paper("odd", "t", "a\0 <diffusion>\n\n & more &hellip; <mark>x</mark> *")
    cut = paper("cut", "t", " ".join(["word"] * 150) + " diffusion & learning " + "w " * 150)
    papers = [*relevance, EXPLAINED, odd, cut]
    texts = ["diffusion, LLM", "learning", "graph neural network, label noise", "mark, x"]
    index = PaperIndex(papers)
    matches = [m for ms in index.rank_many([parse_profile(t) for t in texts]) for m in ms]
    assert len(matches) > 20
    for match in matches:
        assert snippet_text(match.snippet_html) == match.snippet_text


def test_long_abstracts_are_cut_around_the_matches() -> None:
    filler = " ".join(f"word{i}" for i in range(200))
    long = paper("long", "A title", f"{filler} the graph neural network is here. {filler}")
    (found,) = rank([long], '"graph neural network"')
    assert found.snippet_text.startswith("...") and found.snippet_text.endswith("...")
    assert found.snippet_html.startswith("&hellip;") and found.snippet_html.endswith("&hellip;")
    assert found.snippet_html.isascii()
    assert "*graph neural network*" in found.snippet_text
    assert 200 <= len(found.snippet_text) <= 420


def test_a_match_outside_the_abstract_gets_its_opening_unmarked() -> None:
    (found,) = rank([EXPLAINED], "Mars")
    assert found.where == {"Mars": ("title",)}
    assert "<mark>" not in found.snippet_html
    assert found.snippet_html.startswith("We study &lt;b&gt;")


def test_odd_characters_in_abstracts_are_escaped_too() -> None:
    odd = paper("odd", "t", "a\0 <diffusion>\n\n & more")
    (found,) = rank([odd], "diffusion")
    assert found.snippet_html == "a\0 &lt;<mark>diffusion</mark>&gt; &amp; more"


def test_matches_are_plain_frozen_values() -> None:
    (found,) = rank([EXPLAINED], "diffusion")
    copy = pickle.loads(pickle.dumps(found))
    assert copy == found and hash(copy) == hash(found)
    assert type(copy.snippet_html) is str
    made = Match("x", 1.0, ("a",), {"a": ("title",)}, "<mark>a</mark>", "*a*")
    assert made.snippet_html == "<mark>a</mark>"
    with pytest.raises(AttributeError):
        found.score = 3.0  # type: ignore[misc]


def test_format_rank_json_is_the_cli_contract() -> None:
    found = rank([APART, NOISY], "label noise")
    by_id = {p.id: p for p in (APART, NOISY)}
    assert format_rank_json(by_id, found) == {
        "results": [
            {
                "id": "noisy",
                "title": NOISY.title,
                "score": found[0].score,
                "matched": ["label noise"],
            },
            {
                "id": "apart",
                "title": APART.title,
                "score": found[1].score,
                "matched": ["label noise"],
            },
        ]
    }


# The `newsletter rank` command ------------------------------------------------------------


def run_rank(*args: str) -> tuple[int, str, str]:
    from typer.testing import CliRunner

    from newsletter.cli import app

    result = CliRunner().invoke(app, ["rank", *args])
    return result.exit_code, result.stdout, result.stderr


def test_rank_command_prints_the_json_contract() -> None:
    code, out, _ = run_rank("--papers", str(RELEVANCE), "--keywords", "supervision", "--top", "3")
    assert code == 0
    results = json.loads(out)["results"]
    assert [sorted(r) for r in results] == [["id", "matched", "score", "title"]] * 3
    assert results[0]["matched"] == ["supervision"]
    assert results[0]["score"] >= results[1]["score"] >= results[2]["score"]


def test_rank_command_draws_a_table_on_request() -> None:
    code, out, _ = run_rank(
        "--papers", str(RELEVANCE), "-k", "LLM", "--top", "2", "--format", "table"
    )
    assert code == 0
    assert "2 of 135 papers" in out and "LLM (" in out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["-k", '"label noise'], "bad keywords: unclosed quote at column 1"),
        (["-k", "x", "--format", "yaml"], "--format must be table or json"),
        (["-k", "x", "--papers", "/nonexistent.jsonl"], "cannot read /nonexistent.jsonl"),
    ],
)
def test_rank_command_refuses_bad_input_with_exit_2(args: list[str], message: str) -> None:
    code, _, err = run_rank(*args)
    assert code == 2
    assert message in " ".join(err.split())


def test_rank_command_names_the_bad_jsonl_line(tmp_path: Path) -> None:
    papers = tmp_path / "papers.jsonl"
    papers.write_text(GNN.to_json() + "\n{not json\n", encoding="utf-8")
    code, _, err = run_rank("--papers", str(papers), "-k", "graph")
    assert code == 2
    assert "line 2:" in " ".join(err.split())
