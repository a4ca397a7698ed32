"""Why a paper was chosen: the Match, its matched entries and fields, the marked excerpt."""

from __future__ import annotations

import html
import re
from collections.abc import Mapping, Sequence
from itertools import chain, repeat
from operator import attrgetter
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np

from newsletter.analysis import CONCEPT, Token, words_found
from newsletter.paper import Paper
from newsletter.profile import Entry, Profile
from newsletter.ranking.scoring import (
    ABSTRACT,
    APART,
    AUTHORS,
    CATEGORIES,
    CODE_BITS,
    FIELD_BITS,
    KEYWORDS,
    PARTIAL,
    TITLE,
    _within,
    distinct_entries,
)

if TYPE_CHECKING:
    from newsletter.ranking.index import PaperIndex
    from newsletter.ranking.scoring import _Feature, _Plan, _Top

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


_NOWHERE: dict[str, tuple[str, ...]] = {}


class Match(NamedTuple):
    """One paper chosen for a profile, with why: the entries that matched and where.

    A tuple: ranking 100,000 subscribers makes a million, each in one C call (tuple.__new__
    over zipped columns, see _Explainer.matches), and a field reads as fast as a slot.
    Benchmark: tests/perf/bench_ranking.py, "rank_many".
    """

    paper_id: str
    score: float  # 0-100
    matched: tuple[str, ...] = ()  # the profile's entries that matched, as written
    # entry -> fields among "title", "abstract", "keywords", "authors", "categories".
    # Shared between matches explained alike: read it, do not modify it.
    where: dict[str, tuple[str, ...]] = _NOWHERE
    # The excerpt (read `snippet_html`): a string, or the excerpts of the ranking call, one per
    # paper and matched entries, built together on first read.
    excerpt: str | _Excerpts = ""
    # With a string excerpt, its plain-text form (read `snippet_text`; None: derived from the
    # HTML, as stored); with the call's excerpts, the position of this one among them.
    excerpt_text: str | int | None = None
    # The unquoted multi-word entries of `matched` whose words matched but never side by side
    # (shared like `where`): a digest labels them "diffusion + models", not as the phrase.
    apart: tuple[str, ...] = ()
    # (id, title) of the liked paper this one is most like, when the reader's ratings chose it.
    liked: tuple[str, str] | None = None

    @property
    def snippet_html(self) -> str:
        """The abstract excerpt, HTML-escaped, with the matched words <mark>ed."""
        value = self.excerpt
        if type(value) is str:
            return value
        # Read once per match by the planner. Benchmark: tests/perf/bench_ranking.py, "excerpts".
        built = value._built  # type: ignore[union-attr]
        return built[self.excerpt_text] if built else value.html(self.excerpt_text)  # type: ignore[union-attr, arg-type, index]

    @property
    def snippet_text(self) -> str:
        """The same excerpt as plain text, matches as *word*."""
        text = self.excerpt_text
        return text if type(text) is str else snippet_text(self.snippet_html)

    def fields(self) -> tuple[Any, ...]:
        """Every field as read, the excerpts built: what equality, hashing and pickling see."""
        return (
            self.paper_id,
            self.score,
            self.matched,
            self.where,
            self.snippet_html,
            self.snippet_text,
            self.apart,
            self.liked,
        )

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Match) and self.fields() == other.fields()

    def __ne__(self, other: object) -> bool:
        return not self == other

    def __repr__(self) -> str:
        names = ("paper_id", "score", "matched", "where", "snippet_html", "snippet_text")
        shown = zip((*names, "apart", "liked"), self.fields(), strict=True)
        return f"Match({', '.join(f'{name}={value!r}' for name, value in shown)})"

    def __hash__(self) -> int:  # `where` is a dict: hash the rest
        return hash((self.paper_id, self.score, self.matched, self.snippet_html))

    def __reduce__(self) -> tuple[Any, ...]:
        """Pickle (for queues, caches) with the excerpts built."""
        return (Match, self.fields())


# A Match from one tuple of its fields, in C. Benchmark: tests/perf/bench_ranking.py, "rank_many".
_NEW = tuple.__new__


