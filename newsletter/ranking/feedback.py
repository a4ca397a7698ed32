"""What a reader's ratings teach: a learned score from liked and disliked papers, fused with
the keyword score, for many subscribers at once.

The model (why: README, "Ranking"; measured by tests/perf/eval_feedback.py):

* Papers are vectors of sublinear tf-idf over their title and abstract words and adjacent
  word pairs (the corpus-free analyzer's terms: stems, curated acronyms; stopwords dropped),
  L2-normalized; idf is the window's. A paper outside the window (a liked paper from an older
  edition) is a vector in the same space; its words the window lacks still count in its norm.
* What a reader's ratings teach about a paper is a vote of the rated papers (Rocchio's
  relevance feedback, with the nearest neighbour beside the mean): its similarity to the
  papers they liked (half the most similar one's cosine, half the mean over all they liked),
  minus DISLIKE_SHARE times the same of the papers they disliked, plus QUERY_SHARE times its
  cosine to the profile's own words as one bag of words (Rocchio's query term: a paper on the
  topic that the keywords' all-words match missed), minus BACKGROUND_SHARE times its cosine to
  the window's mean paper (centred: Rocchio's non-relevant centroid, with the day's papers
  standing for what the reader did not ask for, as the unlabeled negatives of an
  arxiv-sanity SVM do: what every paper of the day shares counts less), over SIMILAR, clipped
  to [-1, 1]. The
  nearest keeps what a mean loses: "less like this" sinks that paper's near-duplicates, and a
  reader who likes two topics is not given only papers halfway between them; the paper named
  in "like <title>" is the liked one nearest. Scoring is a gather over one (rated papers x
  window) similarity matrix, block by block across subscribers.
* A paper is like a rated one as much as it and its NEIGHBOURS nearest window papers are
  (NEIGHBOUR_SHARE of the similarity is theirs, weighed by their cosine to it): the cluster
  hypothesis, as score regularization over the window's nearest-neighbour graph.
* Fusion: ``(1 - share) * keyword score + share * 100 * learned score * prior``, floored at 0,
  where ``share = n / (n + KEYWORD_PRIOR)`` for n rated papers, at most MAX_SHARE when the
  profile has keywords, and 1 when it has none: a handful of ratings move a digest, they do not
  replace its keywords. Excluded papers stay excluded (the fusion runs before exclusions).
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Iterable, Mapping, Sequence
from functools import cached_property
from itertools import chain, count, repeat
from operator import attrgetter

import msgspec
import numpy as np
import scipy.sparse as sp

from newsletter.paper import Paper
from newsletter.ranking.terms import (
    TermCounts,
    Vocabulary,
    text_terms,
    word_term,
    words_of,
)

SIMILAR = 0.2  # cosine similarity at which a paper counts as fully like a liked one
NEAREST_SHARE = 0.5  # of the rated papers' vote from the nearest one (the rest: their mean)
DISLIKE_SHARE = 0.5  # a dislike pushes away half as hard as a like pulls (most shown are dislikes)
QUERY_SHARE = 2.0  # the profile's words as a bag of words, against one rated paper's vote
BACKGROUND_SHARE = 0.15  # the window's mean paper, as Rocchio's usual gamma weighs non-relevant
NEIGHBOURS = 5  # window papers most like a paper, whose learned scores it shares
NEIGHBOUR_SHARE = 0.3  # of a paper's learned score that is its neighbours' (the rest its own)
NEIGHBOUR_BLOCK = 1024  # window papers whose similarities to all others are held at once
KEYWORD_PRIOR = 10.0  # ratings needed for the learned part to weigh as much as the keywords
MAX_SHARE = 0.5  # beside keywords, the learned part never weighs more than they do
LIKE_SHOWN = 1.0 / 3.0  # "like <title>" is said when the learned part is this much of a score
COUNTS_KEPT = 200_000  # term counts of papers from outside a window it keeps
NEAREST_ROWS = 64  # rows of one running maximum: about as many rated papers each
LEARN_BLOCK = 256  # profiles per gather: 256 x rated papers x window papers floats at most


class Feedback(msgspec.Struct, frozen=True):
    """A reader's rated papers, with their text: liked (profile likes and +1) and disliked.

    A Struct, not a dataclass: the planner makes one for every subscriber who rated, and a
    frozen dataclass's setattrs cost more than the rest of `feedback_of`."""

    liked: tuple[Paper, ...] = ()
    disliked: tuple[Paper, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.liked or self.disliked)

    @property
    def size(self) -> int:
        return len(self.liked) + len(self.disliked)


