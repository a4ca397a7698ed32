"""Why a paper was chosen: the Match, its matched entries and fields, the marked excerpt."""

from __future__ import annotations

import html
import re
import sys
from bisect import bisect_left
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NamedTuple, overload

from newsletter.analysis import CONCEPT, Token, phrase_spans
from newsletter.paper import Paper
from newsletter.profile import Profile
from newsletter.ranking.scoring import (
    ABSTRACT,
    APART,
    AUTHORS,
    CATEGORIES,
    CODE_BITS,
    FIELD_BITS,
    KEYWORDS,
    TITLE,
)

if TYPE_CHECKING:
    from newsletter.ranking.index import PaperIndex
    from newsletter.ranking.scoring import _Candidates, _Plan

SNIPPET_WORDS = 45  # about 300 characters of abstract


_FIELD_NAMES = {
    mask: tuple(
        name
        for bit, name in (
            (TITLE, "title"),
            (ABSTRACT, "abstract"),
            (KEYWORDS, "keywords"),
            (AUTHORS, "authors"),
            (CATEGORIES, "categories"),
        )
        if mask & bit
    )
    for mask in range(1 << CODE_BITS)
}


class _Snippet:
    """A snippet field: holds a string, or a shared lazy excerpt built on first read.

    Ranking 100,000 subscribers chooses a million papers; their excerpts are built only when
    someone reads them, once per (paper, matched entries), and then kept.
    """

    # Benchmark: tests/perf/bench_ranking.py, "rank_many" (builds none) and "read all snippets".

    def __init__(self, part: int) -> None:
        self.part = part  # 0: HTML, 1: text

    def __set_name__(self, owner: type, name: str) -> None:
        self.slot = getattr(owner, f"_{name}")  # the member descriptor of the private slot

    @overload
    def __get__(self, obj: None, owner: type | None = None) -> str: ...
    @overload
    def __get__(self, obj: object, owner: type | None = None) -> str: ...
    def __get__(self, obj: object | None, owner: type | None = None) -> str:
        if obj is None:
            return ""  # the field's default, as dataclasses read it from the class
        value = self.slot.__get__(obj, owner)
        return value if type(value) is str else value.get(self.part)

    def __set__(self, obj: object, value: str | _LazySnippet) -> None:
        self.slot.__set__(obj, value)


class _Optional:
    """An optional field in a private slot: its default when read from the class (as
    dataclasses read defaults) or from a Match built without it (the learned part's)."""

    def __init__(self, default: Any) -> None:
        self.default = default

    def __set_name__(self, owner: type, name: str) -> None:
        self.slot = getattr(owner, f"_{name}")

    def __get__(self, obj: object | None, owner: type | None = None) -> Any:
        if obj is None:
            return self.default
        try:
            return self.slot.__get__(obj, owner)
        except AttributeError:
            return self.default

    def __set__(self, obj: object, value: Any) -> None:
        self.slot.__set__(obj, value)


_MATCH_SLOTS = (
    "paper_id",
    "score",
    "matched",
    "where",
    "_snippet_html",
    "_snippet_text",
    "_apart",
    "_liked",
)


