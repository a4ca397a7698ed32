"""Term counts of texts as the learned part reads them: one text at a time, or many at once.

A text's terms are its content-word stems (the corpus-free analyzer's: curated acronyms,
stopwords and numbers dropped) and each adjacent pair of them, not across punctuation but
across a dropped word. `text_terms` reads one text word by word; `TermCounts.of` reads many
with one regular-expression pass per text and the rest in numpy, each distinct word looked up
once, and gives every text the same counts in the same order (tests/unit/test_rank_terms.py).
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from itertools import chain, repeat

import numpy as np

from newsletter.analysis import PLAIN, STOPWORDS, Word, fold

_TOKEN = re.compile(r"[^\W_]+(?:['\u2019][^\W_]+)*|[.,;:!?()\[\]{}\"|/<>=+*&#@\u2013\u2014\u2026]")
_TERMS: dict[str, str] = {}  # a word as written -> its term ("" for a stopword)
_TERMS_KEPT = 500_000


def text_terms(*texts: str) -> dict[str, int]:
    """Term counts of texts read as a paper's title and abstract are (a profile's words)."""
    terms: list[str] = []
    known = _TERMS.get
    for text in texts:
        run: list[str] = []
        for token in _TOKEN.findall(text):
            term = known(token)
            if term is None:
                term = word_term(token)
            if term:
                run.append(term)
            elif run and len(token) == 1 and not token.isalnum():  # punctuation ends a run
                terms.extend(run)
                terms.extend(map(" ".join, zip(run, run[1:], strict=False)))
                run = []
        terms.extend(run)
        terms.extend(map(" ".join, zip(run, run[1:], strict=False)))
    return Counter(terms)


def words_of(text: str) -> list[str]:
    """The words and punctuation marks of a text, as written, in order."""
    return _TOKEN.findall(text)


def word_term(surface: str) -> str:
    """The term of a word as the corpus-free analyzer reads it, "" for a stopword or number."""
    found = _TERMS.get(surface)
    if found is None:
        folded = fold(surface)
        skip = folded in STOPWORDS or len(folded) < 2 or folded.isdigit()
        found = "" if skip else PLAIN.term(Word(surface, folded, 0, len(surface), False))
        if len(_TERMS) < _TERMS_KEPT:
            _TERMS[surface] = found
    return found


# Many texts at once ----------------------------------------------------------------------------

# Codes of a word that is no term, of punctuation, of the next text; of a piece not yet read,
# and of one with no word or more than one.
_DROPPED, _BREAK, _NEXT, _UNKNOWN, _SEVERAL = -1, -2, -3, -4, -5
# A pair's key: (first term's id + 1) * _PAIR + second term's id. Not a power of two: the
# dicts that count and look up keys hash an int to itself and index by its low bits.
_PAIR = 4_294_967_311  # the first prime above 2**32
# What follows each part of a text and each text (no piece of split() has a space).
_PART_END, _TEXT_END = " part", " text"


class Vocabulary:
    """Pieces of text between spaces -> the codes of their words (a term's id, or a code < 0),
    and each id's term; one per text space, so that ids (and the keys built from them) mean
    the same across the batches it reads."""

    def __init__(self) -> None:
        # No word has a space in it, so splitting at spaces first loses none: each distinct
        # piece ("models,", "(LLMs)", "semi-supervised") is read with the expression once.
        # A piece of one word has its code; one of more or none (_SEVERAL), its codes.
        self._piece: dict[str, int] = {_PART_END: _BREAK, _TEXT_END: _NEXT}
        self._several: dict[str, tuple[int, ...]] = {}
        self._ids: dict[str, int] = {}
        self.terms: list[str] = []
        # Whether a term has a space in it (a ligature such as U+FDFB): its key and that of a
        # pair of terms could then name the same string, and only strings tell them apart.
        self.spaced = False

    def codes(self, pieces: list[str]) -> np.ndarray:
        """The codes of the words of each piece, in order."""
        found = map(self._piece.get, pieces, repeat(_UNKNOWN))
        codes = np.fromiter(found, np.int64, len(pieces))  # type: ignore[arg-type]
        unknown = np.flatnonzero(codes == _UNKNOWN)
        if len(unknown):
            new = [pieces[i] for i in unknown.tolist()]
            for piece in dict.fromkeys(new):
                self._learn(piece)
            codes[unknown] = np.fromiter(map(self._piece.__getitem__, new), np.int64, len(new))
        several = np.flatnonzero(codes == _SEVERAL)
        if not len(several):
            return codes
        spelled = [self._several[pieces[i]] for i in several.tolist()]
        sizes = np.fromiter(map(len, spelled), np.int64, len(spelled))
        lengths = np.ones(len(codes), dtype=np.int64)
        lengths[several] = sizes
        out = np.repeat(codes, lengths)
        # Each such piece's codes go from where it starts in `out`, one after the other.
        start = np.repeat(np.cumsum(lengths)[several] - sizes, sizes)
        within = np.arange(len(start)) - np.repeat(np.cumsum(sizes) - sizes, sizes)
        out[start + within] = np.fromiter(chain.from_iterable(spelled), np.int64, len(start))
        return out

    def _learn(self, piece: str) -> None:
        codes = tuple(self._code(word) for word in _TOKEN.findall(piece))
        if len(codes) == 1:
            self._piece[piece] = codes[0]
        else:
            self._piece[piece] = _SEVERAL
            self._several[piece] = codes

    def _code(self, surface: str) -> int:
        term = word_term(surface)
        if not term:
            return _BREAK if len(surface) == 1 and not surface.isalnum() else _DROPPED
        found = self._ids.get(term)
        if found is None:
            found = self._ids[term] = len(self.terms)
            self.terms.append(term)
            self.spaced = self.spaced or " " in term
        return found

    def forget_after(self, size: int) -> None:
        """Forget the terms after the first `size` (and the pieces that have them)."""
        del self.terms[size:]
        self._ids = {term: i for i, term in enumerate(self.terms)}
        self._several = {p: c for p, c in self._several.items() if all(i < size for i in c)}
        self._piece = {
            p: c
            for p, c in self._piece.items()
            if c < size and (c != _SEVERAL or p in self._several)
        }

    def strings(self, keys: Iterable[int]) -> list[str]:
        """The term each key names (a term, or two separated by a space)."""
        terms = self.terms
        return [
            terms[key] if key < _PAIR else f"{terms[key // _PAIR - 1]} {terms[key % _PAIR]}"
            for key in keys
        ]


@dataclass(frozen=True)
class TermCounts:
    """Term counts of many texts: text i has the terms `keys[indptr[i]:indptr[i + 1]]` (see
    Vocabulary.strings) `tf` times each, in the order `text_terms` gives them."""

    indptr: np.ndarray
    keys: np.ndarray
    tf: np.ndarray

    @property
    def rows(self) -> np.ndarray:
        """The text each term count belongs to."""
        return np.repeat(np.arange(len(self.indptr) - 1), np.diff(self.indptr))

    @classmethod
    def of(cls, vocabulary: Vocabulary, texts: Sequence[Iterable[str]]) -> TermCounts:
        """Counts of each item of `texts` (its parts read as `text_terms(*parts)` reads them)."""
        pieces: list[str] = []
        for parts in texts:
            for part in parts:
                pieces += part.split()
                pieces.append(_PART_END)
            pieces.append(_TEXT_END)
        codes = vocabulary.codes(pieces)
        codes = codes[codes != _DROPPED]  # a dropped word joins its neighbours into a pair
        word = codes >= 0
        ends = np.flatnonzero(codes == _NEXT)
        single = np.flatnonzero(word)
        pair = np.flatnonzero(word[:-1] & word[1:])
        keys = np.empty(len(single) + len(pair), dtype=np.int64)
        keys[_listed(single, pair, np.cumsum(~word))] = np.concatenate(
            [codes[single], (codes[pair] + 1) * _PAIR + codes[pair + 1]]
        )
        # Of each text, its distinct terms in the order first met, and how often each is met.
        listed = keys.tolist()
        # No run crosses the end of a text: its keys are those of the words and pairs before.
        bounds = (np.searchsorted(single, ends) + np.searchsorted(pair, ends)).tolist()
        counts = [Counter(listed[a:b]) for a, b in zip([0, *bounds], bounds, strict=False)]
        sizes = np.fromiter(map(len, counts), dtype=np.int64, count=len(counts))
        total = int(sizes.sum())
        return cls(
            np.concatenate([[0], np.cumsum(sizes)]),
            np.fromiter(chain.from_iterable(counts), np.int64, total),
            np.fromiter(chain.from_iterable(c.values() for c in counts), np.int64, total),
        )


def _listed(single: np.ndarray, pair: np.ndarray, run: np.ndarray) -> np.ndarray:
    """Where each single term and each pair goes when, as `text_terms` lists them, each run of
    words gives its terms, then its pairs, run after run (`run`: each word's run)."""
    runs = run[single]
    singles = np.bincount(runs, minlength=int(run[-1]) + 1 if len(run) else 0)
    pairs = np.maximum(singles - 1, 0)
    before = np.cumsum(pairs) - pairs  # pairs of earlier runs
    upto = np.cumsum(singles)  # single terms of this run and earlier ones
    return np.concatenate(
        [np.arange(len(single)) + before[runs], np.arange(len(pair)) + upto[run[pair]]]
    )
