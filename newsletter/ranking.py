"""Pure scoring of papers against keyword profiles: BM25F, phrases, explanations, top-k.

How a paper scores for a profile, from 0 to 100:

* Each text entry is matched with BM25F over the title (weight 3), the HF AI keywords (2) and
  the abstract (1), each field length-normalized (b = 0.3, 0.3, 0.75; k1 = 1.2). Its
  *strength* is the BM25 saturation ``tf / (tf + k1)`` in [0, 1), i.e. the BM25 score over the
  most any paper could get, so rare and common words are on one scale: one title mention is
  0.71, one abstract mention 0.45, a title and a few abstract mentions 0.8-0.9.
* A phrase counts only where its terms are adjacent after normalization (no punctuation in
  between). An unquoted multi-word entry takes 70% of its strength from the phrase and 30%
  from its words anywhere in the paper (all must occur). A one-word entry takes 30% from the
  word's own inflections ("supervision", "supervisions") and 70% from its stem, so
  "supervision" prefers papers about supervision over papers that are merely "supervised".
* A matched entry is worth ``0.2 + 0.8 * strength`` (the floor is 0.06 instead of 0.2 when
  its words are found only apart): the floor is the coverage bonus, every entry a paper
  covers adds at least 20% of its weight. `author:` and `cat:` entries are worth 1 when they match.
* The score is 100 x the weighted mean worth over the profile's entries x the paper's prior.
  100 means every entry matched as strongly as possible, so a minimum score means the same for
  every subscriber and every edition, whatever the number of papers that day.
* `author:` entries select like keywords. `cat:` entries select when the profile has nothing
  else; beside keywords or authors they steer: papers outside the listed categories keep 70%.
* Exclusions remove a paper; papers in `exclude_ids` (already sent) are never returned.
* The prior, ``1 - w * (1 - popularity) - 0.02 * (1 - freshness)``, breaks near-ties:
  popularity is log(1 + upvotes) relative to the index's most upvoted paper (w is
  `popularity_weight`, 0.05 by default), freshness ``exp(-age in days / 30)``. Exact ties go to
  the more recent, then more upvoted paper.

Ranking many profiles (`PaperIndex.rank_many`): equal profiles are scored once; scores of a
block of profiles are one sparse (profiles x entries) by dense (entries x papers) product;
explanations are built for the chosen papers only, and excerpts when first read.

Everything here is a function of its arguments (papers, profiles, `now`): no I/O, no state
beyond the index being built, so the web preview, the CLI and the workers rank identically.
"""

from __future__ import annotations

import gc
import html
import math
import re
import sys
from bisect import bisect_left
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date, datetime
from itertools import repeat
from operator import itemgetter
from typing import Any, NamedTuple, overload

import numpy as np
import scipy.sparse as sp

from newsletter.analysis import (
    CONCEPT,
    Analyzer,
    Token,
    mine_acronyms,
    name_words,
    names_match,
    phrase_spans,
    split_words,
)
from newsletter.paper import Paper
from newsletter.profile import Entry, MatchKey, Profile, parse_profile

K1 = 1.2
FIELDS = ("title", "keywords", "abstract")
FIELD_WEIGHT = {"title": 3.0, "keywords": 2.0, "abstract": 1.0}
FIELD_B = {"title": 0.3, "keywords": 0.3, "abstract": 0.75}
TITLE, KEYWORDS, ABSTRACT, AUTHORS, CATEGORIES = 1, 2, 4, 8, 16
FIELD_BIT = {"title": TITLE, "keywords": KEYWORDS, "abstract": ABSTRACT}
EXACT_SHARE = 0.3  # of a one-word entry's strength that needs the word itself, not its stem
LOOSE_SHARE = 0.3  # of an unquoted multi-word entry's strength that needs no adjacency
COVERAGE_FLOOR = 0.2  # what any matched entry is worth, however weak: covering more pays
CATEGORY_SHARE = 0.3  # of the score lost by papers outside the categories a profile lists
RECENCY_WEIGHT = 0.02
RECENCY_DAYS = 30.0
SNIPPET_WORDS = 45  # about 300 characters of abstract
FEATURE_CACHE = 100_000
CODE_ENTRIES = 12  # positive entries whose match pattern fits one 64-bit integer
# Dense is faster, sparse smaller. Benchmark: tests/perf/bench_ranking.py, "rank_many", "peak RSS".
DENSE_LIMIT = 50_000_000  # features x papers cells kept dense while ranking (200 MB)
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