@dataclass(frozen=True)
class Match:
    """One paper chosen for a profile, with why: the entries that matched and where."""

    # Slots keep a million matches small; the snippets live in private slots behind _Snippet.
    # Benchmark: tests/perf/bench_ranking.py, "peak RSS" after rank_many (target <= 1024 MiB).
    __slots__ = _MATCH_SLOTS

    paper_id: str
    score: float  # 0-100
    matched: tuple[str, ...]  # the profile's entries that matched, as the subscriber wrote them
    # entry -> fields among "title", "abstract", "keywords", "authors", "categories".
    # Shared between the matches of one subscriber: read it, do not modify it.
    where: dict[str, tuple[str, ...]]
    snippet_html: str = _Snippet(0)  # type: ignore[assignment]  # HTML-escaped, <mark>ed
    snippet_text: str = _Snippet(1)  # type: ignore[assignment]  # the same, matches as *word*
    # The unquoted multi-word entries of `matched` whose words matched but never side by side
    # (shared like `where`): a digest labels them "diffusion + models", not as the phrase.
    apart: tuple[str, ...] = _Optional(())  # type: ignore[assignment]
    # (id, title) of the liked paper this one is most like, when the reader's ratings chose it.
    liked: tuple[str, str] | None = _Optional(None)  # type: ignore[assignment]

    def __hash__(self) -> int:  # `where` is a dict: hash the rest
        return hash((self.paper_id, self.score, self.matched, self.snippet_html))

    def __reduce__(self) -> tuple[Any, ...]:
        """Pickle (for queues, caches) with the excerpts built."""
        return (Match, tuple(getattr(self, f) for f in _MATCH_FIELDS))


_MATCH_FIELDS = (
    "paper_id",
    "score",
    "matched",
    "where",
    "snippet_html",
    "snippet_text",
    "apart",
    "liked",
)
# A Match built by hand (_Explainer.matches). Benchmark: tests/perf/bench_ranking.py, "rank_many".
_NEW = object.__new__
_SET_SLOTS = tuple(getattr(Match, name).__set__ for name in _MATCH_SLOTS)


_SET_LIKED = Match._liked.__set__  # type: ignore[attr-defined]


def set_liked(match: Match, liked: tuple[str, str] | None) -> None:
    """Say which liked paper a Match is like (Matches are frozen; the ranker fills this in
    after choosing, for the profiles that have ratings)."""
    _SET_LIKED(match, liked)


class _LazySnippet:
    """The (html, text) excerpt of one paper for one set of matched entries, built once."""

    # One per (paper, matched entries). Benchmark: tests/perf/bench_ranking.py, "peak RSS".
    __slots__ = ("_explainer", "_paper", "_columns", "_value")

    def __init__(self, explainer: _Explainer, paper: int, columns: tuple[int, ...]) -> None:
        self._explainer: _Explainer | None = explainer
        self._paper, self._columns = paper, columns
        self._value: tuple[str, str] | None = None

    def get(self, part: int) -> str:
        value = self._value
        if value is None:
            assert self._explainer is not None
            value = self._value = self._explainer.snippet(self._paper, self._columns)
            self._explainer = None  # the index and plan may go once every excerpt is built
        return value[part]


# Explanations --------------------------------------------------------------------------------


class _Why(NamedTuple):
    """What a pattern of field bits means for one written profile."""

    matched: tuple[str, ...]
    where: dict[str, tuple[str, ...]]
    highlight: int  # id of the set of feature columns matched in the abstract
    apart: tuple[str, ...]  # the entries of `matched` whose words matched only apart


class _Compiled:
    """A profile as its subscriber wrote it: labels and feature columns of positive entries."""

    # Slots: one per distinct written profile. Benchmark: tests/perf/bench_ranking.py, "peak RSS".
    __slots__ = ("labels", "columns", "masks", "coded", "why", "made", "shared")

    def __init__(
        self, labels: tuple[str, ...], columns: tuple[int, ...], masks: list[bytes], coded: bool
    ) -> None:
        self.labels, self.columns, self.masks = labels, columns, masks
        self.coded = coded  # its entries are in the order the plan's pattern codes use
        self.why: dict[int | bytes, _Why] = {}
        self.made: dict[int, Match] = {}  # paper -> its Match, kept when `shared`
        self.shared = False


