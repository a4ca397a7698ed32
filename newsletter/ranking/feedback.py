"""What a reader's ratings teach: a learned score from liked and disliked papers, fused with
the keyword score, for many subscribers at once.

The model (why: README, "Ranking"; measured by tests/perf/eval_feedback.py):

* Papers are vectors of sublinear tf-idf over their title and abstract words and adjacent
  word pairs (the corpus-free analyzer's terms: stems, curated acronyms; stopwords dropped),
  L2-normalized; idf is the window's. A paper outside the window (a liked paper from an older
  edition) is a vector in the same space; its words the window lacks still count in its norm.
* What a reader's ratings teach about a paper is a nearest-neighbour vote: its cosine
  similarity to the most similar paper they liked, minus DISLIKE_SHARE times its similarity
  to the most similar paper they disliked, over SIMILAR, clipped to [-1, 1]. Nearest, not
  mean: a reader who likes two topics is not given papers halfway between them, a "less like
  this" sinks that paper's near-duplicates, and the paper named in "like <title>" is the one
  that chose it. Scoring is a gather-and-max over one (rated papers x window) similarity
  matrix, block by block across subscribers.
* Fusion: ``(1 - share) * keyword score + share * 100 * learned score * prior``, floored at 0,
  where ``share = n / (n + KEYWORD_PRIOR)`` for n rated papers, at most MAX_SHARE when the
  profile has keywords, and 1 when it has none: a handful of ratings move a digest, they do not
  replace its keywords. Excluded papers stay excluded (the fusion runs before exclusions).
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import scipy.sparse as sp

from newsletter.analysis import PLAIN, STOPWORDS, split_words
from newsletter.paper import Paper

SIMILAR = 0.2  # cosine similarity at which a paper counts as fully like a liked one
DISLIKE_SHARE = 1.0  # a disliked paper pushes its neighbours down as a liked one pulls them up
KEYWORD_PRIOR = 10.0  # ratings needed for the learned part to weigh as much as the keywords
MAX_SHARE = 0.5  # beside keywords, the learned part never weighs more than they do
LIKE_SHOWN = 1.0 / 3.0  # "like <title>" is said when the learned part is this much of a score
LEARN_BLOCK = 256  # profiles per gather: 256 x rated papers x window papers floats at most


class Liked(NamedTuple):
    """The liked paper a chosen paper is most like (for "like <title>")."""

    id: str
    title: str


@dataclass(frozen=True)
class Feedback:
    """A reader's rated papers, with their text: liked (profile likes and +1) and disliked."""

    liked: tuple[Paper, ...] = ()
    disliked: tuple[Paper, ...] = ()

    @property
    def key(self) -> Hashable:
        """Equal for readers who rated the same papers the same way (they rank alike)."""
        return (frozenset(p.id for p in self.liked), frozenset(p.id for p in self.disliked))

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
    liked = dict.fromkeys(likes)
    liked.update((pid, None) for pid, value in ratings.items() if value > 0)
    disliked = [pid for pid, value in ratings.items() if value < 0]
    for pid in disliked:
        liked.pop(pid, None)  # a later "less like this" wins over the profile's like
    return Feedback(
        tuple(papers[pid] for pid in liked if pid in papers),
        tuple(papers[pid] for pid in sorted(disliked) if pid in papers),
    )


# Text features -------------------------------------------------------------------------------


def paper_terms(paper: Paper) -> dict[str, int]:
    """Term counts of a paper's title and abstract: content-word stems and adjacent pairs."""
    counts: dict[str, int] = {}
    for text in (paper.title, paper.abstract):
        previous = None
        for word in split_words(text):
            if word.folded in STOPWORDS or len(word.folded) < 2 or word.folded.isdigit():
                previous = None
                continue
            term = PLAIN.term(word)
            counts[term] = counts.get(term, 0) + 1
            if previous is not None and not word.gap:
                pair = f"{previous} {term}"
                counts[pair] = counts.get(pair, 0) + 1
            previous = term
    return counts