@dataclass(frozen=True)
class Match:
    """One paper chosen for a profile, with why: the entries that matched and where."""

    # Slots keep a million matches small; the snippets live in private slots behind _Snippet.
    # Benchmark: tests/perf/bench_ranking.py, "peak RSS" after rank_many (target <= 1024 MiB).
    __slots__ = ("paper_id", "score", "matched", "where", "_snippet_html", "_snippet_text")

    paper_id: str
    score: float  # 0-100
    matched: tuple[str, ...]  # the profile's entries that matched, as the subscriber wrote them
    # entry -> fields among "title", "abstract", "keywords", "authors", "categories".
    # Shared between the matches of one subscriber: read it, do not modify it.
    where: dict[str, tuple[str, ...]]
    snippet_html: str = _Snippet(0)  # type: ignore[assignment]  # HTML-escaped, <mark>ed
    snippet_text: str = _Snippet(1)  # type: ignore[assignment]  # the same, matches as *word*

    def __hash__(self) -> int:  # `where` is a dict: hash the rest
        return hash((self.paper_id, self.score, self.matched, self.snippet_html))

    def __reduce__(self) -> tuple[Any, ...]:
        """Pickle (for queues, caches) with the excerpts built."""
        return (Match, tuple(getattr(self, f) for f in _MATCH_FIELDS))


_MATCH_FIELDS = ("paper_id", "score", "matched", "where", "snippet_html", "snippet_text")
# A Match built by hand (_Explainer.matches). Benchmark: tests/perf/bench_ranking.py, "rank_many".
_NEW = object.__new__
_SET_SLOTS = tuple(
    getattr(Match, name).__set__
    for name in ("paper_id", "score", "matched", "where", "_snippet_html", "_snippet_text")
)


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


# Slots: up to FEATURE_CACHE of these an index. Benchmark: tests/perf/bench_ranking.py, "peak RSS".
@dataclass(frozen=True, slots=True)
class _Feature:
    """What one entry matches: papers (sorted), what each match is worth (0, 1], field bits."""

    papers: np.ndarray
    worths: np.ndarray
    masks: np.ndarray
    phrase: tuple[str, ...] = ()
    words: tuple[str, ...] = ()  # for loose entries: the words that may match apart


_NO_PAPERS = np.zeros(0, dtype=np.int64)


class _Field:
    """One text field of every paper: its tokens by term (for explanations), length norms."""

    def __init__(self, name: str, texts: list[dict[str, list[Token]]], lengths: np.ndarray):
        self.name, self.bit = name, FIELD_BIT[name]
        self.tokens = texts  # per paper: term -> tokens
        average = max(float(lengths.mean()) if len(lengths) else 0.0, 1.0)
        b = FIELD_B[name]
        self.norm = FIELD_WEIGHT[name] / (1.0 - b + b * lengths / average)


