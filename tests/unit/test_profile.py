"""Keyword profile syntax: what parses, what does not (and where), and profile identity."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from newsletter.profile import MAX_ENTRIES, MAX_LIKES, ProfileError, parse_profile


def entry_summary(text: str) -> list[tuple[str, str, tuple[str, ...], bool, float, str]]:
    return [
        (e.kind, e.mode, e.terms, e.exclude, e.weight, e.label) for e in parse_profile(text).entries
    ]


# Valid syntax ------------------------------------------------------------------------------


def test_entries_of_every_kind_in_the_order_written() -> None:
    text = (
        'diffusion models, "label noise"^1.5\n'
        '-medical, -"protein folding", author:Hinton\n'
        'author:"Yann LeCun", cat:cs.LG, LLM^2'
    )
    assert entry_summary(text) == [
        ("text", "loose", ("diffus", "model"), False, 1.0, "diffusion models"),
        ("text", "phrase", ("label", "nois"), False, 1.5, '"label noise"'),
        ("text", "phrase", ("medic",), True, 1.0, "-medical"),
        ("text", "phrase", ("protein", "fold"), True, 1.0, '-"protein folding"'),
        ("author", "name", ("hinton",), False, 1.0, "author:Hinton"),
        ("author", "name", ("yann", "lecun"), False, 1.0, 'author:"Yann LeCun"'),
        ("cat", "cat", ("cs.lg",), False, 1.0, "cat:cs.LG"),
        ("text", "phrase", ("\u00a7llm",), False, 2.0, "LLM"),
    ]


def test_blank_lines_trailing_commas_and_smart_quotes_are_fine() -> None:
    profile = parse_profile("\n  transformers,\n\n\u201cgraph neural network\u201d ,\n")
    assert [e.label for e in profile.entries] == ["transformers", '"graph neural network"']
    assert profile.entries[1].mode == "phrase"


def test_a_comma_inside_quotes_belongs_to_the_phrase() -> None:
    (entry,) = parse_profile('"images, text"').entries
    assert entry.value == "images, text"


def test_weights_accept_the_whole_range() -> None:
    assert [e.weight for e in parse_profile("a^0.1, b^10, c^.5, d^3.").entries] == [
        0.1,
        10.0,
        0.5,
        3.0,
    ]


def test_exclusions_of_unquoted_words_match_them_as_a_phrase() -> None:
    (_, excluded) = parse_profile("vision, -medical imaging").entries
    assert excluded.exclude and excluded.mode == "phrase"


def test_category_prefixes_and_field_names_ignore_case() -> None:
    entries = parse_profile("CAT:cs, Author:Bengio").entries
    assert [(e.kind, e.terms) for e in entries] == [("cat", ("cs",)), ("author", ("bengio",))]


# Invalid syntax, with positions ------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "message", "line", "column"),
    [
        ('diffusion, "label noise', "unclosed quote at column 12", 1, 12),
        ("a,\n,\nb", "empty entry at line 2, column 1", 2, 1),
        ("a,, b", "empty entry at column 3", 1, 3),
        ("llm^abc", "weight must be a number between 0.1 and 10 at column 4", 1, 4),
        ("llm^0", "weight must be a number between 0.1 and 10 at column 4", 1, 4),
        ("llm^11", "weight must be a number between 0.1 and 10 at column 4", 1, 4),
        ("llm^1e1", "weight must be a number between 0.1 and 10 at column 4", 1, 4),
        ("x, -llm^2", "an exclusion takes no weight at column 8", 1, 8),
        ("x, -", "nothing after '-' at column 4", 1, 4),
        ("x, author:", "nothing after the field name at column 11", 1, 11),
        ("x\ncat:cs LG", "'cs LG' is not an arXiv category like cs.LG at line 2, column 5", 2, 5),
        ('x, graph "neural"', "a quote must open the entry", 1, 10),
        ('"graph" neural', "unexpected text after the closing quote at column 9", 1, 9),
        ('x, ""', "empty phrase at column 4", 1, 4),
        ("x, ???", "'???' has no letters or digits to match at column 4", 1, 4),
        ("-a, -b", "only exclusions", 1, 1),
        ("  \n ,", "empty entry at line 2, column 2", 2, 2),
        ("   ", "no keywords", 1, 1),
    ],
)
def test_errors_say_what_and_where(text: str, message: str, line: int, column: int) -> None:
    with pytest.raises(ProfileError) as caught:
        parse_profile(text)
    assert message in str(caught.value)
    assert (caught.value.line, caught.value.column) == (line, column)


def test_too_many_entries_points_at_the_first_one_too_many() -> None:
    text = ", ".join(f"w{i}" for i in range(MAX_ENTRIES + 1))
    with pytest.raises(ProfileError, match="too many entries") as caught:
        parse_profile(text)
    assert caught.value.column == text.index(f"w{MAX_ENTRIES}") + 1
    parse_profile(", ".join(f"w{i}" for i in range(MAX_ENTRIES)))  # the limit itself is fine


def test_an_entry_longer_than_100_characters_is_refused() -> None:
    with pytest.raises(ProfileError, match="longer than 100 characters") as caught:
        parse_profile("ok,\n  " + "x" * 101)
    assert (caught.value.line, caught.value.column) == (2, 3)
    parse_profile("x" * 100)


def test_profile_error_is_a_value_error() -> None:
    with pytest.raises(ValueError):
        parse_profile('"')


# Identity --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("Diffusion, LLMs", "llm\ndiffusion"),
        ("large language models", "LLM"),
        ("Graph Neural Networks", "gnn"),
        ('"semi-supervised"', "Semi-Supervised"),
        ("mixture-of-experts", "MoE"),
        ("model^2, model", "Models^2"),
        ("author:G. Hinton", 'author:"g hinton"'),
        ("cat:CS.lg", "cat:cs.LG"),
        ("\uff2c\uff2c\uff2d", "llm"),  # fullwidth letters (NFKC)
    ],
)
def test_equal_profiles_hash_equal(a: str, b: str) -> None:
    assert parse_profile(a) == parse_profile(b)
    assert hash(parse_profile(a)) == hash(parse_profile(b))
    assert len({parse_profile(a), parse_profile(b)}) == 1


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("llm", "llm^2"),
        ("llm", "-llm, x"),
        ("graph neural", '"graph neural"'),
        ("author:hinton", "hinton"),
        ("cat:cs", "cat:cs.LG"),
        ("supervision", "supervised"),  # one stem, but each word counts extra for itself
    ],
)
def test_different_profiles_differ(a: str, b: str) -> None:
    assert parse_profile(a) != parse_profile(b)


def test_canonical_text_parses_back_to_an_equal_profile() -> None:
    profile = parse_profile(
        'LLMs^2, "diffusion, models", -"-x", author:"Yann LeCun", cat:cs.LG, graph learning'
    )
    assert parse_profile(profile.text) == profile
    assert str(profile) == profile.text
    assert profile.text == parse_profile(profile.text).text


def test_repeated_entries_merge_keeping_the_largest_weight() -> None:
    profile = parse_profile("LLM, llms^3, large language model")
    assert [(e.label, e.weight) for e in profile.entries] == [("LLM", 3.0)]


def test_the_source_is_kept_but_does_not_decide_equality() -> None:
    a, b = parse_profile("LLM"), parse_profile("llms")
    assert (a.source, b.source) == ("LLM", "llms")
    assert a == b


# Any string ------------------------------------------------------------------------------------


@settings(max_examples=400, deadline=None)
@given(st.text(max_size=300))
def test_any_string_parses_or_raises_profile_error(text: str) -> None:
    try:
        profile = parse_profile(text)
    except ProfileError as exc:
        assert exc.line >= 1 and exc.column >= 1
        return
    assert profile.positives
    assert parse_profile(profile.text) == profile


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.text(alphabet=st.sampled_from('ab -"^,:\n.12\u00e9\u201c'), max_size=12), max_size=8
    ).map(", ".join)
)
def test_syntax_heavy_strings_parse_or_raise_profile_error(text: str) -> None:
    try:
        profile = parse_profile(text)
    except ProfileError:
        return
    assert parse_profile(profile.text) == profile


# Liked papers ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "written",
    [
        "like:2401.12345",
        "like: 2401.12345v3",
        "LIKE:arXiv:2401.12345",
        "like:https://arxiv.org/abs/2401.12345v2",
        "like:https://arxiv.org/pdf/2401.12345.pdf",
    ],
)
def test_a_liked_paper_is_its_versionless_id(written: str) -> None:
    profile = parse_profile(f"diffusion, {written}")
    assert profile.likes == ("2401.12345",)
    assert [e.value for e in profile.entries] == ["diffusion"]
    assert parse_profile(profile.text) == profile


def test_a_profile_may_be_only_liked_papers() -> None:
    profile = parse_profile("like:2401.12345\nlike:hep-th/9901001, like:2401.12345v2, -medical")
    assert profile.likes == ("2401.12345", "hep-th/9901001")
    assert profile.keywords_text == "-medical"
    assert profile.text == "-medical, like:2401.12345, like:hep-th/9901001"


def test_likes_make_a_profile_differ() -> None:
    assert parse_profile("diffusion") != parse_profile("diffusion, like:2401.12345")
    assert parse_profile("like:2401.1, diffusion".replace("2401.1", "2401.12345")) == parse_profile(
        "diffusion, like:2401.12345v1"
    )


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("like:nonsense", "like: needs an arXiv id or address, like like:2401.12345 at column 1"),
        ("diffusion, -like:2401.12345", "a liked paper can't be excluded"),
        ("like:2401.12345^2", "like: takes no weight"),
    ],
)
def test_a_bad_liked_paper_says_what_is_wrong(text: str, message: str) -> None:
    with pytest.raises(ProfileError, match=message.replace("^", r"\^")):
        parse_profile(text)


def test_liked_papers_have_their_own_limit() -> None:
    likes = [f"like:2401.{n:05d}" for n in range(MAX_LIKES)]
    keywords = [f"word{n}" for n in range(MAX_ENTRIES)]
    assert len(parse_profile(", ".join(likes + keywords)).likes) == MAX_LIKES
    with pytest.raises(ProfileError, match="too many liked papers"):
        parse_profile(", ".join(likes + ["like:2402.00001"]))