class TextSpace:
    """The window's papers as tf-idf vectors, and any other paper in the same space."""

    def __init__(self, papers: Sequence[Paper]) -> None:
        counts = [paper_terms(p) for p in papers]
        self.columns: dict[str, int] = {}
        for c in counts:
            for term in c:
                self.columns.setdefault(term, len(self.columns))
        df = np.zeros(len(self.columns))
        for c in counts:
            df[[self.columns[t] for t in c]] += 1
        n = len(papers)
        self.idf = np.log((1.0 + n) / (1.0 + df)) + 1.0
        self.unseen_idf = math.log(1.0 + n) + 1.0  # a term no window paper has
        self.position = {p.id: i for i, p in enumerate(papers)}
        self.matrix = self._vectors(counts)

    def vectors(self, papers: Sequence[Paper]) -> sp.csr_matrix:
        """Rows for `papers` (window papers reuse their row)."""
        return self._vectors([paper_terms(p) for p in papers])

    def _vectors(self, counts: Sequence[Mapping[str, int]]) -> sp.csr_matrix:
        indptr = [0]
        cols: list[int] = []
        values: list[float] = []
        for c in counts:
            row: list[float] = []
            unseen = 0.0  # words the window lacks: no column, but part of the paper's length
            for term, count in c.items():
                weight = 1.0 + math.log(count)
                col = self.columns.get(term)
                if col is None:
                    unseen += (weight * self.unseen_idf) ** 2
                    continue
                cols.append(col)
                row.append(weight * float(self.idf[col]))
            norm = math.sqrt(sum(v * v for v in row) + unseen) or 1.0
            values.extend(v / norm for v in row)
            indptr.append(len(values))
        shape = (len(counts), len(self.columns))
        return sp.csr_matrix((np.asarray(values, np.float32), cols, indptr), shape=shape)


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
    ) -> None:
        self.space, self.prior = space, prior
        self.row_of = np.full(len(feedbacks), -1, dtype=np.int64)
        self.keys: list[Hashable] = [None] * len(feedbacks)
        columns: dict[str, int] = {}  # rated paper -> its row of `similarity`
        self.rated: list[Paper] = []
        liked: list[list[int]] = []
        disliked: list[list[int]] = []
        shares: list[float] = []
        for i, feedback in enumerate(feedbacks):
            if not feedback:
                continue
            self.row_of[i] = len(shares)
            self.keys[i] = feedback.key
            liked.append([self._column(p, columns) for p in feedback.liked])
            disliked.append([self._column(p, columns) for p in feedback.disliked])
            n = feedback.size
            shares.append(min(MAX_SHARE, n / (n + KEYWORD_PRIOR)) if keywords[i] else 1.0)
        self.share = np.asarray(shares, dtype=np.float32)
        self.liked, self.disliked = (
            _padded(liked, len(self.rated)),
            _padded(disliked, len(self.rated)),
        )
        vectors = self._rated_vectors(self.rated)
        # Rated papers x window papers, and a last row below any similarity for the padding.
        similarity = np.asarray((vectors @ space.matrix.T).toarray(), dtype=np.float32)
        self.similarity = np.vstack([similarity, np.full((1, len(prior)), -np.inf, np.float32)])

    def _column(self, paper: Paper, columns: dict[str, int]) -> int:
        found = columns.get(paper.id)
        if found is None:
            found = columns[paper.id] = len(self.rated)
            self.rated.append(paper)
        return found

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
        """Learned scores in [-1, 1] of these learned rows for every window paper: the nearest
        liked paper's similarity minus the nearest disliked one's, over SIMILAR."""
        out = np.zeros((len(rows), self.similarity.shape[1]), dtype=np.float32)
        for start in range(0, len(rows), LEARN_BLOCK):
            some = rows[start : start + LEARN_BLOCK]
            score = out[start : start + LEARN_BLOCK]
            for padded, sign in ((self.liked, 1.0), (self.disliked, -DISLIKE_SHARE)):
                if padded.shape[1]:
                    nearest = self.similarity[padded[some]].max(axis=1)
                    score += sign * np.where(np.isfinite(nearest), nearest, 0.0)
        return np.clip(out / SIMILAR, -1.0, 1.0)

    def fuse(self, owners: np.ndarray, scores: np.ndarray) -> np.ndarray:
        """Keyword scores of profiles `owners` (rows) fused with what their ratings teach."""
        rows = self.row_of[owners]
        has = np.flatnonzero(rows >= 0)
        if not len(has):
            return scores
        mine = rows[has]
        share = self.share[mine, None]
        learned = self.learned(mine) * (100.0 * self.prior)
        scores[has] = np.maximum((1.0 - share) * scores[has] + share * learned, 0.0)
        return scores

    def profiles(self) -> list[int]:
        """The profiles (positions in the call) that have feedback."""
        return np.flatnonzero(self.row_of >= 0).tolist()

    def most_like(
        self, profile: int, paper_ids: Sequence[str], scores: Sequence[float]
    ) -> list[Liked | None]:
        """For each chosen paper of a profile: the liked paper it is most like, when what the
        ratings teach is a good part of its score (LIKE_SHOWN), else None."""
        row = int(self.row_of[profile])
        liked = self.liked[row][self.liked[row] < len(self.rated)] if row >= 0 else []
        if not len(liked) or not paper_ids:
            return [None] * len(paper_ids)
        at = [self.space.position[pid] for pid in paper_ids]
        share = float(self.share[row])
        part = self.learned(np.asarray([row]))[0, at] * (100.0 * self.prior[at]) * share
        best = liked[np.argmax(self.similarity[liked][:, at], axis=0)]
        out: list[Liked | None] = []
        for value, score, b in zip(part.tolist(), scores, best.tolist(), strict=True):
            shown = value > 0 and value >= LIKE_SHOWN * score
            out.append(Liked(self.rated[b].id, self.rated[b].title) if shown else None)
        return out


def _padded(groups: Sequence[Sequence[int]], pad: int) -> np.ndarray:
    """Ragged lists of rows as one array, padded with `pad` (the all -inf row)."""
    width = max((len(g) for g in groups), default=0)
    out = np.full((len(groups), width), pad, dtype=np.int64)
    for i, g in enumerate(groups):
        out[i, : len(g)] = g
    return out