class _Explainer:
    """Builds the Match of a chosen paper: which entries matched where, and the snippet."""

    def __init__(self, index: PaperIndex, plan: _Plan) -> None:
        self.index, self.plan = index, plan
        self._compiled: dict[tuple[int, str], _Compiled] = {}
        self._highlight_ids: dict[tuple[int, ...], int] = {}
        self._highlight_sets: list[tuple[int, ...]] = []
        self._highlights: dict[tuple[int, int], list[tuple[int, int]]] = {}
        self._abstracts: dict[int, _Pieces] = {}
        self._lazy: dict[int, _LazySnippet] = {}  # highlight id * papers + paper -> excerpt
        self.ids = [p.id for p in index.papers]

    def compiled(self, profile: Profile, representative: Profile, slot: int) -> _Compiled:
        """The explanation context of a subscriber's profile (shared by equal texts)."""
        # By slot: one profile ranked with other ratings is another slot, another ranking.
        key = (slot, profile.source or str(id(profile)))
        found = self._compiled.get(key)
        if found is not None:
            found.shared = True  # subscribers who wrote the same text share their matches
            return found
        coded = profile is representative or profile.source == representative.source
        positives = profile.positives
        columns = tuple([self.plan.column(e) for e in positives])
        found = self._compiled[key] = _Compiled(
            tuple([e.label or e.text for e in positives]),
            columns,
            [self.plan.masks[c] for c in columns],
            coded and bool(self.plan.coded[slot]),
        )
        return found

    def matches(
        self, compiled: _Compiled, candidates: _Candidates, k: int, sent: frozenset[int]
    ) -> list[Match]:
        """The first `k` candidates not already sent, as Matches (the hot loop of ranking)."""
        chosen: list[Match] = []
        whys, lazies, ids, n = compiled.why, self._lazy, self.ids, len(self.ids)
        coded, masks = compiled.coded, compiled.masks
        new, (set_id, set_score, set_matched, set_where, set_html, set_text, set_apart) = (
            _NEW,
            _SET_SLOTS[:7],  # `liked` is set afterwards, for the profiles with ratings
        )
        made = compiled.made if compiled.shared else None
        for paper, score, code in zip(*candidates, strict=True):
            if len(chosen) >= k:
                break
            if sent and paper in sent:
                continue
            if made is not None and paper in made:
                chosen.append(made[paper])
                continue
            key = code if coded else bytes([row[paper] for row in masks])
            why = whys.get(key)
            if why is None:
                why = whys[key] = self._why(compiled, bytes([row[paper] for row in masks]))
            matched, where, highlight, apart = why
            place = highlight * n + paper
            lazy = lazies.get(place)
            if lazy is None:
                lazy = lazies[place] = _LazySnippet(self, paper, self._highlight_sets[highlight])
            # Match(...) by hand: a million per 100,000 subscribers; __init__ costs 3x more.
            # Benchmark: tests/perf/bench_ranking.py, "rank_many".
            match = new(Match)
            set_id(match, ids[paper])
            set_score(match, score)
            set_matched(match, matched)
            set_where(match, where)
            set_html(match, lazy)
            set_text(match, lazy)
            set_apart(match, apart)
            chosen.append(match)
            if made is not None:
                made[paper] = match
        return chosen

    def _why(self, compiled: _Compiled, pattern: bytes) -> _Why:
        """What a pattern of field bits (one byte per positive entry) says."""
        labels, names = compiled.labels, _FIELD_NAMES
        hits = [i for i, mask in enumerate(pattern) if mask]
        columns = tuple(sorted([compiled.columns[i] for i in hits if pattern[i] & ABSTRACT]))
        hid = self._highlight_ids.get(columns)
        if hid is None:
            hid = self._highlight_ids[columns] = len(self._highlight_sets)
            self._highlight_sets.append(columns)
        return _Why(
            tuple([labels[i] for i in hits]),
            {labels[i]: names[pattern[i] & FIELD_BITS] for i in hits},
            hid,
            tuple([labels[i] for i in hits if pattern[i] & APART]),
        )

    def snippet(self, paper: int, columns: tuple[int, ...]) -> tuple[str, str]:
        """(html, text) abstract excerpt of a paper marking where these features matched."""
        pieces = self._pieces(paper)
        if len(columns) == 1:
            marks = self._marks(columns[0], paper, pieces)
        else:
            spans = [m for c in columns for m in self._marks(c, paper, pieces)]
            marks = _merge_spans(spans, pieces.positions)
        return pieces.snippet(marks)

    def _pieces(self, paper: int) -> _Pieces:
        found = self._abstracts.get(paper)
        if found is None:
            abstract = self.index.papers[paper].abstract
            tokens = self.index.fields["abstract"].tokens[paper]
            found = self._abstracts[paper] = _Pieces(abstract, tokens)
        return found

    def _marks(self, column: int, paper: int, pieces: _Pieces) -> list[tuple[int, int]]:
        """Word ranges of the abstract (merged, in order) where a feature matched."""
        key = (column, paper)
        found = self._highlights.get(key)
        if found is None:
            feature = self.plan.features[column]
            tokens = self.index.fields["abstract"].tokens[paper]
            spans = phrase_spans(tokens, feature.phrase) if feature.phrase else []
            if not spans and feature.words:
                spans = [(t.first, t.last) for w in feature.words for t in tokens.get(w, ())]
            found = _merge_spans(
                [(pieces.index(f), pieces.index(last)) for f, last in spans], pieces.positions
            )
            self._highlights[key] = found
        return found


