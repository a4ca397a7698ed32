"""Why a paper was chosen: the Match, its matched entries and fields, the marked excerpt."""

from __future__ import annotations

import html
import re
import sys
from bisect import bisect_left
from collections.abc import Callable, Mapping, Sequence
from operator import itemgetter
from typing import TYPE_CHECKING, Any

from newsletter.analysis import CONCEPT, Token, phrase_spans
from newsletter.paper import Paper
from newsletter.profile import Profile
from newsletter.ranking.scoring import (
    ABSTRACT,
    AUTHORS,
    CATEGORIES,
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
    for mask in range(32)
}


class Match(tuple):  # type: ignore[type-arg]  # six fixed fields, like a named tuple
    """One paper chosen for a profile, with why: the entries that matched and where.

    A frozen value (equal, hashable, picklable by its fields) made as a tuple: ranking
    100,000 subscribers makes a million of them, and a tuple is made in one step where an
    object with slots takes seven. Its excerpt is built when first read, once per (paper,
    matched entries), and then kept: the tuple holds a shared lazy excerpt until then.
    """

    # Benchmark: tests/perf/bench_ranking.py, "rank_many" and "peak RSS" (target <= 1024 MiB).
    __slots__ = ()

    def __new__(
        cls,
        paper_id: str,
        score: float,
        matched: tuple[str, ...],
        where: dict[str, tuple[str, ...]],
        snippet_html: str = "",
        snippet_text: str = "",
    ) -> Match:
        return _NEW_TUPLE(cls, (paper_id, score, matched, where, snippet_html, snippet_text))

    if TYPE_CHECKING:

        @property
        def paper_id(self) -> str: ...
        @property
        def score(self) -> float:  # 0-100
            ...
        @property
        def matched(self) -> tuple[str, ...]:
            """The profile's entries that matched, as the subscriber wrote them."""

        @property
        def where(self) -> dict[str, tuple[str, ...]]:
            """entry -> fields among "title", "abstract", "keywords", "authors", "categories".
            Shared between the matches of one subscriber: read it, do not modify it."""
    else:
        paper_id = property(itemgetter(0))
        score = property(itemgetter(1))
        matched = property(itemgetter(2))
        where = property(itemgetter(3))

    # A ranked Match holds its ranking's _Excerpts and the excerpt's place in them, where one
    # made by hand holds its two strings.
    @property
    def snippet_html(self) -> str:
        """The abstract excerpt, HTML-escaped, the matched words <mark>ed."""
        value = _ITEM(self, 4)
        return value if type(value) is str else value.get(_ITEM(self, 5), 0)

    @property
    def snippet_text(self) -> str:
        """The same excerpt as text, the matched words as *word*."""
        value = _ITEM(self, 4)
        return _ITEM(self, 5) if type(value) is str else value.get(_ITEM(self, 5), 1)

    def _fields(self) -> tuple[Any, ...]:
        return (*self[:4], self.snippet_html, self.snippet_text)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Match):
            return NotImplemented
        return self._fields() == other._fields()

    def __ne__(self, other: object) -> bool:
        equal = self.__eq__(other)
        return equal if equal is NotImplemented else not equal

    def __hash__(self) -> int:  # `where` is a dict: hash the rest
        return hash((self.paper_id, self.score, self.matched, self.snippet_html))

    def __repr__(self) -> str:
        shown = ", ".join(f"{n}={v!r}" for n, v in zip(_MATCH_FIELDS, self._fields(), strict=True))
        return f"Match({shown})"

    def __reduce__(self) -> tuple[Any, ...]:
        """Pickle (for queues, caches) with the excerpts built."""
        return (Match, self._fields())


_MATCH_FIELDS = ("paper_id", "score", "matched", "where", "snippet_html", "snippet_text")
_NEW_TUPLE = tuple.__new__
_ITEM = tuple.__getitem__


class _Excerpts:
    """The excerpts of one ranking, each built when first read, once per (paper, matched
    entries in the abstract), and then kept.

    Ranking 100,000 subscribers chooses a million papers; the Matches hold this and a place
    (highlight id * papers + paper), so ranking itself makes no object per excerpt.
    """

    # Benchmark: tests/perf/bench_ranking.py, "rank_many" (builds none) and "excerpts".
    __slots__ = ("_explainer", "_built", "_papers")

    def __init__(self, explainer: _Explainer) -> None:
        self._explainer = explainer
        self._built: dict[int, str] = {}
        self._papers = len(explainer.ids)

    def get(self, place: int, part: int) -> str:
        """Part 0 (HTML) or 1 (text, derived from the HTML) of the excerpt at `place`."""
        found = self._built.get(place)
        if found is None:
            highlight, paper = divmod(place, self._papers)
            columns = self._explainer.highlight_sets[highlight]
            found = self._built[place] = self._explainer.snippet(paper, columns)
        return found if part == 0 else snippet_text(found)


