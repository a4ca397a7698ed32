"""How papers score for profiles: BM25F worth of each entry, the prior, top-k of many at once.

How a paper scores for a profile, from 0 to 100:

* Each text entry is matched with BM25F over the title (weight 3), the HF AI keywords (2) and
  the abstract (1), each field length-normalized (b = 0.3, 0.3, 0.75; k1 = 1.2). Its
  *strength* is the BM25 saturation ``tf / (tf + k1)`` in [0, 1), i.e. the BM25 score over the
  most any paper could get, so rare and common words are on one scale: one title mention is
  0.71, one abstract mention 0.45, a title and a few abstract mentions 0.8-0.9.
* A phrase counts only where its terms are adjacent after normalization (no punctuation in
  between). An unquoted multi-word entry takes 70% of its strength from the phrase and 30%
  from its words anywhere in the paper: their idf-weighted mean strength, a missing word
  counting 0, so a paper with only some of the words matches, weaker, where the words it has
  are at least PARTIAL_WORDS and carry at least PARTIAL_COVER of the entry's idf (so a
  two-word entry needs both). A one-word entry takes
  30% from the word's own inflections ("supervision", "supervisions") and 70% from its stem, so
  "supervision" prefers papers about supervision over papers that are merely "supervised".
* A matched entry is worth ``0.2 + 0.8 * strength`` (the floor is 0.06 instead of 0.2 when
  its words are found only apart, times the share of the entry's idf they carry when only
  some are found): the floor is the coverage bonus, every entry a paper
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
  the more recent, then more upvoted paper."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from itertools import chain, repeat
from operator import attrgetter
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np
import scipy.sparse as sp

from newsletter.paper import Paper
from newsletter.profile import Entry, MatchKey, Profile

if TYPE_CHECKING:
    from newsletter.ranking.index import PaperIndex

K1 = 1.2
FIELDS = ("title", "keywords", "abstract")
FIELD_WEIGHT = {"title": 3.0, "keywords": 2.0, "abstract": 1.0}
FIELD_B = {"title": 0.3, "keywords": 0.3, "abstract": 0.75}
TITLE, KEYWORDS, ABSTRACT, AUTHORS, CATEGORIES = 1, 2, 4, 8, 16
# Beside the field bits of an unquoted multi-word entry: its words matched, its phrase nowhere.
# The digest then labels it by its words ("diffusion + models") without reading the paper again.
APART = 32
# In a feature's field bits only, never in a code: the paper has some of the entry's words, not
# all; the explanation then names those it has (`_Feature.found`), as an entry of its own.
PARTIAL = 64
# Of an entry's idf, the least the words a paper has must carry to match it in part: its
# commonest words alone ("learning" of "deep metric learning") do not, and the features stay
# sparse. Benchmark: tests/perf/bench_ranking.py, "peak RSS"; tests/perf/eval_feedback.py.
PARTIAL_COVER = 0.5
# The fewest of an entry's words a paper must have to match it in part: one word of a two-word
# entry is another topic ("decoding" is not "speculative decoding").
PARTIAL_WORDS = 2
FIELD_BITS = TITLE | KEYWORDS | ABSTRACT | AUTHORS | CATEGORIES
CODE_BITS = 6  # bits of one entry in a match pattern code: the fields and APART
FIELD_BIT = {"title": TITLE, "keywords": KEYWORDS, "abstract": ABSTRACT}
EXACT_SHARE = 0.3  # of a one-word entry's strength that needs the word itself, not its stem
LOOSE_SHARE = 0.3  # of an unquoted multi-word entry's strength that needs no adjacency
COVERAGE_FLOOR = 0.2  # what any matched entry is worth, however weak: covering more pays
CATEGORY_SHARE = 0.3  # of the score lost by papers outside the categories a profile lists
RECENCY_WEIGHT = 0.02
RECENCY_DAYS = 30.0
# Dense is faster, sparse smaller. Benchmark: tests/perf/bench_ranking.py, "rank_many", "peak RSS".
DENSE_LIMIT = 50_000_000  # features x papers cells kept dense while ranking (200 MB)


# One entry in every paper -----------------------------------------------------------------


# Slots: up to FEATURE_CACHE of these an index. Benchmark: tests/perf/bench_ranking.py, "peak RSS".
@dataclass(frozen=True, slots=True)
class _Feature:
    """What one entry matches: papers (sorted), what each match is worth (0, 1], field bits."""

    papers: np.ndarray
    worths: np.ndarray
    masks: np.ndarray
    phrase: tuple[str, ...] = ()
    words: tuple[str, ...] = ()  # for loose entries: the words that may match apart
    # One per paper matched in part (PARTIAL in masks), in order: bit j set if it has words[j];
    # None: no paper is.
    found: np.ndarray | None = None


Strengths = dict[tuple[str, ...], tuple[np.ndarray, np.ndarray]]  # phrase -> strength, bits


def text_feature(
    index: PaperIndex,
    kind: str,
    phrase: tuple[str, ...],
    words: tuple[str, ...],
    exact: str | None,
) -> _Feature:
    """What a text entry matches in an index: its worth in each paper, and where it matched."""
    key = (kind, phrase, words, exact)
    return text_features(index, [key], phrase_strengths(index, key_phrases([key])))[0]


def key_phrases(keys: Sequence[tuple[Any, ...]]) -> list[tuple[str, ...]]:
    """The phrases and single terms whose strengths these text feature keys need."""
    return [
        phrase
        for kind, main, words, exact in keys
        for phrase in (main, *[(w,) for w in words], *([] if exact is None else [(exact,)]))
    ]


def text_features(
    index: PaperIndex, keys: Sequence[tuple[Any, ...]], known: Strengths
) -> list[_Feature]:
    """What each text entry matches, given as (kind, phrase, words, exact) keys, with the
    strengths of their phrases and words (`phrase_strengths`); keys of one
    shape (kind, phrase of one term or more, own form or not, number of words) are worked out
    together, as rows of one array."""
    # Benchmark: tests/perf/bench_ranking.py, "rank_many" (a fresh index works out thousands).
    shapes: dict[tuple[Any, ...], list[int]] = {}
    for i, (kind, phrase, words, exact) in enumerate(keys):
        loose = kind == "loose" and bool(words)
        shape = (loose, len(phrase) > 1, exact is not None, len(words) if loose else 0)
        shapes.setdefault(shape, []).append(i)
    out: list[_Feature] = [None] * len(keys)  # type: ignore[list-item]
    for (loose, multi, own, n_words), members in shapes.items():
        group = [keys[i] for i in members]
        strength = np.stack([known[k[1]][0] for k in group])
        masks = np.stack([known[k[1]][1] for k in group])
        if own:
            exact = np.stack([known[(k[3],)][0] for k in group])
            strength = (1.0 - EXACT_SHARE) * strength + EXACT_SHARE * exact
        floor = np.where(strength > 0, COVERAGE_FLOOR, 0.0)
        if loose:
            # The words' part: their idf-weighted mean strength, a missing word counting 0. A
            # paper with only some of the words (PARTIAL_WORDS at least, carrying at least
            # PARTIAL_COVER of the entry's idf) is worth their share of the idf (`cover`) of
            # the floor too.
            total = np.zeros(strength.shape)
            present = np.zeros(strength.shape)
            words_had = np.zeros(strength.shape, dtype=np.int64)
            word_masks = np.zeros(strength.shape, dtype=np.uint8)
            found = np.zeros(strength.shape, dtype=np.uint64)  # the words each paper has
            weights = np.zeros(len(group))
            for j in range(n_words):
                each = np.stack([known[(k[2][j],)][0] for k in group])
                idf = np.array([index.idf(k[2][j]) for k in group])
                total += idf[:, None] * each
                present += idf[:, None] * (each > 0)
                words_had += each > 0
                weights += idf
                found |= (each > 0).astype(np.uint64) << np.uint64(j)
                word_masks |= np.stack([known[(k[2][j],)][1] for k in group])
            idf_total = np.maximum(weights, 1e-9)[:, None]
            every = words_had == n_words
            # One word of a one-term entry (an acronym this corpus reads as its words) is not
            # a part of it: only an entry of several terms matches in part.
            cover = present / idf_total if multi else every.astype(np.float64)
            enough = (cover >= PARTIAL_COVER) & (words_had >= PARTIAL_WORDS)
            mean = np.where(every | enough, total / idf_total, 0.0)
            apart = np.where(every, APART if multi else 0, PARTIAL).astype(np.uint8)
            masks = np.where(masks > 0, masks, np.where(mean > 0, word_masks | apart, word_masks))
            strength = (1.0 - LOOSE_SHARE) * strength + LOOSE_SHARE * mean
            apart_floor = LOOSE_SHARE * COVERAGE_FLOOR * cover
            floor = np.where(floor > 0, floor, np.where(mean > 0, apart_floor, 0.0))
        worth = floor + (1.0 - COVERAGE_FLOOR) * strength
        rows, papers = np.nonzero(strength > 0)
        cuts = np.cumsum(np.bincount(rows, minlength=len(group)))[:-1]
        worths = np.split(worth[rows, papers].astype(np.float32), cuts)
        bits = np.split(masks[rows, papers].astype(np.uint8), cuts)
        founds = np.split(found[rows, papers], cuts) if loose else repeat(None)
        for i, k, p, w, b, f in zip(
            members,
            group,
            np.split(papers.astype(np.int32), cuts),
            worths,
            bits,
            founds,
            strict=False,
        ):
            some = f[(b & PARTIAL) > 0] if f is not None else None
            some = some if some is not None and len(some) else None
            out[i] = _Feature(p, w, b, k[1], k[2] if k[0] == "loose" else (), some)
    return out


def phrase_strengths(index: PaperIndex, phrases: Sequence[tuple[str, ...]]) -> Strengths:
    """BM25F saturation of each phrase (or single term) in every paper, and its field bits:
    all at once, one scatter for the single terms and one join for the phrases."""
    # Benchmark: tests/perf/bench_ranking.py, "rank_many" (a fresh index works out thousands).
    n, table = len(index.papers), index.positions
    singles = list(dict.fromkeys(p for p in phrases if len(p) == 1))
    longer = list(dict.fromkeys(p for p in phrases if len(p) > 1))
    tids = np.asarray([index.term_ids.get(p[0], -1) for p in singles], dtype=np.int64)
    bounds = np.asarray(table.term_bounds, dtype=np.int64)
    starts = np.where(tids >= 0, bounds[tids], 0)
    sizes = np.where(tids >= 0, bounds[tids + 1] - starts, 0)
    rows = np.repeat(np.arange(len(singles)), sizes)
    at = np.repeat(starts, sizes) + _within(sizes)
    single = np.zeros((len(singles), n))
    bits = np.zeros((len(singles), n), dtype=np.uint8)
    single[rows, table.term_paper[at]] = table.term_tf[at]
    bits[rows, table.term_paper[at]] = table.term_bits[at]
    strength = single / (single + K1)
    out: Strengths = {p: (strength[r], bits[r]) for r, p in enumerate(singles)}
    which, units, counts = table.counts_many(
        [[index.term_ids.get(term, -1) for term in p] for p in longer]
    )
    cells = which * n + units // table.n_fields
    size = len(longer) * n
    tf = np.bincount(cells, weights=table.norm[units] * counts, minlength=size).reshape(-1, n)
    # Each unit (paper, field) comes once and each field has a bit of its own: the sum of the
    # bits is their union (bincount is many times faster than np.bitwise_or.at).
    fields = np.bincount(cells, weights=table.bits[units % table.n_fields], minlength=size)
    fields = fields.reshape(-1, n).astype(np.uint8)
    strength = tf / (tf + K1)
    out.update({p: (strength[r], fields[r]) for r, p in enumerate(longer)})
    return out


def _within(lengths: np.ndarray) -> np.ndarray:
    """0, 1, ... within each run of these lengths, for all runs one after another."""
    return np.arange(int(lengths.sum())) - np.repeat(np.cumsum(lengths) - lengths, lengths)


def _constant_feature(papers: Sequence[int], bit: int) -> _Feature:
    return _Feature(
        np.asarray(papers, dtype=np.int32),
        np.ones(len(papers), dtype=np.float32),
        np.full(len(papers), bit, dtype=np.uint8),
    )


# The prior --------------------------------------------------------------------------------


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


# Vectorized scoring ------------------------------------------------------------------------

_NO_BITS = np.zeros(0, dtype=np.uint8)


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
        # Fuses another score into rows start..stop (before exclusions): ranking.feedback.
        self.boost: Callable[[int, int, np.ndarray], np.ndarray] | None = None
        self.columns: dict[Entry, int] = {}
        self._by_key: dict[MatchKey, int] = {}
        self.features: list[_Feature] = []
        self._profile_matrices(profiles)
        self.values, self.present, self.mask_matrix = self._feature_matrices()
        self.partial_keys, self.partial_found = self._partial_matches()

    def _profile_matrices(self, profiles: Sequence[Profile]) -> None:
        """Weights, exclusions, category steering and positive columns of every profile.

        Profiles share Entry objects (the parser caches them), so each entry is looked at once
        and the rest is array arithmetic over (profile, entry) pairs.
        """
        distinct, lengths, at = distinct_entries(list(map(_ENTRIES, profiles)))
        features = self.index.features(distinct)
        column = np.array(
            [self.column(e, f) for e, f in zip(distinct, features, strict=True)], dtype=np.int64
        )
        exclude = np.array([e.exclude for e in distinct], dtype=bool)
        category = np.array([e.kind == "cat" for e in distinct], dtype=bool)
        weight = np.array([e.weight for e in distinct], dtype=np.float64)
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

    def column(self, entry: Entry, feature: _Feature | None = None) -> int:
        """The feature column of an entry (entries differing only in weight or sign share);
        `feature`: what it matches, when known."""
        found = self.columns.get(entry)
        if found is None:
            key = entry.match_key
            found = self._by_key.get(key)
            if found is None:
                found = self._by_key[key] = len(self.features)
                self.features.append(feature or self.index.feature(entry))
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

    def _partial_matches(self) -> tuple[np.ndarray, np.ndarray]:
        """The (feature, paper) pairs matched in part, as sorted keys feature x papers +
        paper, and the words each paper has (`_Feature.found`)."""
        n_papers = len(self.index.papers)
        keys, found = [np.zeros(0, np.int64)], [np.zeros(0, np.uint64)]
        for column, feature in enumerate(self.features):
            if feature.found is not None:
                some = (feature.masks & PARTIAL) > 0
                keys.append(column * n_papers + feature.papers[some].astype(np.int64))
                found.append(feature.found)
        return np.concatenate(keys), np.concatenate(found)

    def scores(self, start: int, stop: int) -> np.ndarray:
        """Scores 0-100 of profiles start..stop (rows) for every paper (columns)."""
        scores = _dense(self.weights[start:stop] @ self.values)
        steer = self.categories[start:stop]
        steered = np.flatnonzero(steer.getnnz(axis=1))
        if len(steered):
            outside = _dense(steer[steered] @ self.present) == 0
            scores[steered] *= np.where(outside, 1.0 - CATEGORY_SHARE, 1.0).astype(np.float32)
        if self.boost is not None:
            scores = self.boost(start, stop, scores)
        excluding = self.exclusions[start:stop]
        rows = np.flatnonzero(excluding.getnnz(axis=1))
        if len(rows):
            hit = _dense(excluding[rows] @ self.present) > 0
            scores[rows] = np.where(hit, 0.0, scores[rows])
        return scores

    def top(self, needed: np.ndarray, min_score: float, block_size: int) -> _Top:
        """For each profile, its best `needed` papers scoring at least `min_score`, best first,
        with their scores (rounded to 2 places), one flat array for all.

        Ties go to the paper earlier in the index (more recent, more upvoted), whatever the
        block or `needed`, so ranking one profile or many gives the same answer.
        """
        papers: list[np.ndarray] = []
        scores: list[np.ndarray] = []
        counts: list[np.ndarray] = [np.zeros(1, dtype=np.int64)]
        n_papers = len(self.index.papers)
        floor = max(min_score, 1e-6)
        for start in range(0, len(needed), block_size):
            stop = min(start + block_size, len(needed))
            k = int(min(needed[start:stop].max(initial=0), n_papers))
            if k <= 0:
                counts.append(np.zeros(stop - start, dtype=np.int64))
                continue
            block = self.scores(start, stop)
            picked = _top_columns(block, k)
            values = np.take_along_axis(block, picked, axis=1)
            limits = np.minimum(needed[start:stop], k)
            count = np.minimum(np.count_nonzero(values >= floor, axis=1), limits)
            kept = np.arange(k) < count[:, None]  # a prefix of each row: values are sorted
            papers.append(picked[kept])
            scores.append(np.round(values[kept].astype(np.float64), 2))
            counts.append(count.astype(np.int64))
        return _Top(
            np.concatenate(papers) if papers else np.zeros(0, dtype=np.int64),
            np.concatenate(scores) if scores else np.zeros(0),
            np.cumsum(np.concatenate(counts)),
        )


class _Top(NamedTuple):
    """The candidates of every profile of a plan, flat: those of profile i are
    indptr[i]:indptr[i + 1], best first."""

    paper: np.ndarray
    score: np.ndarray
    indptr: np.ndarray


def distinct_entries(
    groups: Sequence[tuple[Entry, ...]],
) -> tuple[list[Entry], np.ndarray, np.ndarray]:
    """The distinct Entry objects of these groups (profiles' entries), the length of each
    group, and each entry's position among the distinct ones, flat.

    The parser shares Entry objects: telling them apart by identity is one sort of integers,
    not a hash and comparison of every entry of every profile (equal entries that are other
    objects count apart, and are worked out alike). The distinct ones come in the order first
    met, so feature columns, and the sums over them, are in the same order whatever the ids.
    """
    lengths = np.fromiter(map(len, groups), dtype=np.int64, count=len(groups))
    flat = list(chain.from_iterable(groups))
    objects = np.fromiter(map(id, flat), dtype=np.int64, count=len(flat))
    _, firsts, at = np.unique(objects, return_index=True, return_inverse=True)
    order = np.argsort(firsts)
    renumber = np.empty_like(order)
    renumber[order] = np.arange(len(order))
    return [flat[i] for i in firsts[order].tolist()], lengths, renumber[at.reshape(-1)]


_ENTRIES = attrgetter("entries")


def _top_columns(scores: np.ndarray, k: int) -> np.ndarray:
    """Per row, the columns of the k best scores, best first, ties by lower column."""
    n = scores.shape[1]
    if k < n:
        # Partitioned at the (k+1)-th best: the k before it are the best, and comparing it with
        # the worst of them tells, without another pass over the row, whether papers tied at
        # the k-th score were left out (argpartition keeps an arbitrary subset of them).
        # (On the negated scores: numpy's introselect is 3x slower near the end of rows that
        # are mostly zeros.)
        parted = np.argpartition(-scores, k, axis=1)
        picked = parted[:, :k]
        left = np.take_along_axis(scores, parted[:, k : k + 1], axis=1)[:, 0]
    else:
        picked = np.broadcast_to(np.arange(n), scores.shape).copy()
    values = np.take_along_axis(scores, picked, axis=1)
    order = np.lexsort((picked, -values), axis=1)
    picked = np.take_along_axis(picked, order, axis=1)
    if k < n:
        kth = np.take_along_axis(scores, picked[:, -1:], axis=1)[:, 0]
        for r in np.flatnonzero((left == kth) & (kth > 0)):
            # Redone to keep the lowest columns among the tied.
            row = scores[r]
            candidates = np.flatnonzero(row >= kth[r])
            picked[r] = candidates[np.lexsort((candidates, -row[candidates]))][:k]
    return picked


def _dense(matrix: Any) -> np.ndarray:
    return np.asarray(matrix.toarray() if sp.issparse(matrix) else matrix)


def _csr(rows: np.ndarray, cols: np.ndarray, values: np.ndarray, shape: tuple[int, int]) -> Any:
    matrix = sp.coo_matrix((values.astype(np.float32), (rows, cols)), shape=shape)
    return matrix.tocsr()
