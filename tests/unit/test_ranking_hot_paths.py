"""The fast paths of rank_many explain exactly as the general ones: pattern codes, shared
excerpts, profiles past the code's size and profiles written in another order."""

from __future__ import annotations

import pickle

from newsletter.paper import Paper
from newsletter.profile import parse_profile
from newsletter.ranking import PaperIndex, snippet_text

PAPERS = [
    Paper(id="a", title="Diffusion robots", abstract="Robots learn with diffusion policies."),
    Paper(id="b", title="Graph neural networks", abstract="Graphs and robots, no diffusion."),
    Paper(id="c", title="Label noise", abstract="Noisy labels hurt; diffusion helps a bit."),
]
WORDS = [f"word{i}" for i in range(12)]


def explained(text: str) -> list[tuple[str, tuple[str, ...], dict[str, tuple[str, ...]]]]:
    (found,) = PaperIndex(PAPERS).rank_many([parse_profile(text)], top_k=10)
    return [(m.paper_id, m.matched, m.where) for m in found]


def test_a_profile_longer_than_a_pattern_code_is_explained_the_same() -> None:
    # 12 positive entries fit a pattern code; 13 take the general path.
    short = explained("diffusion, robots")
    long = explained(", ".join(["diffusion", *WORDS, "robots"]))
    assert long == short
    assert short[0] == (
        "a",
        ("diffusion", "robots"),
        {"diffusion": ("title", "abstract"), "robots": ("title", "abstract")},
    )


def test_equal_profiles_written_in_another_order_keep_their_own_labels() -> None:
    index = PaperIndex(PAPERS)
    first, second = index.rank_many(
        [parse_profile("Diffusion, robots"), parse_profile("robots, Diffusion")], top_k=10
    )
    assert [m.paper_id for m in first] == [m.paper_id for m in second]
    assert first[0].matched == ("Diffusion", "robots")
    assert second[0].matched == ("robots", "Diffusion")
    assert first[0].where == {"Diffusion": ("title", "abstract"), "robots": ("title", "abstract")}


def test_matches_share_one_excerpt_per_paper_and_entries_and_pickle_built() -> None:
    index = PaperIndex(PAPERS)
    results = index.rank_many(
        [parse_profile("diffusion"), parse_profile("diffusion, graph"), parse_profile("noise")],
        top_k=10,
    )
    by_paper = {m.paper_id: m.snippet_html for m in results[0]}
    for m in results[1]:
        if m.matched == ("diffusion",):
            assert m.snippet_html == by_paper[m.paper_id]
    for m in (m for r in results for m in r):
        in_abstract = any("abstract" in fields for fields in m.where.values())
        assert ("<mark>" in m.snippet_html) == in_abstract
        assert m.snippet_text == snippet_text(m.snippet_html)
        copy = pickle.loads(pickle.dumps(m))
        assert copy == m and hash(copy) == hash(m)
        assert type(copy.snippet_html) is str and copy.snippet_text == m.snippet_text