def feedback_of(
    likes: Iterable[str], ratings: Mapping[str, int], papers: Mapping[str, Paper]
) -> Feedback:
    """A reader's Feedback from profile likes and ratings (+1/-1), with the texts in `papers`;
    a rated paper whose text is unknown teaches nothing."""
    disliked = sorted(pid for pid, value in ratings.items() if value < 0)
    liked: Iterable[str] = [pid for pid, value in ratings.items() if value > 0]
    if likes:
        merged = dict.fromkeys(likes)
        merged.update(dict.fromkeys(liked))
        for pid in disliked:
            merged.pop(pid, None)  # a later "less like this" wins over the profile's like
        liked = merged
    text = papers.get
    return Feedback(
        tuple(p for p in map(text, liked) if p is not None),
        tuple(p for p in map(text, disliked) if p is not None),
    )


# Text features -------------------------------------------------------------------------------


class TextSpace:
    """The window's papers as tf-idf vectors, and any other paper or text in the same space
    (the rows of papers from outside and of texts are kept: the planner ranks a window chunk
    by chunk)."""

    def __init__(self, papers: Sequence[Paper]) -> None:
        self._vocabulary = Vocabulary()
        self.columns: dict[str, int] = {}
        self._key_columns: dict[int, int] = {}  # a term's key -> its column
        rows, cols, tf = self._read([(p.title, p.abstract) for p in papers], window=True)
        self._window_terms = len(self._vocabulary.terms)
        df = np.bincount(cols, minlength=len(self.columns))
        n = len(papers)
        self.idf = np.log((1.0 + n) / (1.0 + df)) + 1.0
        self.unseen_idf = math.log(1.0 + n) + 1.0  # a term no window paper has
        self.position = {p.id: i for i, p in enumerate(papers)}
        self.matrix = self._weighted(rows, cols, tf, n)
        self._kept: dict[tuple[str, str], tuple[np.ndarray, np.ndarray]] = {}

    @cached_property
    def background(self) -> np.ndarray:
        """Each window paper's cosine to the window's mean paper, less its mean over the window
        (0 for a paper as typical as the average one)."""
        if not self.matrix.shape[0]:
            return np.zeros(0, dtype=np.float32)
        mean = np.asarray(self.matrix.mean(axis=0)).ravel()
        mean /= max(float(np.linalg.norm(mean)), 1e-12)
        cosine = np.asarray(self.matrix @ mean).ravel()
        return (cosine - cosine.mean()).astype(np.float32)

    @cached_property
    def neighbours(self) -> tuple[np.ndarray, np.ndarray]:
        """Each window paper's NEIGHBOURS most like it (window x NEIGHBOURS positions) and
        their weights, its cosines to them summing to 1 (a paper like no other is its own
        neighbour)."""
        n = self.matrix.shape[0]
        k = min(NEIGHBOURS, n - 1)
        if k <= 0:
            return np.arange(n)[:, None], np.ones((n, 1), dtype=np.float32)
        nearest = np.empty((n, k), dtype=np.int64)
        weights = np.empty((n, k), dtype=np.float32)
        for start in range(0, n, NEIGHBOUR_BLOCK):
            stop = min(start + NEIGHBOUR_BLOCK, n)
            cosine = np.asarray((self.matrix[start:stop] @ self.matrix.T).toarray())
            cosine[np.arange(stop - start), np.arange(start, stop)] = -np.inf  # not itself
            near = np.argpartition(-cosine, k - 1, axis=1)[:, :k]
            nearest[start:stop] = near
            weights[start:stop] = np.maximum(np.take_along_axis(cosine, near, axis=1), 0.0)
        total = weights.sum(axis=1, keepdims=True)
        alone = total[:, 0] <= 0
        nearest[alone], weights[alone] = np.flatnonzero(alone)[:, None], 1.0 / k
        return nearest, weights / np.where(alone[:, None], 1.0, total)

    @cached_property
    def neighbourhood(self) -> sp.csr_matrix:
        """`neighbours` as a window x window matrix of weights (rows sum to 1)."""
        nearest, weights = self.neighbours
        n, k = nearest.shape
        rows = np.repeat(np.arange(n), k)
        return sp.csr_matrix((weights.ravel(), (rows, nearest.ravel())), shape=(n, n))

    def vectors(self, papers: Sequence[Paper]) -> sp.csr_matrix:
        """Rows for `papers` (their titles and abstracts), in this space."""
        names = [("paper", p.id) for p in papers]
        return self._rows(names, [(p.title, p.abstract) for p in papers])

    def text_vectors(self, texts: Sequence[str]) -> sp.csr_matrix:
        """Rows for texts read as a paper's title and abstract are (a profile's words)."""
        return self._rows([("text", t) for t in texts], [(t,) for t in texts])

    def _rows(
        self, names: Sequence[tuple[str, str]], texts: Sequence[tuple[str, ...]]
    ) -> sp.csr_matrix:
        """Rows for texts; each is read once while this space keeps it under its name."""
        kept = self._kept
        if len(kept) > COUNTS_KEPT:
            kept.clear()
            self._vocabulary.forget_after(self._window_terms)
        text_of: dict[tuple[str, str], tuple[str, ...]] = {}  # of a name met twice, the first
        for name, text in zip(names, texts, strict=True):
            if name not in kept:
                text_of.setdefault(name, text)
        fresh = list(text_of)
        if fresh:
            rows, cols, tf = self._read([text_of[name] for name in fresh], window=False)
            read = self._weighted(rows, cols, tf, len(fresh))
            bounds = read.indptr.tolist()
            for name, start, end in zip(fresh, bounds, bounds[1:], strict=False):
                kept[name] = (read.indices[start:end], read.data[start:end])
        found = [kept[name] for name in names]
        sizes = np.fromiter((len(i) for i, _ in found), dtype=np.int64, count=len(found))
        indptr = np.concatenate([[0], np.cumsum(sizes)])
        empty = (np.zeros(0, dtype=np.int32), np.zeros(0, dtype=np.float32))
        indices = np.concatenate([i for i, _ in found] or [empty[0]])
        data = np.concatenate([d for _, d in found] or [empty[1]])
        return sp.csr_matrix((data, indices, indptr), shape=(len(names), len(self.columns)))

    def _read(
        self, texts: Sequence[tuple[str, ...]], *, window: bool
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Each term count of `texts` as (text, column, count), in `text_terms`' order; the
        window's make the columns (in the order first met), others read -1 for a term without."""
        vocabulary = self._vocabulary
        if not vocabulary.spaced:
            counts = TermCounts.of(vocabulary, texts)
            if not vocabulary.spaced:
                return counts.rows, self._columns_of(counts.keys, window=window), counts.tf
        # A term with a space in it (a ligature: U+FDFB) may be the string a pair of terms
        # makes: from now on only strings tell terms apart, as text_terms counts them.
        read = [text_terms(*parts) for parts in texts]
        if window:
            for found in read:
                for term in found:
                    self.columns.setdefault(term, len(self.columns))
        sizes = np.fromiter(map(len, read), dtype=np.int64, count=len(read))
        total = int(sizes.sum())
        terms = chain.from_iterable(read)
        cols = np.fromiter(map(self.columns.get, terms, repeat(-1)), np.int64, total)
        tf = np.fromiter(chain.from_iterable(c.values() for c in read), np.int64, total)
        return np.repeat(np.arange(len(read)), sizes), cols, tf

    def _columns_of(self, keys: np.ndarray, *, window: bool) -> np.ndarray:
        """The column of each term key (-1 for a term without); the window's make them."""
        listed = keys.tolist()
        if window:  # in the order first met, paper after paper
            self._key_columns = dict(zip(dict.fromkeys(listed), count()))
            self.columns = dict(zip(self._vocabulary.strings(self._key_columns), count()))
            return np.fromiter(map(self._key_columns.__getitem__, listed), np.int64, len(keys))
        found = map(self._key_columns.get, listed, repeat(-1))
        return np.fromiter(found, np.int64, len(keys))  # type: ignore[arg-type]

    def _weighted(
        self, rows: np.ndarray, cols: np.ndarray, tf: np.ndarray, n: int
    ) -> sp.csr_matrix:
        """Sublinear tf-idf rows, L2-normalized, of term counts as (row, column, count); terms
        without a column (-1) count in the norm."""
        known = cols >= 0
        # Column -1 (a term no window paper has) reads the unseen idf appended last; an empty
        # window has no columns at all, and every term is unseen.
        weight = (1.0 + np.log(np.maximum(tf, 1.0))) * np.append(self.idf, self.unseen_idf)[cols]
        norms = np.sqrt(np.bincount(rows, weights=weight * weight, minlength=n))
        values = (weight / np.maximum(norms[rows], 1e-12))[known].astype(np.float32)
        shape = (n, len(self.columns))
        return sp.csr_matrix((values, (rows[known], cols[known])), shape=shape)


# Learned scores --------------------------------------------------------------------------------


class Learned:
    """The learned part of one ranking call: each profile's rated papers (as rows of a rated
    papers x window similarity matrix), and how their similarities fuse with keyword scores."""

    def __init__(
        self,
        space: TextSpace,
        prior: np.ndarray,
        feedbacks: Sequence[Feedback | None],
        keywords: Sequence[bool],
        words: Sequence[str],
    ) -> None:
        """`keywords`: whether each profile has keyword entries (its ratings then share the
        score with them); `words`: the words of each profile's keyword entries ("" for none)."""
        self.space, self.prior = space, prior
        given = [i for i, feedback in enumerate(feedbacks) if feedback]
        self.row_of = np.full(len(feedbacks), -1, dtype=np.int64)
        self.row_of[given] = np.arange(len(given))
        liked = [feedbacks[i].liked for i in given]  # type: ignore[union-attr]
        disliked = [feedbacks[i].disliked for i in given]  # type: ignore[union-attr]
        rated = list(chain.from_iterable(liked)) + list(chain.from_iterable(disliked))
        # Each rated paper's row of `similarity`, in the order first met: setdefault keeps
        # the call number of a paper's first appearance, np.unique makes them 0, 1, 2...
        first: dict[str, int] = {}
        met = map(first.setdefault, map(attrgetter("id"), rated), count())
        calls = np.fromiter(met, dtype=np.int64, count=len(rated))
        firsts, columns = np.unique(calls, return_inverse=True)
        self.rated: list[Paper] = [rated[i] for i in firsts.tolist()]
        n_liked = np.fromiter(map(len, liked), dtype=np.int64, count=len(liked))
        n_disliked = np.fromiter(map(len, disliked), dtype=np.int64, count=len(disliked))
        split = int(n_liked.sum())
        self.liked = _padded(columns[:split], n_liked, len(self.rated))
        self.disliked = _padded(columns[split:], n_disliked, len(self.rated))
        # Equal for profiles that rated the same papers the same way (they rank alike), as
        # bytes: the rows of their liked papers sorted, then those of their disliked ones.
        rows = np.hstack([np.sort(self.liked, axis=1), np.sort(self.disliked, axis=1)])
        self.keys: list[Hashable] = [None] * len(feedbacks)
        for i, key in zip(given, map(bytes, rows), strict=True):
            self.keys[i] = key
        n = (n_liked + n_disliked).astype(np.float32)
        beside = np.asarray([bool(keywords[i]) for i in given], dtype=bool)
        share = np.minimum(MAX_SHARE, n / (n + KEYWORD_PRIOR))
        self.share = np.where(beside, share, 1.0).astype(np.float32)
        # The profiles' words as rows of the space, one per distinct text.
        texts = [words[i] for i in given]
        row_of_text: dict[str, int] = {}
        self.words_row = np.fromiter(
            (row_of_text.setdefault(t, len(row_of_text)) for t in texts), np.int64, len(texts)
        )
        self.words = space.text_vectors(list(row_of_text))
        self._texts = list(row_of_text)
        self._words_read: dict[int, tuple[tuple[str, int], ...]] = {}
        vectors = self._rated_vectors(self.rated)
        # Rated papers x window papers.
        similarity = np.asarray((vectors @ space.matrix.T).toarray(), dtype=np.float32)
        # The cluster hypothesis: a paper is like a rated one as much as it and the window
        # papers nearest to it are (score regularization over the nearest-neighbour graph).
        around = np.asarray((space.neighbourhood @ similarity.T).T, dtype=np.float32)
        similarity = (1.0 - NEIGHBOUR_SHARE) * similarity + NEIGHBOUR_SHARE * around
        # One basis of rows for everything linear in the learned score: the rated papers'
        # similarities, a row below any similarity for the padding (the running maximum's),
        # then the window's weights of each term of the profiles' words. A profile's mean vote
        # and its words' cosine are then one product of its weights over it.
        used, at_term = np.unique(self.words.indices, return_inverse=True)
        terms = np.asarray(space.matrix[:, used].T.toarray(), dtype=np.float32)
        pad = len(self.rated)
        self.basis = np.vstack([similarity, np.full((1, len(prior)), -np.inf, np.float32), terms])
        self.similarity = self.basis[: pad + 1]
        width = self.basis.shape[0]
        profile_words = sp.csr_matrix(
            (self.words.data, at_term.reshape(-1) + pad + 1, self.words.indptr),
            shape=(self.words.shape[0], width),
        )[self.words_row]
        mean = 1.0 - NEAREST_SHARE
        self.weights = sp.csr_matrix(
            _mean_weights(self.liked, pad, mean, width)
            + _mean_weights(self.disliked, pad, -DISLIKE_SHARE * mean, width)
            + profile_words * QUERY_SHARE,
            dtype=np.float32,
        )

    def _rated_vectors(self, rated: Sequence[Paper]) -> sp.csr_matrix:
        """Rated papers as vectors; those in the window reuse its rows."""
        at = self.space.position
        inside = [i for i, p in enumerate(rated) if p.id in at]
        outside = [i for i, p in enumerate(rated) if p.id not in at]
        stacked = sp.vstack(
            [
                self.space.matrix[[at[rated[i].id] for i in inside]],
                self.space.vectors([rated[i] for i in outside]),
            ]
        ).tocsr()
        back = np.empty(len(rated), dtype=np.int64)
        back[np.asarray(inside + outside, dtype=np.int64)] = np.arange(len(rated))
        return stacked[back]

    def learned(self, rows: np.ndarray) -> np.ndarray:
        """Learned scores in [-1, 1] of these learned rows for every window paper: the vote of
        the liked papers minus DISLIKE_SHARE times that of the disliked ones, plus QUERY_SHARE
        times the cosine to the profile's words, minus BACKGROUND_SHARE times the centred
        cosine to the window's mean paper, over SIMILAR."""
        # In place: each step is a pass over (profiles x window) floats. The mean votes and
        # the words' cosine are one product (see `basis`), the nearest rated papers' a gather.
        out = np.asarray(self.weights[rows] @ self.basis, dtype=np.float32)
        out -= BACKGROUND_SHARE * self.space.background
        for padded, sign in ((self.liked, 1.0), (self.disliked, -DISLIKE_SHARE)):
            if padded.shape[1]:
                self._add_nearest(out, padded[rows], sign * NEAREST_SHARE)
        out /= SIMILAR
        return np.clip(out, -1.0, 1.0, out=out)

    def _add_nearest(self, out: np.ndarray, rated: np.ndarray, factor: float) -> None:
        """Add to each row of `out` `factor` times each window paper's largest similarity to
        that row's rated papers (padded at the end; none: nothing added). Rows are taken by
        how many rated papers they have, NEAREST_ROWS at a time, each group as wide as its
        widest row: the running maximum reads the padding row as little as it can."""
        pad = self.similarity.shape[0] - 1
        counts = np.count_nonzero(rated != pad, axis=1)
        order = np.argsort(counts, kind="stable")
        first = int(np.searchsorted(counts[order], 1))  # rows with a rated paper from here
        for start in range(first, len(order), NEAREST_ROWS):
            group = order[start : start + NEAREST_ROWS]
            these = rated[group, : int(counts[group[-1]])]
            best = self.similarity[these[:, 0]]
            for j in range(1, these.shape[1]):
                np.maximum(best, self.similarity[these[:, j]], out=best)
            best *= factor
            out[group] += best

    def fuse(self, owners: np.ndarray, scores: np.ndarray) -> np.ndarray:
        """Keyword scores of profiles `owners` (rows) fused with what their ratings teach."""
        rows = self.row_of[owners]
        has = np.flatnonzero(rows >= 0)
        if not len(has):
            return scores
        mine = rows[has]
        share = self.share[mine, None]
        learned = self.learned(mine)
        learned *= 100.0 * self.prior
        learned *= share
        fused = scores[has]
        fused *= 1.0 - share
        fused += learned
        scores[has] = np.maximum(fused, 0.0, out=fused)
        return scores

    def profiles(self) -> list[int]:
        """The profiles (positions in the call) that have feedback."""
        return np.flatnonzero(self.row_of >= 0).tolist()

    def liked_papers(
        self, owners: np.ndarray, at: np.ndarray, scores: np.ndarray
    ) -> list[tuple[str, str] | None]:
        """For chosen papers (their profiles `owners`, window positions `at`, scores): (id,
        title) of the liked paper each is most like where what the ratings teach is at least
        LIKE_SHOWN of its score, else None; one per paper."""
        out: list[tuple[str, str] | None] = [None] * len(owners)
        mine = np.flatnonzero(self.row_of[owners] >= 0)
        if not len(mine) or not self.liked.shape[1]:
            return out
        rows, at = self.row_of[owners[mine]], at[mine]
        liked = self.liked[rows]  # chosen papers x liked papers (padded)
        near = self._pairs(liked, at)
        pick = np.argmax(near, axis=1)[:, None]
        best = np.take_along_axis(liked, pick, axis=1)[:, 0]
        nearest = np.take_along_axis(near, pick, axis=1)[:, 0]
        known = np.isfinite(nearest)  # a profile that liked nothing has only padding
        learned = _pair_vote(near, nearest)
        if self.disliked.shape[1]:
            learned -= DISLIKE_SHARE * _pair_vote(self._pairs(self.disliked[rows], at))
        # What the liked papers chose: the learned part without the profile's own words.
        part = np.clip(learned / SIMILAR, -1.0, 1.0) * 100.0 * self.prior[at] * self.share[rows]
        shown = known & (part > 0) & (part >= LIKE_SHOWN * scores[mine])
        said = np.full(len(owners), None, dtype=object)
        said[mine[shown]] = self._titles[best[shown]]
        return said.tolist()  # type: ignore[no-any-return]

    def _pairs(self, rated: np.ndarray, at: np.ndarray) -> np.ndarray:
        """The similarity of each row's rated papers (padded) to its window paper `at`: one
        flat gather from the similarities by window paper, where one paper's are together
        (`similarity[rated, at[:, None]]` indexes in two dimensions, slower)."""
        width = self._by_paper.shape[1]
        return self._by_paper.ravel().take(at[:, None] * width + rated)

    @cached_property
    def _by_paper(self) -> np.ndarray:
        """`similarity` transposed: window papers x rated papers (and the padding)."""
        return np.ascontiguousarray(self.similarity.T)

    def words_found(self, profile: int, paper_id: str) -> tuple[str, ...]:
        """The words of the profile's keyword entries (as written, each once) that this window
        paper has: why the profile's own words brought a paper no entry matched whole."""
        row = self.row_of[profile]
        if row < 0:
            return ()
        words = self._word_columns(int(self.words_row[row]))
        at = self.space.position[paper_id]
        matrix = self.space.matrix
        present = set(matrix.indices[matrix.indptr[at] : matrix.indptr[at + 1]].tolist())
        return tuple(surface for surface, column in words if column in present)

    def _word_columns(self, text_row: int) -> tuple[tuple[str, int], ...]:
        """Each word of a profile's text (as written, the first of each term) and its term's
        column in the space (-1 for a term no window paper has); worked out once a text."""
        found = self._words_read.get(text_row)
        if found is not None:
            return found
        seen: dict[str, tuple[str, int]] = {}
        for surface in words_of(self._texts[text_row]):
            term = word_term(surface)  # "" for punctuation and stopwords
            if term and term not in seen:
                seen[term] = (surface, self.space.columns.get(term, -1))
        found = self._words_read[text_row] = tuple(seen.values())
        return found

    @cached_property
    def _titles(self) -> np.ndarray:
        """(id, title) of each rated paper, as objects (gathered many at once)."""
        titles = np.empty(len(self.rated), dtype=object)
        for i, paper in enumerate(self.rated):
            titles[i] = (paper.id, paper.title)
        return titles


def _pair_vote(near: np.ndarray, best: np.ndarray | None = None) -> np.ndarray:
    """Per row of similarities to rated papers (-inf for padding), their vote as
    `Learned.learned` counts it; `best`: each row's largest, where already known."""
    finite = np.isfinite(near)
    mean = np.where(finite, near, 0.0).sum(axis=1) / np.maximum(finite.sum(axis=1), 1)
    return _blend(near.max(axis=1) if best is None else best, mean)


def _blend(best: np.ndarray, mean: np.ndarray) -> np.ndarray:
    """The rated papers' vote: NEAREST_SHARE of the best similarity (-inf: none, 0), the rest
    the mean similarity."""
    return NEAREST_SHARE * np.where(np.isfinite(best), best, 0.0) + (1.0 - NEAREST_SHARE) * mean


def _mean_weights(padded: np.ndarray, pad: int, share: float, width: int) -> sp.csr_matrix:
    """Per row of rated papers (padded with `pad`), `share` over their number at each of their
    columns: the rows' weights for their mean, `width` columns."""
    rows, within = np.nonzero(padded != pad)
    counts = np.maximum(np.bincount(rows, minlength=len(padded)), 1)
    weights = (share / counts)[rows].astype(np.float32)
    return sp.csr_matrix((weights, (rows, padded[rows, within])), shape=(len(padded), width))


def _padded(values: np.ndarray, lengths: np.ndarray, pad: int) -> np.ndarray:
    """Ragged rows (`values` cut by `lengths`) as one array, padded with `pad`."""
    width = int(lengths.max(initial=0))
    out = np.full((len(lengths), width), pad, dtype=np.int32)
    rows = np.repeat(np.arange(len(lengths)), lengths)
    within = np.arange(len(values)) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    out[rows, within] = values
    return out