# Excerpts ------------------------------------------------------------------------------------


class _Pieces:
    """An abstract cut at its words, HTML-escaped once, to assemble snippets by word index.

    Piece i is word i plus the separator after it (whitespace squeezed); the word's length in
    each form lets a marked range close right after its last word. Pieces are interned: the
    same "of the " recurs across a thousand abstracts.
    """

    # Slots, interned pieces. Benchmark: tests/perf/bench_ranking.py, "peak RSS" (all snippets).
    __slots__ = ("positions", "text", "html", "text_cut", "html_cut")

    def __init__(self, abstract: str, tokens: Mapping[str, list[Token]]) -> None:
        spans: dict[int, tuple[int, int]] = {}
        for occurrences in tokens.values():
            for t in occurrences:
                if t.first == t.last and t.term[0] != CONCEPT:
                    spans.setdefault(t.first, (t.start, t.end))
        ordered = sorted(spans.items())
        self.positions = [position for position, _ in ordered]
        starts = [start for _, (start, _) in ordered] + [len(abstract)]
        words = [abstract[start:end] for _, (start, end) in ordered]
        afters = [
            _squeeze(abstract[end : starts[i + 1]]) for i, (_, (_, end)) in enumerate(ordered)
        ]
        self.text = [sys.intern(w + a) for w, a in zip(words, afters, strict=True)]
        self.text_cut = [len(w) for w in words]
        html_words, html_afters = _escape_all(words), _escape_all(afters)
        self.html = [sys.intern(w + a) for w, a in zip(html_words, html_afters, strict=True)]
        self.html_cut = [len(w) for w in html_words]

    def index(self, position: int) -> int:
        """The word index of a token position."""
        return min(bisect_left(self.positions, position), max(len(self.positions) - 1, 0))

    def snippet(self, marks: Sequence[tuple[int, int]]) -> tuple[str, str]:
        """(html, text): about SNIPPET_WORDS words around most marks (word ranges), marked."""
        begin, end = _window(marks, len(self.text), SNIPPET_WORDS)
        # ASCII ellipses: one non-ASCII character would double a stored excerpt's memory.
        # Benchmark: tests/perf/bench_ranking.py, "peak RSS" (with every snippet built).
        html_parts = ["&hellip;"] if begin else []
        text_parts = ["..."] if begin else []
        cursor = begin
        text, escaped = self.text, self.html
        for first, last in marks:  # sorted by first word
            if last < begin:
                continue
            if first >= end:
                break
            if first < begin:
                first = begin
            if last >= end:
                last = end - 1
            h, t = escaped[last], text[last]
            h_cut, t_cut = self.html_cut[last], self.text_cut[last]
            html_parts += [
                "".join(escaped[cursor:first]),
                "<mark>",
                "".join(escaped[first:last]),
                h[:h_cut],
                "</mark>",
                h[h_cut:],
            ]
            text_parts += [
                "".join(text[cursor:first]),
                "*",
                "".join(text[first:last]),
                t[:t_cut],
                "*",
                t[t_cut:],
            ]
            cursor = last + 1
        html_parts.append("".join(escaped[cursor:end]))
        text_parts.append("".join(text[cursor:end]))
        if end < len(text):
            html_parts.append("&hellip;")
            text_parts.append("...")
        return "".join(html_parts).rstrip(), "".join(text_parts).rstrip()