class _Positions:
    """Every token of every field as sorted arrays, to find terms and phrases in numpy.

    A row is (term id, unit, first word position, last word position), where a unit is one
    field of one paper (paper * fields + field). Rows are sorted by term, unit and position:
    a term's occurrences are one slice, and a phrase is found by joining slices on "the next
    token starts where the previous one ended".
    """

    def __init__(
        self,
        fields: Sequence[_Field],
        exact: Sequence[Sequence[list[tuple[str, int]]]],
        term_ids: dict[str, int],
    ) -> None:
        self.n_fields = len(fields)
        tids: list[int] = []
        units: list[int] = []
        firsts: list[int] = []
        lasts: list[int] = []
        for f, field_ in enumerate(fields):
            for paper, by_term in enumerate(field_.tokens):
                unit = paper * self.n_fields + f
                for term, occurrences in by_term.items():
                    tid = term_ids.setdefault(term, len(term_ids))
                    tids.extend(repeat(tid, len(occurrences)))
                    units.extend(repeat(unit, len(occurrences)))
                    firsts.extend(map(_FIRST_OF, occurrences))
                    lasts.extend(map(_LAST_OF, occurrences))
                # Exact (inflection-free) word forms: rows only, never phrases or snippets.
                forms = exact[f][paper]
                tids.extend([term_ids.setdefault(form, len(term_ids)) for form, _ in forms])
                units.extend(repeat(unit, len(forms)))
                at = [position for _, position in forms]
                firsts.extend(at)
                lasts.extend(at)
        order = np.lexsort((np.asarray(firsts), np.asarray(units), np.asarray(tids)))
        self.tid = np.asarray(tids, dtype=np.int64)[order]
        self.unit = np.asarray(units, dtype=np.int64)[order]
        self.first = np.asarray(firsts, dtype=np.int64)[order]
        self.last = np.asarray(lasts, dtype=np.int64)[order]
        self.span = int(self.last.max(initial=0)) + 2  # positions are below this
        self.bounds = np.searchsorted(self.tid, np.arange(len(term_ids) + 1)).tolist()
        self.norm = np.column_stack([f.norm for f in fields]).ravel() if fields else _NO_NORM
        self.bits = np.array([f.bit for f in fields], dtype=np.uint8)

    def counts(self, tids: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
        """(units, occurrences) of a phrase given as term ids (-1: a term never seen)."""
        if min(tids) < 0:
            return _NO_PAPERS, _NO_PAPERS
        where = slice(self.bounds[tids[0]], self.bounds[tids[0] + 1])
        unit, first, last = self.unit[where], self.first[where], self.last[where]
        for tid in tids[1:]:
            if not len(unit):
                break
            unit, first, last = self._follow(unit, last, first, tid)
        if not len(unit):
            return _NO_PAPERS, _NO_PAPERS
        starts = _run_starts(unit)  # unit is sorted
        ends = np.append(starts[1:], len(unit))
        return unit[starts], (ends - starts).astype(np.float64)

    def _follow(
        self, unit: np.ndarray, last: np.ndarray, first: np.ndarray, tid: int
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Extend partial matches by the tokens of `tid` that start right after them."""
        where = slice(self.bounds[tid], self.bounds[tid + 1])
        wanted = unit * self.span + last + 1
        found = self.unit[where] * self.span + self.first[where]  # sorted: unit, then first
        lo = np.searchsorted(found, wanted, "left")
        n = np.searchsorted(found, wanted, "right") - lo
        if not n.any():
            return _NO_PAPERS, _NO_PAPERS, _NO_PAPERS
        source = np.repeat(np.arange(len(wanted)), n)
        offsets = np.arange(int(n.sum())) - np.repeat(np.cumsum(n) - n, n)
        target = where.start + np.repeat(lo, n) + offsets
        unit, first, last = unit[source], first[source], self.last[target]
        # Two routes to the same span (a word, or a compound covering it) count once.
        key = np.sort((unit * self.span + first) * self.span + last)
        key = key[_run_starts(key)]
        last = key % self.span
        first = (key // self.span) % self.span
        return key // (self.span * self.span), first, last


_NO_NORM = np.zeros(0)
_NO_BITS = np.zeros(0, dtype=np.uint8)
_FIRST_OF, _LAST_OF = itemgetter(1), itemgetter(2)  # Token.first, Token.last


def _run_starts(values: np.ndarray) -> np.ndarray:
    """Indexes where a sorted array's runs of equal values begin."""
    starts = np.flatnonzero(values[1:] != values[:-1]) + 1
    return np.concatenate((_FIRST, starts)) if len(values) else starts


_FIRST = np.zeros(1, dtype=np.int64)


class PaperIndex:
    """The papers of an edition, analyzed once, ready to rank any number of profiles."""

    def __init__(
        self,
        papers: Sequence[Paper],
        *,
        now: datetime | None = None,
        popularity_weight: float = 0.05,
    ) -> None:
        if not 0.0 <= popularity_weight <= 1.0:
            raise ValueError("popularity_weight must be between 0 and 1")
        with _paused_gc():
            self._build(papers, now, popularity_weight)

    def _build(
        self, papers: Sequence[Paper], now: datetime | None, popularity_weight: float
    ) -> None:
        unique = {p.id: p for p in reversed(papers)}  # the first of duplicate ids wins
        self.papers: list[Paper] = sorted(unique.values(), key=_preference)
        self.position = {p.id: i for i, p in enumerate(self.papers)}
        self.ids = frozenset(self.position)
        words = {name: [split_words(_text(p, name)) for p in self.papers] for name in FIELDS}
        defined = [mine_acronyms(f"{p.title}. {p.abstract}") for p in self.papers]
        vocabulary = {w.folded for texts in words.values() for ws in texts for w in ws}
        self.analyzer = Analyzer(vocabulary, [pair for pairs in defined for pair in pairs])
        local = [self.analyzer.local_acronyms(pairs) for pairs in defined]
        self.term_ids: dict[str, int] = {}
        self.fields = {
            name: _Field(
                name,
                [self.analyzer.postings(ws, loc) for ws, loc in zip(texts, local, strict=True)],
                np.array([len(ws) for ws in texts], dtype=np.float64),
            )
            for name, texts in words.items()
        }
        exact = [[self.analyzer.exact_forms(ws) for ws in texts] for texts in words.values()]
        self.positions = _Positions(list(self.fields.values()), exact, self.term_ids)
        self.prior = _prior(self.papers, now, popularity_weight).astype(np.float32)
        self._authors = _author_index(self.papers)
        self._features: dict[tuple[Any, ...], _Feature] = {}
        self._df = _document_frequencies(self.positions, len(self.term_ids))

    def __len__(self) -> int:
        return len(self.papers)

    # Ranking -------------------------------------------------------------------------------
    def rank(
        self,
        profile: Profile,
        *,
        top_k: int = 10,
        min_score: float = 0.0,
        exclude_ids: frozenset[str] = frozenset(),
    ) -> list[Match]:
        """The best `top_k` papers for one profile, best first."""
        return self.rank_many(
            [profile], top_k=top_k, min_score=min_score, exclude_ids=[exclude_ids]
        )[0]

    def rank_many(
        self,
        profiles: Sequence[Profile],
        *,
        top_k: int | Sequence[int] = 10,
        min_score: float = 0.0,
        exclude_ids: Sequence[frozenset[str]] | None = None,
        block_size: int = 2048,
    ) -> list[list[Match]]:
        """Rank every profile; equal profiles are scored once, in blocks of `block_size`."""
        n = len(profiles)
        ks = [top_k] * n if isinstance(top_k, int) else list(top_k)
        excluded = list(exclude_ids) if exclude_ids is not None else [frozenset()] * n
        if len(ks) != n or len(excluded) != n:
            raise ValueError("top_k and exclude_ids need one value per profile")
        if not self.papers or not n:
            return [[] for _ in range(n)]
        with _paused_gc():
            return self._rank_many(profiles, ks, excluded, min_score, block_size)

    def _rank_many(
        self,
        profiles: Sequence[Profile],
        ks: list[int],
        excluded: list[frozenset[str]],
        min_score: float,
        block_size: int,
    ) -> list[list[Match]]:
        slots, representatives = _deduplicate(profiles)
        already = [self._positions(ids) for ids in excluded]
        needed = np.zeros(len(representatives), dtype=np.int64)
        for slot, k, sent in zip(slots, ks, already, strict=True):
            needed[slot] = max(needed[slot], max(k, 0) + len(sent))
        plan = _Plan(self, representatives)
        candidates = plan.top(needed, min_score, max(block_size, 1))
        explain = _Explainer(self, plan)
        compiled = [
            explain.compiled(profile, representatives[slot], slot)
            for profile, slot in zip(profiles, slots, strict=True)
        ]
        return [
            explain.matches(c, candidates[slot], k, sent)
            for c, slot, k, sent in zip(compiled, slots, ks, already, strict=True)
        ]

    def _positions(self, ids: frozenset[str]) -> frozenset[int]:
        if not ids:
            return frozenset()
        return frozenset(self.position[i] for i in ids & self.ids)

    # Features --------------------------------------------------------------------------------
    def feature(self, entry: Entry) -> _Feature:
        """What an entry matches in this index (cached: many profiles share entries)."""
        # Benchmark: tests/perf/bench_ranking.py, "rank_many".
        key = self._feature_key(entry)
        found = self._features.get(key)
        if found is None:
            if len(self._features) >= FEATURE_CACHE:
                self._features.clear()
            found = self._features[key] = self._compute(key)
        return found

    def _feature_key(self, entry: Entry) -> tuple[Any, ...]:
        if entry.kind != "text":
            return (entry.kind, entry.terms)
        phrase = self.analyzer.query_terms(entry.value)
        if entry.mode == "loose" and not entry.exclude:
            return ("loose", phrase, self.analyzer.bag_terms(entry.value), None)
        # The entry's own word form counts extra, unless this corpus reads it as an acronym.
        own = entry.exact and len(phrase) == 1 and not phrase[0].startswith(CONCEPT)
        return ("phrase", phrase, (), entry.exact if own else None)

    def _compute(self, key: tuple[Any, ...]) -> _Feature:
        kind = key[0]
        if kind == "author":
            return self._author_feature(key[1])
        if kind == "cat":
            return self._category_feature(key[1][0])
        phrase, words, exact = key[1], key[2], key[3]
        strength, masks = self._phrase_strength(phrase)
        if exact is not None:
            # A word's own inflections count a little more than its derivations.
            own, _ = self._phrase_strength((exact,))
            strength = (1.0 - EXACT_SHARE) * strength + EXACT_SHARE * own
        floor = np.where(strength > 0, COVERAGE_FLOOR, 0.0)
        if kind == "loose" and words:
            loose, loose_masks = self._words_strength(words)
            masks = np.where(masks > 0, masks, loose_masks)
            strength = (1.0 - LOOSE_SHARE) * strength + LOOSE_SHARE * loose
            # Words found only apart earn a share of the coverage floor, not all of it.
            floor = np.where(floor > 0, floor, np.where(loose > 0, LOOSE_SHARE * COVERAGE_FLOOR, 0))
        worth = floor + (1.0 - COVERAGE_FLOOR) * strength
        papers = np.flatnonzero(strength > 0).astype(np.int32)
        return _Feature(
            papers,
            worth[papers].astype(np.float32),
            masks[papers].astype(np.uint8),
            phrase,
            words if kind == "loose" else (),
        )

    def _phrase_strength(self, phrase: tuple[str, ...]) -> tuple[np.ndarray, np.ndarray]:
        """BM25F saturation of a phrase (or single term) in every paper, and its field bits."""
        n = len(self.papers)
        table = self.positions
        units, counts = table.counts([self.term_ids.get(term, -1) for term in phrase])
        papers = units // table.n_fields
        tf = np.bincount(papers, weights=table.norm[units] * counts, minlength=n)
        masks = np.zeros(n, dtype=np.uint8)
        np.bitwise_or.at(masks, papers, table.bits[units % table.n_fields])
        return tf / (tf + K1), masks

    def _words_strength(self, words: tuple[str, ...]) -> tuple[np.ndarray, np.ndarray]:
        """IDF-weighted mean saturation of words found anywhere, where all of them occur."""
        total = np.zeros(len(self.papers))
        every = np.ones(len(self.papers), dtype=bool)
        masks = np.zeros(len(self.papers), dtype=np.uint8)
        weights = 0.0
        for word in words:
            strength, word_masks = self._phrase_strength((word,))
            idf = self.idf(word)
            total += idf * strength
            weights += idf
            every &= strength > 0
            masks |= word_masks
        return np.where(every, total / max(weights, 1e-9), 0.0), masks

    def idf(self, term: str) -> float:
        """BM25's inverse document frequency of a term in this index."""
        tid = self.term_ids.get(term, -1)
        df = int(self._df[tid]) if tid >= 0 else 0
        n = len(self.papers)
        return math.log(1.0 + (n - df + 0.5) / (df + 0.5))

    def _author_feature(self, wanted: tuple[str, ...]) -> _Feature:
        papers = sorted(
            {p for p, author in self._authors.get(wanted[-1], ()) if names_match(wanted, author)}
        )
        return _constant_feature(papers, AUTHORS)

    def _category_feature(self, wanted: str) -> _Feature:
        papers = [
            i
            for i, paper in enumerate(self.papers)
            if any(
                c.casefold() == wanted or c.casefold().startswith(wanted + ".")
                for c in paper.categories
            )
        ]
        return _constant_feature(papers, CATEGORIES)


@contextmanager
def _paused_gc() -> Iterator[None]:
    """Pause cyclic garbage collection while building many long-lived, acyclic objects.

    Building an index or a million matches allocates millions of containers; with the
    collector on, CPython re-scans them over and over for cycles there are none of (half the
    time of a build). Turning it back on would scan them all once more as young objects, so
    they are promoted to the oldest generation first (freeze + unfreeze only moves lists):
    any real garbage cycle among them is still found by the next full collection.
    """
    # Benchmark: tests/perf/bench_ranking.py, "build index" and "rank_many" (wall and CPU seconds).
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            if gc.get_freeze_count() == 0:  # leave alone a process that froze objects itself
                gc.freeze()
                gc.unfreeze()
            gc.enable()


def _constant_feature(papers: Sequence[int], bit: int) -> _Feature:
    return _Feature(
        np.asarray(papers, dtype=np.int32),
        np.ones(len(papers), dtype=np.float32),
        np.full(len(papers), bit, dtype=np.uint8),
    )


def _text(paper: Paper, name: str) -> str:
    if name == "title":
        return paper.title
    if name == "abstract":
        return paper.abstract
    return "; ".join(paper.keywords)


def _preference(paper: Paper) -> tuple[int, int, str]:
    """Order of papers in the index; on exact score ties the earlier one wins."""
    day = paper.published.toordinal() if paper.published else 0
    return (-day, -paper.upvotes, paper.id)


def _prior(papers: Sequence[Paper], now: datetime | None, popularity_weight: float) -> np.ndarray:
    """Per-paper factor in (0.9, 1]: popularity and freshness, neutral where nothing is known."""
    upvotes = np.array([max(p.upvotes, 0) for p in papers], dtype=np.float64)
    best = float(upvotes.max()) if len(upvotes) else 0.0
    popularity = np.log1p(upvotes) / math.log1p(best) if best > 0 else np.ones(len(papers))
    days = [p.published for p in papers if p.published is not None]
    today = now.date() if now is not None else max(days, default=date.today())
    oldest = min(days, default=today)
    ages = np.array([(today - (p.published or oldest)).days for p in papers], dtype=np.float64)
    freshness = np.exp(-np.clip(ages, 0, None) / RECENCY_DAYS)
    return 1.0 - popularity_weight * (1.0 - popularity) - RECENCY_WEIGHT * (1.0 - freshness)


def _author_index(papers: Sequence[Paper]) -> dict[str, list[tuple[int, tuple[str, ...]]]]:
    index: dict[str, list[tuple[int, tuple[str, ...]]]] = {}
    for i, paper in enumerate(papers):
        for author in paper.authors:
            words = name_words(author)
            if words:
                index.setdefault(words[-1], []).append((i, words))
    return index


def _document_frequencies(table: _Positions, n_terms: int) -> np.ndarray:
    """Number of papers each term id occurs in (any field)."""
    papers = table.unit // table.n_fields
    key = table.tid * (int(papers.max(initial=0)) + 1) + papers  # sorted: rows go by tid, unit
    return np.bincount(table.tid[_run_starts(key)], minlength=n_terms)


def _deduplicate(profiles: Sequence[Profile]) -> tuple[list[int], list[Profile]]:
    """Slot of each profile, and one representative per distinct profile."""
    slot_of: dict[Profile, int] = {}
    slots = []
    for profile in profiles:
        slots.append(slot_of.setdefault(profile, len(slot_of)))
    return slots, list(slot_of)


# Vectorized scoring ------------------------------------------------------------------------


class _Plan:
    """The distinct profiles of one call as sparse matrices over the features they use.

    Scores are one sparse product: profiles x features (entry weight / profile weight) times
    features x papers (entry value: coverage floor + strength, times 100 x the paper's prior).
    Exclusions and category steering are sparse corrections on the rows that have them.
    """

    def __init__(
        self, index: PaperIndex, profiles: Sequence[Profile], dense_limit: int = DENSE_LIMIT
    ) -> None:
        self.index, self.dense_limit = index, dense_limit
        self.columns: dict[Entry, int] = {}
        self._by_key: dict[MatchKey, int] = {}
        self.features: list[_Feature] = []
        self._profile_matrices(profiles)
        self.values, self.present, self.mask_matrix = self._feature_matrices()
        self.masks = [row.tobytes() for row in self.mask_matrix[:-1]]

    def _profile_matrices(self, profiles: Sequence[Profile]) -> None:
        """Weights, exclusions, category steering and positive columns of every profile.

        Profiles share Entry objects (the parser caches them), so each entry is looked at once
        and the rest is array arithmetic over (profile, entry) pairs.
        """
        ids: dict[Entry, int] = {}
        flat: list[int] = []
        lengths: list[int] = []
        for profile in profiles:
            entries = profile.entries
            lengths.append(len(entries))
            flat.extend([ids.setdefault(e, len(ids)) for e in entries])
        distinct = list(ids)
        column = np.array([self.column(e) for e in distinct], dtype=np.int64)
        exclude = np.array([e.exclude for e in distinct], dtype=bool)
        category = np.array([e.kind == "cat" for e in distinct], dtype=bool)
        weight = np.array([e.weight for e in distinct], dtype=np.float64)
        at = np.asarray(flat, dtype=np.int64)
        rows = np.repeat(np.arange(len(profiles)), lengths)
        positive = ~exclude[at]
        keyword = positive & ~category[at]
        has_keyword = np.bincount(rows, weights=keyword, minlength=len(profiles)) > 0
        selecting = keyword | (positive & ~has_keyword[rows])  # only cat: they select
        steering = positive & category[at] & has_keyword[rows]
        totals = np.bincount(rows, weights=weight[at] * selecting, minlength=len(profiles))
        shape = (len(profiles), len(self.features))
        cols = column[at]
        share = weight[at] / np.maximum(totals[rows], 1e-9)
        self.weights = _csr(rows[selecting], cols[selecting], share[selecting], shape)
        self.categories = _csr(rows[steering], cols[steering], np.ones(int(steering.sum())), shape)
        excluded = ~positive
        self.exclusions = _csr(rows[excluded], cols[excluded], np.ones(int(excluded.sum())), shape)
        # Positive columns in written order, padded (for the block-wise match patterns).
        seen = np.cumsum(positive)  # positives so far, over all profiles
        first = np.repeat(np.cumsum(lengths) - lengths, lengths)  # each pair's row start
        rank = seen - 1 - np.where(first > 0, seen[np.maximum(first - 1, 0)], 0)
        counts = np.bincount(rows, weights=positive, minlength=len(profiles)).astype(np.int64)
        self.coded = counts <= CODE_ENTRIES
        self.padded = np.full((len(profiles), CODE_ENTRIES), len(self.features), dtype=np.int64)
        fits = positive & (rank < CODE_ENTRIES)
        self.padded[rows[fits], rank[fits]] = cols[fits]
        self.positive_counts = counts

    def column(self, entry: Entry) -> int:
        """The feature column of an entry (entries differing only in weight or sign share)."""
        found = self.columns.get(entry)
        if found is None:
            key = entry.match_key
            found = self._by_key.get(key)
            if found is None:
                found = self._by_key[key] = len(self.features)
                self.features.append(self.index.feature(entry))
            self.columns[entry] = found
        return found

    def _feature_matrices(self) -> tuple[Any, Any, np.ndarray]:
        """features x papers: what a matched entry is worth (x 100 x the paper's prior),
        1 where it matches, and its field bits (with an extra all-0 row for padding).

        Dense matrices make the product a fast sparse x dense one; beyond DENSE_LIMIT cells
        (a huge index) the first two stay sparse to bound memory.
        """
        n_features, n_papers = len(self.features), len(self.index.papers)
        sizes = [len(f.papers) for f in self.features]
        rows = np.repeat(np.arange(n_features), sizes)
        if self.features:
            columns = np.concatenate([f.papers for f in self.features])
            worth = np.concatenate([f.worths for f in self.features])
            bits = np.concatenate([f.masks for f in self.features])
        else:
            columns, worth, bits = np.zeros(0, np.int32), np.zeros(0, np.float32), _NO_BITS
        values = (worth * 100.0 * self.index.prior[columns]).astype(np.float32)
        masks = np.zeros((n_features + 1, n_papers), dtype=np.uint8)
        masks[rows, columns] = bits
        shape = (n_features, n_papers)
        if n_features * n_papers <= self.dense_limit:
            dense = np.zeros(shape, dtype=np.float32)
            dense[rows, columns] = values
            return dense, (masks[:-1] > 0).astype(np.float32), masks
        indptr = np.zeros(n_features + 1, dtype=np.int64)
        np.cumsum(sizes, out=indptr[1:])
        present = sp.csr_matrix((np.ones_like(values), columns, indptr), shape=shape)
        return sp.csr_matrix((values, columns, indptr), shape=shape), present, masks

    def _patterns(self, start: int, stop: int, picked: np.ndarray) -> np.ndarray:
        """For each chosen paper, the field bits of every positive entry of the profile, 5 bits
        per entry in one integer (-1 for profiles with over CODE_ENTRIES entries): the key of
        the explanation, computed here for the whole block at once."""
        codes = np.zeros(picked.shape, dtype=np.int64)
        longest = int(self.positive_counts[start:stop].max(initial=0))
        for e in range(min(longest, CODE_ENTRIES)):
            columns = self.padded[start:stop, e]
            codes |= self.mask_matrix[columns[:, None], picked].astype(np.int64) << (5 * e)
        codes[~self.coded[start:stop]] = -1
        return codes

    def scores(self, start: int, stop: int) -> np.ndarray:
        """Scores 0-100 of profiles start..stop (rows) for every paper (columns)."""
        scores = _dense(self.weights[start:stop] @ self.values)
        steer = self.categories[start:stop]
        steered = np.flatnonzero(steer.getnnz(axis=1))
        if len(steered):
            outside = _dense(steer[steered] @ self.present) == 0
            scores[steered] *= np.where(outside, 1.0 - CATEGORY_SHARE, 1.0).astype(np.float32)
        excluding = self.exclusions[start:stop]
        rows = np.flatnonzero(excluding.getnnz(axis=1))
        if len(rows):
            hit = _dense(excluding[rows] @ self.present) > 0
            scores[rows] = np.where(hit, 0.0, scores[rows])
        return scores

    def top(self, needed: np.ndarray, min_score: float, block_size: int) -> list[_Candidates]:
        """For each profile, its best `needed` papers scoring at least `min_score`, best first,
        with their scores and match patterns (see `_patterns`).

        Ties go to the paper earlier in the index (more recent, more upvoted), whatever the
        block or `needed`, so ranking one profile or many gives the same answer.
        """
        out: list[_Candidates] = []
        n_papers = len(self.index.papers)
        floor = max(min_score, 1e-6)
        for start in range(0, len(needed), block_size):
            stop = min(start + block_size, len(needed))
            k = int(min(needed[start:stop].max(initial=0), n_papers))
            if k <= 0:
                out.extend(([], [], []) for _ in range(start, stop))
                continue
            scores = self.scores(start, stop)
            picked = _top_columns(scores, k)
            values = np.take_along_axis(scores, picked, axis=1)
            limits = np.minimum(needed[start:stop], k)
            counts = np.minimum(np.count_nonzero(values >= floor, axis=1), limits).tolist()
            rounded = np.round(values.astype(np.float64), 2).tolist()
            patterns = self._patterns(start, stop, picked).tolist()
            for papers, found, codes, count in zip(
                picked.tolist(), rounded, patterns, counts, strict=True
            ):
                out.append((papers[:count], found[:count], codes[:count]))
        return out


def _top_columns(scores: np.ndarray, k: int) -> np.ndarray:
    """Per row, the columns of the k best scores, best first, ties by lower column."""
    n = scores.shape[1]
    if k < n:
        picked = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    else:
        picked = np.broadcast_to(np.arange(n), scores.shape).copy()
    values = np.take_along_axis(scores, picked, axis=1)
    order = np.lexsort((picked, -values), axis=1)
    picked = np.take_along_axis(picked, order, axis=1)
    if k < n:
        # argpartition keeps an arbitrary subset of the papers tied at the k-th score:
        # rows where more papers share it than were kept are redone to keep the lowest columns.
        kth = np.take_along_axis(scores, picked[:, -1:], axis=1)
        tied = np.count_nonzero(scores == kth, axis=1)
        kept = np.count_nonzero(np.take_along_axis(scores, picked, axis=1) == kth, axis=1)
        for r in np.flatnonzero((tied > kept) & (kth[:, 0] > 0)):
            row = scores[r]
            candidates = np.flatnonzero(row >= kth[r, 0])
            best = candidates[np.lexsort((candidates, -row[candidates]))][:k]
            picked[r] = best
    return picked


_Candidates = tuple[list[int], list[float], list[int]]  # papers, scores, patterns


def _dense(matrix: Any) -> np.ndarray:
    return np.asarray(matrix.toarray() if sp.issparse(matrix) else matrix)


def _csr(rows: np.ndarray, cols: np.ndarray, values: np.ndarray, shape: tuple[int, int]) -> Any:
    matrix = sp.coo_matrix((values.astype(np.float32), (rows, cols)), shape=shape)
    return matrix.tocsr()


# Explanations --------------------------------------------------------------------------------


class _Why(NamedTuple):
    """What a pattern of field bits means for one written profile."""

    matched: tuple[str, ...]
    where: dict[str, tuple[str, ...]]
    highlight: int  # id of the set of feature columns matched in the abstract


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
        self._highlight_sets: list[tuple[int, ...]] = []
        self._highlights: dict[tuple[int, int], list[tuple[int, int]]] = {}
        self._abstracts: dict[int, _Pieces] = {}
        self._lazy: dict[int, _LazySnippet] = {}  # highlight id * papers + paper -> excerpt
        self.ids = [p.id for p in index.papers]

    def compiled(self, profile: Profile, representative: Profile, slot: int) -> _Compiled:
        """The explanation context of a subscriber's profile (shared by equal texts)."""
        key = (representative, profile.source or str(id(profile)))
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
        new, (set_id, set_score, set_matched, set_where, set_html, set_text) = _NEW, _SET_SLOTS
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
            matched, where, highlight = why
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
            tuple([labels[i] for i in hits]), {labels[i]: names[pattern[i]] for i in hits}, hid
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


# Conveniences --------------------------------------------------------------------------------


def rank_papers(papers: Sequence[Paper], profile: Profile | str, **kw: Any) -> list[Match]:
    """Rank `papers` for one profile (text or parsed); keywords as for `PaperIndex.rank`."""
    index_options = {k: kw.pop(k) for k in ("now", "popularity_weight") if k in kw}
    parsed = parse_profile(profile) if isinstance(profile, str) else profile
    return PaperIndex(papers, **index_options).rank(parsed, **kw)


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
