"""The papers of an edition analyzed once (fields, token positions, entry features), ranked."""

from __future__ import annotations

import gc
import math
from collections.abc import Hashable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from itertools import chain, count, repeat
from operator import itemgetter
from typing import TYPE_CHECKING, Any

import numpy as np

from newsletter.analysis import (
    CONCEPT,
    Analyzer,
    Token,
    mine_acronyms,
    name_words,
    names_match,
    split_words,
)
from newsletter.paper import Paper
from newsletter.profile import Entry, Profile, parse_profile
from newsletter.ranking.explain import Match, _Explainer, choose, sent_positions
from newsletter.ranking.scoring import (
    AUTHORS,
    CATEGORIES,
    FIELD_B,
    FIELD_BIT,
    FIELD_WEIGHT,
    FIELDS,
    _constant_feature,
    _Feature,
    _Plan,
    _prior,
    _within,
    key_phrases,
    phrase_strengths,
    text_feature,
    text_features,
)

if TYPE_CHECKING:
    from newsletter.ranking.feedback import Learned

FEATURE_CACHE = 100_000
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
        self._term_papers(len(term_ids))

    def _term_papers(self, n_terms: int) -> None:
        """Per term, the papers it occurs in with its BM25F term frequency and field bits:
        a single term's strength is then one scatter instead of a dozen numpy calls.

        Sums go as in `counts` + bincount (norm x count per field, fields in order), so a
        term's frequency is the same number either way.
        """
        # Benchmark: tests/perf/bench_ranking.py, "rank_many" (most entries are one term).
        units = self.tid * (int(self.unit.max(initial=0)) + 1) + self.unit  # sorted
        starts = _run_starts(units)
        counts = np.diff(np.append(starts, len(units)))
        tid, unit = self.tid[starts], self.unit[starts]
        paper = unit // max(self.n_fields, 1)
        pairs = _run_starts(tid * (int(paper.max(initial=0)) + 1) + paper)
        weights = self.norm[unit] * counts if len(unit) else _NO_NORM
        self.term_paper = paper[pairs]
        self.term_tf = np.add.reduceat(weights, pairs) if len(pairs) else _NO_NORM
        bits = self.bits[unit % max(self.n_fields, 1)] if len(unit) else _NO_BITS
        self.term_bits = np.add.reduceat(bits, pairs).astype(np.uint8) if len(pairs) else _NO_BITS
        self.term_bounds = np.searchsorted(tid[pairs], np.arange(n_terms + 1)).tolist()

    def counts_many(
        self, phrases: Sequence[Sequence[int]]
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(phrase, unit, occurrences) of phrases given as term ids (-1: a term never seen),
        sorted by phrase and unit."""
        which, unit, _, _ = self.spans_many(phrases)
        units = int(self.unit.max(initial=0)) + 1
        cells, counts = np.unique(which * units + unit, return_counts=True)
        return cells // units, cells % units, counts.astype(np.float64)

    def spans_many(
        self, phrases: Sequence[Sequence[int]]
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(phrase, unit, first, last) of every occurrence of phrases given as term ids (-1: a
        term never seen; an empty phrase occurs nowhere): all joined at once, a term at a time.

        Every row is one integer (term, unit, first position), sorted as the rows are: the
        tokens that start right after a partial match are one searchsorted away.
        """
        # Benchmark: tests/perf/bench_ranking.py, "rank_many" (thousands of phrases a ranking).
        units = int(self.unit.max(initial=0)) + 1
        span = self.span
        found = (self.tid * units + self.unit) * span + self.first
        lengths = np.fromiter(map(len, phrases), dtype=np.int64, count=len(phrases))
        terms = np.full((len(phrases), int(lengths.max(initial=1))), -1, dtype=np.int64)
        terms[np.repeat(np.arange(len(phrases)), lengths), _within(lengths)] = np.fromiter(
            chain.from_iterable(phrases), dtype=np.int64, count=int(lengths.sum())
        )
        seen = (terms >= 0) | (np.arange(terms.shape[1]) >= lengths[:, None])
        alive = np.flatnonzero(seen.all(axis=1) & (lengths > 0))
        bounds = np.asarray(self.bounds, dtype=np.int64)
        first_terms = terms[alive, 0]
        starts = bounds[first_terms]
        sizes = bounds[first_terms + 1] - starts
        which = np.repeat(alive, sizes)
        rows = np.repeat(starts, sizes) + _within(sizes)
        unit, first, last = self.unit[rows], self.first[rows], self.last[rows]
        done: list[tuple[np.ndarray, ...]] = []
        for j in range(1, terms.shape[1] + 1):
            ending = lengths[which] == j
            done.append((which[ending], unit[ending], first[ending], last[ending]))
            going = ~ending
            which, unit, first, last = which[going], unit[going], first[going], last[going]
            if not len(which):
                break
            # Extend partial matches by the tokens of the next term that start right after.
            wanted = (terms[which, j] * units + unit) * span + last + 1
            lo = np.searchsorted(found, wanted, "left")
            n = np.searchsorted(found, wanted, "right") - lo
            source = np.repeat(np.arange(len(wanted)), n)
            target = np.repeat(lo, n) + _within(n)
            which, unit, first, last = which[source], unit[source], first[source], self.last[target]
            # Two routes to the same span (a word, or a compound covering it) count once.
            key = np.unique(((which * units + unit) * span + first) * span + last)
            last = key % span
            first = (key // span) % span
            unit = (key // (span * span)) % units
            which = key // (span * span * units)
        if not done:
            return _NO_PAPERS, _NO_PAPERS, _NO_PAPERS, _NO_PAPERS
        which, unit, first, last = (np.concatenate(column) for column in zip(*done, strict=True))
        return which, unit, first, last


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
        learned: Learned | None = None,
    ) -> list[list[Match]]:
        """Rank every profile; equal profiles are scored once, in blocks of `block_size`.

        With `learned` (one row per profile, see ranking.feedback), each profile's keyword
        scores are fused with what its ratings teach; equal profiles with other ratings are
        ranked apart."""
        n = len(profiles)
        ks = [top_k] * n if isinstance(top_k, int) else list(top_k)
        excluded = list(exclude_ids) if exclude_ids is not None else [frozenset()] * n
        if len(ks) != n or len(excluded) != n:
            raise ValueError("top_k and exclude_ids need one value per profile")
        if not self.papers or not n:
            return [[] for _ in range(n)]
        with _paused_gc():
            return self._rank_many(profiles, ks, excluded, min_score, block_size, learned)

    def _rank_many(
        self,
        profiles: Sequence[Profile],
        ks: list[int],
        excluded: list[frozenset[str]],
        min_score: float,
        block_size: int,
        learned: Learned | None = None,
    ) -> list[list[Match]]:
        slots, representatives = _deduplicate(profiles, learned.keys if learned else None)
        sent = sent_positions(self.position, excluded)
        needed = np.zeros(len(representatives), dtype=np.int64)
        asked = np.maximum(np.asarray(ks, dtype=np.int64), 0)
        asked += np.bincount(sent.owner, minlength=len(profiles))
        np.maximum.at(needed, np.asarray(slots, dtype=np.int64), asked)
        plan = _Plan(self, representatives)
        if learned is not None:
            owners = np.zeros(len(representatives), dtype=np.int64)  # a profile of each slot
            owners[np.asarray(slots, dtype=np.int64)] = np.arange(len(slots))
            plan.boost = lambda start, stop, scores: learned.fuse(owners[start:stop], scores)
        top = plan.top(needed, min_score, max(block_size, 1))
        chosen = choose(top, slots, ks, sent, len(self.papers))
        liked = None
        if learned is not None:
            liked = learned.liked_papers(chosen.owner, chosen.paper, chosen.score)
        return _Explainer(self, plan).matches(profiles, chosen, liked)

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

    def features(self, entries: Sequence[Entry]) -> list[_Feature]:
        """What each of these entries matches (cached), those not cached worked out together:
        the strengths of all their phrases and words at once (`phrase_strengths`)."""
        keys = [self._feature_key(e) for e in entries]
        missing = list(dict.fromkeys(k for k in keys if k not in self._features))
        if missing:
            text = [k for k in missing if k[0] in ("phrase", "loose")]
            phrases = key_phrases(text)
            known = phrase_strengths(self, phrases)
            if len(self._features) + len(missing) > FEATURE_CACHE:
                self._features.clear()
            self._features.update(zip(text, text_features(self, text, known), strict=True))
            for k in missing:
                if k[0] not in ("phrase", "loose"):
                    self._features[k] = self._compute(k)
        return [self._features[k] for k in keys]

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
        return text_feature(self, kind, key[1], key[2], key[3])

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


def _deduplicate(
    profiles: Sequence[Profile], keys: Sequence[Hashable] | None = None
) -> tuple[list[int], list[Profile]]:
    """Slot of each profile, and one representative per distinct profile (and key), slots
    numbered in the order first met."""
    # Each profile's call number where it was first met, renumbered 0, 1, 2... by np.unique.
    first: dict[Hashable, int] = {}
    items: Iterable[Hashable] = profiles if keys is None else zip(profiles, keys, strict=True)
    met = map(first.setdefault, items, count())
    calls = np.fromiter(met, dtype=np.int64, count=len(profiles))
    firsts, slots = np.unique(calls, return_inverse=True)
    return slots.reshape(-1).tolist(), [profiles[i] for i in firsts.tolist()]


def rank_papers(papers: Sequence[Paper], profile: Profile | str, **kw: Any) -> list[Match]:
    """Rank `papers` for one profile (text or parsed); keywords as for `PaperIndex.rank`."""
    index_options = {k: kw.pop(k) for k in ("now", "popularity_weight") if k in kw}
    parsed = parse_profile(profile) if isinstance(profile, str) else profile
    return PaperIndex(papers, **index_options).rank(parsed, **kw)