class _Excerpts:
    """The distinct excerpts of one ranking call, (paper, highlighted feature columns) each,
    built together on first read (a planner reads them all): a Match holds this object and
    the position of its excerpt, no object of its own."""

    # Benchmark: tests/perf/bench_ranking.py, "rank_many" (makes none), "excerpts" (builds all).
    def __init__(
        self,
        index: PaperIndex,
        features: Sequence[_Feature],
        papers: list[int],
        columns: list[tuple[int, ...]],
    ) -> None:
        # What building needs, not the plan: its matrices may go once ranking is done.
        self._index: PaperIndex | None = index
        self._features = features
        self._papers, self._columns = papers, columns
        self._built: list[str] = []

    def html(self, at: int) -> str:
        """The HTML of excerpt `at`, every excerpt built on the first read."""
        if self._index is not None:
            self._build(self._index)
        return self._built[at]

    def _build(self, index: PaperIndex) -> None:
        self._built = build_excerpts(index, self._features, self._papers, self._columns)
        self._index = None
        self._features, self._papers, self._columns = (), [], []


# Explanations --------------------------------------------------------------------------------


class _Sent(NamedTuple):
    """The papers of an index profiles were already sent: (profile, index position) pairs."""

    owner: np.ndarray
    paper: np.ndarray


def sent_positions(position: Mapping[str, int], excluded: Sequence[frozenset[str]]) -> _Sent:
    """The excluded papers that an index (`position`: paper id -> index position) holds."""
    sizes = np.fromiter(map(len, excluded), dtype=np.int64, count=len(excluded))
    ids = chain.from_iterable(excluded)
    found = np.fromiter(map(position.get, ids, repeat(-1)), dtype=np.int64, count=int(sizes.sum()))
    owner = np.repeat(np.arange(len(excluded)), sizes)
    return _Sent(owner[found >= 0], found[found >= 0])


class _Chosen(NamedTuple):
    """The matches of one ranking call, flat, profile by profile and best first."""

    owner: np.ndarray  # the profile (position in the call) of each match
    paper: np.ndarray  # index position
    score: np.ndarray  # 0-100, rounded to 2 places
    counts: np.ndarray  # matches of each profile


def choose(
    top: _Top, slots: Sequence[int], ks: Sequence[int], sent: _Sent, n_papers: int
) -> _Chosen:
    """Each profile's first `k` candidates of its slot that it was not already sent."""
    n = len(slots)
    slot = np.asarray(slots, dtype=np.int64)
    starts = top.indptr[slot]
    lengths = top.indptr[slot + 1] - starts
    owner = np.repeat(np.arange(n), lengths)
    firsts = np.cumsum(lengths) - lengths
    picked = np.repeat(starts, lengths) + _within(lengths)
    paper = top.paper[picked]
    keep = np.ones(len(owner), dtype=bool)
    if len(sent.paper):
        refused = np.sort(sent.owner * n_papers + sent.paper)
        asked = owner * n_papers + paper
        at = np.minimum(np.searchsorted(refused, asked), len(refused) - 1)
        keep = refused[at] != asked
    # The kept candidates before each one, in its profile: the first k stay.
    before = np.concatenate((_ZERO, np.cumsum(keep)))
    rank = before[:-1] - np.repeat(before[firsts], lengths)
    keep &= rank < np.asarray(ks, dtype=np.int64)[owner]
    owner = owner[keep]
    return _Chosen(owner, paper[keep], top.score[picked[keep]], np.bincount(owner, minlength=n))


_ZERO = np.zeros(1, dtype=np.int64)