# Explanations --------------------------------------------------------------------------------


# What a pattern of field bits means for one written profile: the entries matched, where,
# and the id of the set of feature columns matched in the abstract x the index's papers (a
# plain tuple: 400,000 are made per 100,000 subscribers).
_Why = tuple[tuple[str, ...], dict[str, tuple[str, ...]], int]


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
        self._compiled: dict[tuple[Profile, str], _Compiled] = {}
        self._highlight_ids: dict[tuple[int, ...], int] = {}
        self.highlight_sets: list[tuple[int, ...]] = []
        self._highlights: dict[tuple[int, int], list[tuple[int, int]]] = {}
        self._abstracts: dict[int, _Pieces] = {}
        self._decoded: dict[int, _Decoded] = {}  # pattern code -> what it says, any profile
        self.ids = [p.id for p in index.papers]
        self._papers = len(self.ids)
        self.excerpts = _Excerpts(self)

    def compiled(self, profile: Profile, representative: Profile, slot: int) -> _Compiled:
        """The explanation context of a subscriber's profile (shared by equal texts)."""
        key = (representative, profile.source or str(id(profile)))
        found = self._compiled.get(key)
        if found is not None:
            found.shared = True  # subscribers who wrote the same text share their matches
            return found
        coded = profile is representative or profile.source == representative.source
        coded = coded and bool(self.plan.coded[slot])
        positives = profile.positives
        columns = tuple([self.plan.column(e) for e in positives])
        # Only profiles without pattern codes read the field bits of each paper themselves.
        masks = [] if coded else [self.plan.masks[c] for c in columns]
        found = self._compiled[key] = _Compiled(
            tuple([e.label or e.text for e in positives]), columns, masks, coded
        )
        return found

    def matches(
        self, compiled: _Compiled, candidates: _Candidates, k: int, sent: frozenset[int]
    ) -> list[Match]:
        """The first `k` candidates not already sent, as Matches (the hot loop of ranking)."""
        papers, scores, codes = candidates
        k = max(k, 0)
        if sent:
            keep = [i for i, paper in enumerate(papers) if paper not in sent][:k]
            papers, scores, codes = (
                [papers[i] for i in keep],
                [scores[i] for i in keep],
                [codes[i] for i in keep],
            )
        elif len(papers) > k:
            papers, scores, codes = papers[:k], scores[:k], codes[:k]
        chosen: list[Match] = []
        whys, excerpts, ids = compiled.why, self.excerpts, self.ids
        coded, masks = compiled.coded, compiled.masks
        new = _NEW_TUPLE
        made = compiled.made if compiled.shared else None
        if coded and made is None:  # nearly every subscriber: the loop at its leanest
            explain = self._coded_why
            for paper, score, code in zip(papers, scores, codes, strict=True):
                why = whys.get(code)
                if why is None:
                    why = whys[code] = explain(compiled, code)
                # tuple.__new__ at once: a million per 100,000 subscribers, Match() costs
                # 2x more. Benchmark: tests/perf/bench_ranking.py, "rank_many".
                chosen.append(
                    new(Match, (ids[paper], score, why[0], why[1], excerpts, why[2] + paper))
                )
            return chosen
        for paper, score, code in zip(papers, scores, codes, strict=True):
            if made is not None and paper in made:
                chosen.append(made[paper])
                continue
            key = code if coded else bytes([row[paper] for row in masks])
            why = whys.get(key)
            if why is None:
                why = whys[key] = (
                    self._coded_why(compiled, code)
                    if coded
                    else self._why(compiled, bytes([row[paper] for row in masks]))
                )
            match = new(Match, (ids[paper], score, why[0], why[1], excerpts, why[2] + paper))
            chosen.append(match)
            if made is not None:
                made[paper] = match
        return chosen

    def _coded_why(self, compiled: _Compiled, code: int) -> _Why:
        """What a pattern code (5 field bits per positive entry, see _Plan._patterns) says.

        A code means the same entry positions and fields for every profile: that part is
        worked out once per code, and only the labels and columns are the profile's own.
        """
        # Benchmark: tests/perf/bench_ranking.py, "rank_many" (400,000 patterns per 100,000).
        decoded = self._decoded.get(code)
        if decoded is None:
            decoded = self._decoded[code] = _decode(code)
        hits, names, in_abstract = decoded
        matched = hits(compiled.labels)
        columns = in_abstract(compiled.columns)
        if len(columns) > 1:
            columns = tuple(sorted(columns))
        hid = self._highlight_ids.get(columns)
        if hid is None:
            hid = self._highlight_ids[columns] = len(self.highlight_sets)
            self.highlight_sets.append(columns)
        return matched, dict(zip(matched, names, strict=False)), hid * self._papers

    def _why(self, compiled: _Compiled, pattern: bytes) -> _Why:
        """What a pattern of field bits (one byte per positive entry) says."""
        labels, names = compiled.labels, _FIELD_NAMES
        hits = [i for i, mask in enumerate(pattern) if mask]
        columns = tuple(sorted([compiled.columns[i] for i in hits if pattern[i] & ABSTRACT]))
        hid = self._highlight_ids.get(columns)
        if hid is None:
            hid = self._highlight_ids[columns] = len(self.highlight_sets)
            self.highlight_sets.append(columns)
        matched = tuple([labels[i] for i in hits])
        return matched, {labels[i]: names[pattern[i]] for i in hits}, hid * len(self.ids)

    def snippet(self, paper: int, columns: tuple[int, ...]) -> str:
        """The HTML abstract excerpt of a paper marking where these features matched."""
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