def snippet_text(snippet_html: str) -> str:
    """The plain-text form of an excerpt from its HTML form (matches as *word*).

    Exactly what the excerpt's text part is, so stored digests keep only the HTML.
    """
    marked = snippet_html.replace("<mark>", "*").replace("</mark>", "*")
    return html.unescape(marked.replace("&hellip;", "..."))


def _escape_all(pieces: list[str]) -> list[str]:
    """html.escape of each piece, in one call when a NUL can separate them (it always can,
    but for text carrying NULs itself)."""
    if not pieces or any("\0" in p for p in pieces):
        return [html.escape(p) for p in pieces]
    return html.escape("\0".join(pieces)).split("\0")


def _squeeze(text: str) -> str:
    """Collapse whitespace (abstracts carry line breaks): a separator keeps one space."""
    if text == " " or not text:
        return text
    squeezed = " ".join(text.split())
    return (" " if text[0].isspace() else "") + squeezed + (" " if text[-1].isspace() else "")


def _merge_spans(
    spans: Sequence[tuple[int, int]], positions: Sequence[int]
) -> list[tuple[int, int]]:
    """Sorted word ranges, overlapping ones merged, and touching ones when no punctuation
    separates them ("semi-supervised" reads as one mark, "models (LLMs)" as two)."""
    merged: list[tuple[int, int]] = []
    for s, e in sorted(spans):
        if merged:
            last = merged[-1][1]
            touching = s == last + 1 and positions[s] == positions[last] + 1
            if s <= last or touching:
                merged[-1] = (merged[-1][0], max(e, last))
                continue
        merged.append((s, e))
    return merged


def _window(marks: Sequence[tuple[int, int]], length: int, size: int) -> tuple[int, int]:
    """Word range [begin, end) of about `size` words holding the most marks."""
    if length <= size + size // 5:
        return 0, length
    best_begin, best_count = 0, 0
    starts = [first for first, _ in marks]
    lead = size // 5  # words of context before the first mark
    for i, first in enumerate(starts):
        begin = max(0, first - lead)
        count = bisect_left(starts, begin + size, i) - i
        if count > best_count:
            best_begin, best_count = begin, count
    begin = min(best_begin, length - size)
    return begin, begin + size


def marked_parts(snippet_html: str) -> list[tuple[str, bool]]:
    """A snippet as plain-text pieces, each flagged when it was <mark>ed (for terminals)."""
    parts = []
    for i, piece in enumerate(_MARK.split(snippet_html)):
        if piece:
            parts.append((html.unescape(piece), i % 2 == 1))
    return parts


_MARK = re.compile(r"<mark>(.*?)</mark>", re.DOTALL)


def format_rank_json(papers_by_id: Mapping[str, Paper], matches: Sequence[Match]) -> dict[str, Any]:
    """The `newsletter rank` JSON: {"results": [{"id", "title", "score", "matched"}]}."""
    return {
        "results": [
            {
                "id": m.paper_id,
                "title": papers_by_id[m.paper_id].title,
                "score": m.score,
                "matched": list(m.matched),
            }
            for m in matches
        ]
    }