class _Explainer:
    """Explains the chosen papers of one ranking call: which entries matched where (in numpy:
    the field bits of every positive entry of every match, gathered at once), and excerpts.

    Matches explained alike share one explanation: the same entries (as written) matched in
    the same fields, whoever wrote them, build `matched`, `where` and `apart` once.
    """

    def __init__(self, index: PaperIndex, plan: _Plan) -> None:
        self.index, self.plan = index, plan
        pad = len(plan.features)  # the all-zero row of plan.mask_matrix
        self._entry_ids: dict[tuple[str, int], int] = {("", pad): 0}  # (label, column) -> id
        self._labels, self._columns = [""], [pad]
        self.ids = np.fromiter((p.id for p in index.papers), dtype=object, count=len(index))

    def matches(
        self, profiles: Sequence[Profile], chosen: _Chosen, liked: Sequence[Any] | None = None
    ) -> list[list[Match]]:
        """The chosen papers of each profile as Matches (`liked`: one per match, or None)."""
        entries = self._entries(profiles)[chosen.owner]  # matches x positives (0: none)
        columns = np.asarray(self._columns, dtype=np.int64)
        masks = self.plan.mask_matrix[columns[entries], chosen.paper[:, None]]
        part = np.nonzero(masks & PARTIAL)
        if len(part[0]):  # an entry matched in part is the entry of the words the paper has
            masks[part] &= ~np.uint8(PARTIAL)
            entries[part] = self._partial_ids(entries[part], chosen.paper[part[0]], columns)
            columns = np.asarray(self._columns, dtype=np.int64)
        # Each match's matched entries with their field bits, in written order, one integer
        # each (entry id, bits); the entries that did not match leave zeros at the end.
        hit = masks > 0
        rows, at = np.nonzero(hit)
        codes = np.zeros(entries.shape, dtype=np.int32)
        codes[rows, (np.cumsum(hit, axis=1, dtype=np.int16) - 1)[rows, at]] = (
            entries[rows, at] << CODE_BITS
        ) | masks[rows, at]
        firsts, why = _unique_rows(codes)
        distinct = codes[firsts]
        matched, where, apart = self._whys(distinct)
        highlight, marked = self._highlights(distinct, columns)
        paper, n_papers = chosen.paper, len(self.index)
        places, snippet = np.unique(highlight[why] * n_papers + paper, return_inverse=True)
        excerpts = _Excerpts(
            self.index,
            self.plan.features,
            (places % n_papers).tolist(),
            [marked[h] for h in (places // n_papers).tolist()],
        )
        fields = zip(
            self.ids[paper].tolist(),
            chosen.score.tolist(),
            matched[why].tolist(),
            where[why].tolist(),
            repeat(excerpts),
            snippet.tolist(),
            apart[why].tolist(),
            repeat(None) if liked is None else liked,
        )
        flat = list(map(_NEW, repeat(Match), fields))
        bounds = np.cumsum(chosen.counts).tolist()
        return [flat[a:b] for a, b in zip([0, *bounds[:-1]], bounds, strict=True)]

    def _partial_ids(
        self, entries: np.ndarray, papers: np.ndarray, columns: np.ndarray
    ) -> np.ndarray:
        """For entries each matched in part by a paper, the id of an entry labelled by the
        words that paper has ("contrastive + learning"), in the same feature column (its
        excerpt marks the same words); worked out once per entry and set of words."""
        plan = self.plan
        at = np.searchsorted(plan.partial_keys, columns[entries] * len(self.index) + papers)
        pairs = np.stack([entries.astype(np.uint64), plan.partial_found[at]], axis=1)
        distinct, which = np.unique(pairs, axis=0, return_inverse=True)
        ids = [
            self._words_id(int(entry), int(bits), int(columns[entry]))
            for entry, bits in distinct.tolist()
        ]
        return np.asarray(ids, dtype=np.int32)[which.ravel()]

    def _words_id(self, entry: int, bits: int, column: int) -> int:
        """The id of the entry named by those of entry `entry`'s words set in `bits`."""
        words = self.plan.features[column].words
        has = {w for j, w in enumerate(words) if bits >> j & 1}
        text = self._labels[entry].split("^", 1)[0]
        found = words_found(text, [has], self.index.analyzer) or tuple(
            w for w in text.split() if set(self.index.analyzer.bag_terms(w)) & has
        )
        return self._entry_id_of((" + ".join(found), column))

    def _entries(self, profiles: Sequence[Profile]) -> np.ndarray:
        """Per profile, its positive entries' ids in written order, padded with 0."""
        distinct, lengths, which = distinct_entries(list(map(_POSITIVES, profiles)))
        ids = np.fromiter(map(self._entry_id, distinct), dtype=np.int32, count=len(distinct))
        table = np.zeros((len(profiles), int(lengths.max(initial=0))), dtype=np.int32)
        table[np.repeat(np.arange(len(profiles)), lengths), _within(lengths)] = ids[which]
        return table

    def _entry_id(self, entry: Entry) -> int:
        """The id of an entry as written: its label and feature column (ids from 1)."""
        return self._entry_id_of((entry.label or entry.text, self.plan.column(entry)))

    def _entry_id_of(self, key: tuple[str, int]) -> int:
        found = self._entry_ids.get(key)
        if found is None:
            found = self._entry_ids[key] = len(self._labels)
            self._labels.append(key[0])
            self._columns.append(key[1])
        return found

    def _whys(self, distinct: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """`matched`, `where` and `apart` of each distinct explanation (rows of codes), as
        object arrays: built by number of matched entries, column by column, in C."""
        n, width = distinct.shape
        labels = np.fromiter(self._labels, dtype=object, count=len(self._labels))
        entry, bits = distinct >> CODE_BITS, distinct & FIELD_BITS
        counts = np.count_nonzero(distinct, axis=1)
        matched, where = np.empty(n, dtype=object), np.empty(n, dtype=object)
        for size in range(width + 1):
            rows = np.flatnonzero(counts == size)
            if not len(rows):
                continue
            hits = list(zip(*[labels[entry[rows, j]].tolist() for j in range(size)], strict=True))
            fields = list(zip(*[_NAMES[bits[rows, j]].tolist() for j in range(size)], strict=True))
            if not size:
                hits, fields = [()] * len(rows), [()] * len(rows)
            matched[rows] = np.fromiter(hits, dtype=object, count=len(rows))
            where[rows] = np.fromiter(
                map(dict, map(zip, hits, fields)), dtype=object, count=len(rows)
            )
        apart = np.empty(n, dtype=object)
        apart.fill(())
        for row in np.flatnonzero((distinct & APART).any(axis=1)).tolist():
            codes = distinct[row].tolist()
            apart[row] = tuple([self._labels[c >> CODE_BITS] for c in codes if c & APART])
        return matched, where, apart

    def _highlights(
        self, distinct: np.ndarray, columns: np.ndarray
    ) -> tuple[np.ndarray, list[tuple[int, ...]]]:
        """Per distinct explanation, the id of its set of feature columns matched in the
        abstract (what its excerpt marks), and those sets."""
        outside = len(self.plan.features) + 1
        marked = np.where(distinct & ABSTRACT, columns[distinct >> CODE_BITS], outside)
        marked.sort(axis=1)
        firsts, ids = _unique_rows(marked)
        sets = [tuple([c for c in row if c < outside]) for row in marked[firsts].tolist()]
        return ids, sets


_POSITIVES = attrgetter("positives")
_NAMES = np.fromiter(_FIELD_NAMES.values(), dtype=object, count=len(_FIELD_NAMES))


_MIX = np.array([0x9E3779B97F4A7C15, 0xBF58476D1CE4E5B9, 0x94D049BB133111EB], dtype=np.uint64)


def _unique_rows(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(firsts, ids) of a 2-d integer array's distinct rows: the first row of each, and each
    row's distinct id (numbered by first appearance is not promised).

    Rows are hashed to one integer and the hashes made unique (one sort of n numbers instead
    of a lexicographic sort of n rows); any collision is caught and the exact way taken.
    """
    n, width = rows.shape
    if n == 0 or width == 0:
        return np.zeros(min(n, 1), dtype=np.int64), np.zeros(n, dtype=np.int64)
    with np.errstate(over="ignore"):
        hashed = np.full(n, _MIX[0], dtype=np.uint64)
        for j in range(width):
            hashed ^= rows[:, j].astype(np.uint64)
            hashed *= _MIX[1]
    _, firsts, ids = np.unique(hashed, return_index=True, return_inverse=True)
    if not np.array_equal(rows[firsts][ids], rows):  # a collision: two rows, one hash
        _, firsts, ids = np.unique(rows, axis=0, return_index=True, return_inverse=True)
    return firsts, ids.reshape(-1)


def build_excerpts(
    index: PaperIndex,
    features: Sequence[_Feature],
    papers: Sequence[int],
    columns: Sequence[tuple[int, ...]],
) -> list[str]:
    """The HTML abstract excerpt of each paper marking where its features (columns) matched:
    the marks, their merging and the windows of all excerpts worked out in numpy at once,
    then each string cut from its abstract's escaped text in a few slices."""
    # Benchmark: tests/perf/bench_ranking.py, "excerpts" (295,164 for 100,000 subscribers).
    words = _Words(index, sorted(set(papers)))
    paper = np.asarray(papers, dtype=np.int64)
    sizes = np.fromiter(map(len, columns), dtype=np.int64, count=len(columns))
    owner = np.repeat(np.arange(len(columns)), sizes)
    flat = np.fromiter(chain.from_iterable(columns), dtype=np.int64, count=int(sizes.sum()))
    # Word ranges where each (column, paper) matched, then those of each excerpt's columns.
    pairs, first, last = _feature_spans(index, features, flat * len(index) + paper[owner])
    first, last = words.index(pairs % len(index), first), words.index(pairs % len(index), last)
    wanted = flat * len(index) + paper[owner]
    lo = np.searchsorted(pairs, wanted, "left")
    n = np.searchsorted(pairs, wanted, "right") - lo
    at = np.repeat(lo, n) + _within(n)
    excerpt = np.repeat(owner, n)
    marks = _merged(words, paper, excerpt, first[at], last[at])
    return words.cut(paper, *marks, len(columns))


class _Words:
    """The abstracts' words of some papers, flat: token position, and where each word's piece
    starts and its word ends in the escaped text (`_Pieces`), by paper."""

    def __init__(self, index: PaperIndex, papers: Sequence[int]) -> None:
        tokens = index.fields["abstract"].tokens
        pieces = [_Pieces(index.papers[p].abstract, tokens[p]) for p in papers]
        self.html = [""] * len(index)
        lengths = np.zeros(len(index), dtype=np.int64)
        for p, piece in zip(papers, pieces, strict=True):
            self.html[p] = piece.html
            lengths[p] = len(piece.ends)
        self.lengths = lengths
        self.offset = np.cumsum(lengths) - lengths  # each paper's first word, flat
        count = int(lengths.sum())
        self.position = np.fromiter(
            chain.from_iterable(p.positions for p in pieces), np.int64, count
        )
        self.starts = np.fromiter(
            chain.from_iterable(p.starts[:-1] for p in pieces), np.int64, count
        )
        self.ends = np.fromiter(chain.from_iterable(p.ends for p in pieces), np.int64, count)
        self.size = np.zeros(len(index), dtype=np.int64)  # each paper's escaped text's length
        self.size[list(papers)] = [len(p.html) for p in pieces]
        self.span = int(self.position.max(initial=0)) + 2 if count else 2
        self._keys = np.repeat(np.arange(len(index)), lengths) * self.span + self.position

    def index(self, paper: np.ndarray, position: np.ndarray) -> np.ndarray:
        """The word index in its abstract of each token position (the word at or after it,
        or the last word)."""
        found = np.searchsorted(self._keys, paper * self.span + position) - self.offset[paper]
        return np.minimum(found, np.maximum(self.lengths[paper] - 1, 0))

    def cut(
        self,
        paper: np.ndarray,
        excerpt: np.ndarray,
        first: np.ndarray,
        last: np.ndarray,
        n: int,
    ) -> list[str]:
        """Each excerpt's string: about SNIPPET_WORDS words around most of its marks (merged
        word ranges, sorted by excerpt and first word), marked; "&hellip;" where it cuts."""
        begin, end = self._windows(paper, excerpt, first, n)
        shown = (last >= begin[excerpt]) & (first < end[excerpt])
        excerpt, first, last = excerpt[shown], first[shown], last[shown]
        base = self.offset[paper[excerpt]]
        first = np.maximum(first, begin[excerpt])
        last = np.minimum(last, end[excerpt] - 1)
        # Slice bounds of each excerpt: its window's start, each mark's start and end, the
        # window's end (the start of the word after it, or the end of the text).
        opening = self._start(paper, begin)
        closing = self._start(paper, end)
        counts = np.bincount(excerpt, minlength=n)
        bounds = np.empty(2 * len(excerpt) + 2 * n, dtype=np.int64)
        place = 2 * (np.arange(len(excerpt)) + excerpt) + 1
        heads = np.cumsum(2 * counts + 2) - (2 * counts + 2)
        bounds[heads] = opening
        bounds[heads + 2 * counts + 1] = closing
        bounds[place] = self.starts[base + first]
        bounds[place + 1] = self.ends[base + last]
        flat = bounds.tolist()
        starts = heads.tolist()
        out = []
        for text, head, count, b, e, length in zip(
            [self.html[p] for p in paper.tolist()],
            starts,
            counts.tolist(),
            begin.tolist(),
            end.tolist(),
            self.lengths[paper].tolist(),
            strict=True,
        ):
            cuts = flat[head : head + 2 * count + 2]
            parts = ["&hellip;", text[cuts[0] : cuts[1]]] if b else [text[cuts[0] : cuts[1]]]
            for i in range(1, 2 * count, 2):
                parts += [
                    "<mark>",
                    text[cuts[i] : cuts[i + 1]],
                    "</mark>",
                    text[cuts[i + 1] : cuts[i + 2]],
                ]
            if e < length:
                parts.append("&hellip;")
            out.append("".join(parts).rstrip())
        return out

    def _start(self, paper: np.ndarray, word: np.ndarray) -> np.ndarray:
        """Where word `word` of each paper's abstract starts in its text (past the last word:
        the text's end)."""
        inside = word < self.lengths[paper]
        at = np.minimum(self.offset[paper] + word, max(len(self.starts) - 1, 0))
        return np.where(inside, self.starts[at] if len(self.starts) else 0, self.size[paper])

    def _windows(
        self, paper: np.ndarray, excerpt: np.ndarray, first: np.ndarray, n: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """Word range [begin, end) of each excerpt: the whole abstract when it is short,
        else SNIPPET_WORDS words from a fifth of that before the mark that begins the most
        marks within them (the first such), kept inside the abstract."""
        size, lead = SNIPPET_WORDS, SNIPPET_WORDS // 5
        length = self.lengths[paper]
        opening = np.maximum(first - lead, 0)
        keys = excerpt * (self.span + 2 * size) + first
        reach = np.searchsorted(keys, excerpt * (self.span + 2 * size) + opening + size, "left")
        count = reach - np.arange(len(first))
        best = np.zeros(n, dtype=np.int64)
        np.maximum.at(best, excerpt, count)
        top = np.flatnonzero(count == best[excerpt])
        chosen, at = np.unique(excerpt[top], return_index=True)
        begin = np.zeros(n, dtype=np.int64)
        begin[chosen] = opening[top[at]]
        begin = np.minimum(begin, length - size)
        short = length <= size + lead
        begin = np.where(short, 0, begin)
        return begin, np.where(short, length, begin + size)


def _feature_spans(
    index: PaperIndex, features: Sequence[_Feature], wanted: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(column x papers + paper, first, last): token positions in the abstract where each
    wanted (column, paper) matched, sorted by the pair: its phrase, or where the phrase is
    not there, its words anywhere."""
    table, n = index.positions, len(index)
    field = list(index.fields).index("abstract")
    wanted = np.unique(wanted)
    used = np.unique(wanted // n)
    ids = index.term_ids
    found = [
        ([[ids.get(t, -1) for t in features[c].phrase] for c in used.tolist()], used),
    ]
    loose = [(c, w) for c in used.tolist() for w in features[c].words]
    owners = np.asarray([c for c, _ in loose], dtype=np.int64)
    found.append(([[ids.get(w, -1)] for _, w in loose], owners))
    pairs, first, last = _NONE, _NONE, _NONE
    for phrases, owner in found:
        which, unit, f, la = table.spans_many(phrases)
        inside = unit % table.n_fields == field
        key = owner[which[inside]] * n + unit[inside] // table.n_fields
        keep = _member(key, wanted) & ~_member(key, np.unique(pairs))
        pairs = np.concatenate((pairs, key[keep]))
        first = np.concatenate((first, f[inside][keep]))
        last = np.concatenate((last, la[inside][keep]))
    order = np.argsort(pairs, kind="stable")
    return pairs[order], first[order], last[order]


def _member(values: np.ndarray, sorted_set: np.ndarray) -> np.ndarray:
    """Whether each value is in a sorted array of distinct values."""
    if not len(sorted_set):
        return np.zeros(len(values), dtype=bool)
    at = np.minimum(np.searchsorted(sorted_set, values), len(sorted_set) - 1)
    return sorted_set[at] == values


def _merged(
    words: _Words, paper: np.ndarray, excerpt: np.ndarray, first: np.ndarray, last: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Word ranges of each excerpt, sorted, overlapping ones merged, and touching ones when no
    punctuation separates them ("semi-supervised" reads as one mark, "models (LLMs)" as two):
    (excerpt, first, last) of each mark."""
    order = np.lexsort((last, first, excerpt))
    excerpt, first, last = excerpt[order], first[order], last[order]
    if not len(excerpt):
        return excerpt, first, last
    big = int(max(first.max(), last.max())) + 2
    running = np.maximum.accumulate(last + excerpt * big) - excerpt * big
    before = np.concatenate(([-1], running[:-1]))  # the furthest end before, in the excerpt
    opens = np.concatenate(([True], excerpt[1:] != excerpt[:-1]))
    base = words.offset[paper[excerpt]]
    top = max(len(words.position) - 1, 0)
    position = words.position if len(words.position) else np.zeros(1, dtype=np.int64)
    after = position[np.minimum(base + first, top)]
    ending = position[np.clip(base + before, 0, top)]
    touching = (first == before + 1) & (after == ending + 1)
    heads = np.flatnonzero(opens | ~((first <= before) | touching))
    return excerpt[heads], first[heads], np.maximum.reduceat(last, heads)


_NONE = np.zeros(0, dtype=np.int64)


# Excerpts ------------------------------------------------------------------------------------


class _Pieces:
    """An abstract cut at its words, HTML-escaped once, to assemble excerpts by word index.

    Piece i is word i plus the separator after it (whitespace squeezed), all in one escaped
    string: piece i begins at `starts[i]` and its word ends at `ends[i]`, so a run of words is
    one slice, and a marked run closes right after its last word.
    """

    # Slots, one string. Benchmark: tests/perf/bench_ranking.py, "excerpts", "peak RSS".
    __slots__ = ("positions", "html", "starts", "ends")

    def __init__(self, abstract: str, tokens: Mapping[str, list[Token]]) -> None:
        # The first token of each single word, in the order the tokens come (reversed: a dict
        # keeps the last value given for a key).
        singles = [
            (t.first, (t.start, t.end))
            for t in chain.from_iterable(tokens.values())
            if t.first == t.last and t.term[0] != CONCEPT
        ]
        ordered = sorted(dict(reversed(singles)).items())
        self.positions = [position for position, _ in ordered]
        starts = [start for _, (start, _) in ordered] + [len(abstract)]
        words = _escape_all([abstract[start:end] for _, (start, end) in ordered])
        afters = _escape_all(
            [_squeeze(abstract[end : starts[i + 1]]) for i, (_, (_, end)) in enumerate(ordered)]
        )
        self.starts: list[int] = []
        self.ends: list[int] = []
        at = 0
        for word, after in zip(words, afters, strict=True):
            self.starts.append(at)
            at += len(word)
            self.ends.append(at)
            at += len(after)
        self.starts.append(at)
        self.html = "".join([w + a for w, a in zip(words, afters, strict=True)])


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