_Picker = Callable[[Sequence[Any]], tuple[Any, ...]]
_Decoded = tuple[_Picker, tuple[tuple[str, ...], ...], _Picker]


def _decode(code: int) -> _Decoded:
    """A pattern code as (the matched entries' positions, their fields' names, the positions
    of those matched in the abstract), positions as pickers of a profile's own sequences."""
    hits: list[int] = []
    names: list[tuple[str, ...]] = []
    in_abstract: list[int] = []
    position = 0
    while code:
        mask = code & 31
        if mask:
            hits.append(position)
            names.append(_FIELD_NAMES[mask])
            if mask & ABSTRACT:
                in_abstract.append(position)
        code >>= 5
        position += 1
    return _picker(hits), tuple(names), _picker(in_abstract)


def _picker(positions: list[int]) -> _Picker:
    """A function taking these positions of a sequence, as a tuple (itemgetter, in C)."""
    if len(positions) > 1:
        return itemgetter(*positions)  # type: ignore[no-any-return]
    if positions:
        only = positions[0]
        return lambda items: (items[only],)
    return lambda items: ()


# Excerpts ------------------------------------------------------------------------------------


class _Pieces:
    """An abstract cut at its words, HTML-escaped once, to assemble snippets by word index.

    Piece i is word i plus the separator after it (whitespace squeezed); the word's length in
    each form lets a marked range close right after its last word. Pieces are interned: the
    same "of the " recurs across a thousand abstracts.
    """

    # Slots, interned pieces. Benchmark: tests/perf/bench_ranking.py, "peak RSS" (all snippets).
    # Only the HTML form: the text form follows from it (snippet_text), so it is made only
    # where something reads it. Benchmark: tests/perf/bench_ranking.py, "excerpts".
    __slots__ = ("positions", "html", "html_cut")

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
        html_words, html_afters = _escape_all(words), _escape_all(afters)
        self.html = [sys.intern(w + a) for w, a in zip(html_words, html_afters, strict=True)]
        self.html_cut = [len(w) for w in html_words]

    def index(self, position: int) -> int:
        """The word index of a token position."""
        return min(bisect_left(self.positions, position), max(len(self.positions) - 1, 0))

    def snippet(self, marks: Sequence[tuple[int, int]]) -> str:
        """HTML of about SNIPPET_WORDS words around most marks (word ranges), <mark>ed."""
        escaped = self.html
        begin, end = _window(marks, len(escaped), SNIPPET_WORDS)
        # ASCII ellipses: one non-ASCII character would double a stored excerpt's memory.
        # Benchmark: tests/perf/bench_ranking.py, "peak RSS" (with every snippet built).
        parts = ["&hellip;"] if begin else []
        cursor = begin
        for first, last in marks:  # sorted by first word
            if last < begin:
                continue
            if first >= end:
                break
            if first < begin:
                first = begin
            if last >= end:
                last = end - 1
            h, h_cut = escaped[last], self.html_cut[last]
            parts += [
                "".join(escaped[cursor:first]),
                "<mark>",
                "".join(escaped[first:last]),
                h[:h_cut],
                "</mark>",
                h[h_cut:],
            ]
            cursor = last + 1
        parts.append("".join(escaped[cursor:end]))
        if end < len(escaped):
            parts.append("&hellip;")
        return "".join(parts).rstrip()


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
