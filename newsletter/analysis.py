"""Text normalization shared by papers and profiles: words, stems, compounds and acronyms.

One analysis turns both a paper's text and a subscriber's keywords into *terms*, so that case,
Unicode forms, plural/singular, hyphen/space/concatenation variants ("semi-supervised",
"semi supervised", "semisupervised") and acronyms ("LLMs", "large language model") meet on
the same term. A paper's tokens keep their word positions (for phrases) and character offsets
(for highlighted snippets). A token may span several words: a joined compound ("data set" ->
"dataset") or an acronym concept ("large language models" -> "§llm").
"""

from __future__ import annotations

import re
import threading
import unicodedata
from collections.abc import Container, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

import snowballstemmer

_WORD = re.compile(r"[^\W_]+(?:['\u2019][^\W_]+)*")
# Punctuation between two words that ends a phrase: "graph. Neural network" is no phrase.
_BREAK = re.compile(r"[.,;:!?()\[\]{}\"'|/<>=+*&#@\u2013\u2014\u2026]")
_PARENTHESIZED = re.compile(r"\(\s*([^()\s,;]{2,12})\s*\)")
CONCEPT = "\u00a7"  # prefix of acronym concept terms; no word can produce it
EXACT = "="  # prefix of a word's inflection-free form (see `inflection`)

STOPWORDS = frozenset(
    (  # noqa: SIM905 - a list literal would take 50 lines
        "a an and are as at be by for from has have in into is it its of on or that the their "
        "this to via was we were which with without our than then these those not no can using "
        "based towards toward over under between through"
    ).split()
)

# Acronyms every subscriber expects to just work; more are mined from the papers themselves.
CURATED_ACRONYMS: Mapping[str, tuple[str, ...]] = {
    "ai": ("artificial intelligence",),
    "ml": ("machine learning",),
    "dl": ("deep learning",),
    "llm": ("large language model",),
    "lm": ("language model",),
    "mllm": ("multimodal large language model",),
    "vlm": ("vision language model", "visual language model"),
    "lvlm": ("large vision language model",),
    "vla": ("vision language action",),
    "nlp": ("natural language processing",),
    "nlu": ("natural language understanding",),
    "cv": ("computer vision",),
    "rl": ("reinforcement learning",),
    "rlhf": ("reinforcement learning from human feedback",),
    "rlvr": ("reinforcement learning with verifiable rewards",),
    "marl": ("multi agent reinforcement learning",),
    "gnn": ("graph neural network",),
    "cnn": ("convolutional neural network",),
    "rnn": ("recurrent neural network",),
    "snn": ("spiking neural network",),
    "mlp": ("multilayer perceptron", "multi layer perceptron"),
    "moe": ("mixture of experts",),
    "rag": ("retrieval augmented generation",),
    "vit": ("vision transformer",),
    "dit": ("diffusion transformer",),
    "gan": ("generative adversarial network",),
    "vae": ("variational autoencoder", "variational auto encoder"),
    "sae": ("sparse autoencoder", "sparse auto encoder"),
    "asr": ("automatic speech recognition",),
    "tts": ("text to speech",),
    "ocr": ("optical character recognition",),
    "vqa": ("visual question answering",),
    "qa": ("question answering",),
    "ner": ("named entity recognition",),
    "kg": ("knowledge graph",),
    "kd": ("knowledge distillation",),
    "nas": ("neural architecture search",),
    "ssl": ("self supervised learning",),
    "sft": ("supervised fine tuning", "supervised finetuning"),
    "dpo": ("direct preference optimization",),
    "ppo": ("proximal policy optimization",),
    "grpo": ("group relative policy optimization",),
    "lora": ("low rank adaptation",),
    "cot": ("chain of thought",),
    "icl": ("in context learning",),
    "nerf": ("neural radiance field",),
    "slam": ("simultaneous localization and mapping",),
    "ood": ("out of distribution",),
    "mcts": ("monte carlo tree search",),
}


# Words and terms -------------------------------------------------------------------------


class Word(NamedTuple):
    """One word of a text: its surface form, folded form and character span."""

    surface: str
    folded: str
    start: int
    end: int
    gap: bool  # punctuation separates it from the previous word


def fold(text: str) -> str:
    """Case- and Unicode-normalize (NFKC, casefold, no accents: "Naïve" -> "naive")."""
    if text.isascii():
        return text.lower()
    folded = unicodedata.normalize("NFKC", text).casefold().replace("\u2019", "'")
    if folded.isascii():
        return folded
    decomposed = unicodedata.normalize("NFKD", folded)
    plain = "".join(c for c in decomposed if not unicodedata.combining(c))
    return unicodedata.normalize("NFC", plain)


def split_words(text: str) -> list[Word]:
    """The words of `text` with their spans; hyphens join nothing, punctuation marks a gap."""
    lowered = text.lower() if text.isascii() else None  # ASCII: lowering keeps the offsets
    words: list[Word] = []
    previous_end = -1
    for match in _WORD.finditer(text):
        start, end = match.span()
        surface = match.group()
        folded = lowered[start:end] if lowered is not None else fold(surface)
        gap = False
        if previous_end >= 0:
            between = text[previous_end:start]
            gap = between != " " and between != "-" and _BREAK.search(between) is not None
        words.append(Word(surface, folded, start, end, gap))
        previous_end = end
    return words


def name_words(name: str) -> tuple[str, ...]:
    """A person's name as folded, accent-free words: "Jürgen  Schmidhuber" -> jurgen schmidhuber."""
    return tuple(w for w in re.split(r"[^\w]+|_", fold(name)) if w)


def names_match(wanted: tuple[str, ...], author: tuple[str, ...]) -> bool:
    """Whether a name as a subscriber wrote it ("Hinton", "G. Hinton") names this author.

    The last word is the family name and must be equal; earlier words must appear in order,
    a single letter standing for any word with that initial (and the other way round).
    """
    if not wanted or not author or wanted[-1] != author[-1]:
        return False
    rest = iter(author[:-1])
    return all(any(_same_name_word(w, a) for a in rest) for w in wanted[:-1])


def _same_name_word(wanted: str, author: str) -> bool:
    if len(wanted) == 1 or len(author) == 1:
        return wanted[0] == author[0]
    return wanted == author


class _Stemmer:
    """Snowball English stems, cached; the stemmer object is per thread (it is stateful)."""

    def __init__(self) -> None:
        self._cache: dict[str, str] = {}
        self._local = threading.local()

    def __call__(self, word: str) -> str:
        stem = self._cache.get(word)
        if stem is None:
            stemmer = getattr(self._local, "stemmer", None)
            if stemmer is None:
                stemmer = self._local.stemmer = snowballstemmer.stemmer("english")
            stem = stemmer.stemWord(word)
            if len(self._cache) < 500_000:  # bounded: the vocabulary of papers is finite
                self._cache[word] = stem
        return stem


stem = _Stemmer()


def acronym_form(surface: str, folded: str, known: Container[str]) -> str | None:
    """The singular acronym a word writes ("LLMs" -> "llm"), or None for an ordinary word.

    A word is an acronym when it carries two capitals ("GANs", "MoE", "ViT") or when its folded
    form (or that form minus a plural "s") is a known acronym ("llms" typed by a subscriber).
    """
    if folded in known:
        return folded
    plural = len(folded) > 2 and folded.endswith("s") and folded[:-1] in known
    if plural:
        return folded[:-1]
    if surface.islower() or sum(1 for c in surface if c.isupper()) < 2:
        return None
    if surface.endswith("s") and surface[-2].isupper():
        return folded[:-1]
    return None


def light_singular(word: str) -> str:
    """Strip a plural "s" cheaply (used to recognize concatenations, not for matching)."""
    return word[:-1] if len(word) > 3 and word.endswith("s") and not word.endswith("ss") else word


def inflection(folded: str) -> str:
    """A word without its plural ending: "classes" -> "class", "supervision" stays.

    Stems merge a word with its derivations ("supervised", "supervision"); this only merges
    its inflections, so a subscriber's own word can count a little more than its relatives.
    """
    if len(folded) <= 3 or not folded.endswith("s"):
        return folded
    if folded.endswith("ies") and len(folded) > 4:
        return folded[:-3] + "y"
    if folded.endswith(("sses", "xes", "ches", "shes", "zes")):
        return folded[:-2]
    if folded.endswith(("ss", "us", "is", "ias")):
        return folded
    return folded[:-1]


_INFLECTIONS: dict[str, str] = {}


def _inflections(folded: str) -> str:
    found = _INFLECTIONS.get(folded)
    if found is None:
        found = inflection(folded)
        if len(_INFLECTIONS) < 500_000:
            _INFLECTIONS[folded] = found
    return found


# Acronym mining ----------------------------------------------------------------------------


def _long_form(short: str, before: str) -> str | None:
    """Schwartz & Hearst (2003): the shortest tail of `before` whose letters spell `short`."""
    s, position = len(short) - 1, len(before) - 1
    while s >= 0:
        char = short[s].lower()
        if not char.isalnum():
            s -= 1
            continue
        while position >= 0 and (
            before[position].lower() != char
            or (s == 0 and position > 0 and before[position - 1].isalnum())
        ):
            position -= 1
        if position < 0:
            return None
        position -= 1
        s -= 1
    start = before.rfind(" ", 0, position + 1) + 1
    return before[start:].strip()


def mine_acronyms(text: str) -> list[tuple[str, str]]:
    """(acronym, long form) pairs defined in `text` as "long form (ACRONYM)"."""
    found: list[tuple[str, str]] = []
    for match in _PARENTHESIZED.finditer(text):
        short = match.group(1)
        if sum(1 for c in short if c.isupper()) < 2 or not short[0].isalnum():
            continue
        if short.endswith("s") and short[-2].isupper():
            short = short[:-1]
        head = text[max(text.rfind(c, 0, match.start()) for c in ".;:()[]") + 1 : match.start()]
        words = head.split()[-min(len(short) + 5, 2 * len(short)) :]
        long_form = _long_form(short, " ".join(words))
        if long_form is None or short.lower() in long_form.lower():
            continue
        if len(split_words(long_form)) < 2:
            continue
        found.append((short.lower(), long_form))
    return found


# Analyzers ---------------------------------------------------------------------------------


class Token(NamedTuple):
    """A term at word positions first..last (inclusive) and characters start..end."""

    term: str
    first: int
    last: int
    start: int
    end: int


@dataclass
class Acronyms:
    """Which acronym or expansion names which concept term."""

    by_acronym: dict[str, set[str]] = field(default_factory=dict)  # acronym -> concepts
    by_expansion: dict[tuple[str, ...], str] = field(default_factory=dict)  # terms -> concept
    curated: dict[str, str] = field(default_factory=dict)  # acronym -> curated concept

    @property
    def known(self) -> frozenset[str]:
        return frozenset(self.by_acronym)

    def resolve(self, acronym: str) -> str | None:
        """The concept an acronym names everywhere: curated, or the one mined meaning."""
        concept = self.curated.get(acronym)
        if concept is not None:
            return concept
        concepts = self.by_acronym.get(acronym, ())
        return next(iter(concepts)) if len(concepts) == 1 else None


class Analyzer:
    """Turns text into terms; bound to a corpus vocabulary (for compounds) and its acronyms.

    Without a vocabulary it applies only the corpus-independent rules (case, Unicode, stems,
    hyphens, curated acronyms): that is what makes two keyword profiles equal.
    """

    def __init__(
        self,
        vocabulary: Iterable[str] = (),
        mined: Iterable[tuple[str, str]] = (),
    ) -> None:
        self.vocabulary = frozenset(vocabulary)
        self._singulars = frozenset(light_singular(w) for w in self.vocabulary)
        self._pairs = self._joinable_pairs()
        self._terms: dict[str, str] = {}
        self.acronyms = Acronyms()
        self._first_terms: dict[str, list[tuple[str, ...]]] = {}
        self._build_acronyms(mined)

    # Acronym table -----------------------------------------------------------------------
    def _build_acronyms(self, mined: Iterable[tuple[str, str]]) -> None:
        table = self.acronyms
        for acronym in CURATED_ACRONYMS:
            table.by_acronym[acronym] = {CONCEPT + acronym}
            table.curated[acronym] = CONCEPT + acronym
        for acronym, expansions in CURATED_ACRONYMS.items():
            for expansion in expansions:
                self._add_expansion(self._plain_terms(expansion), CONCEPT + acronym)
        for acronym, long_form in mined:
            terms = self._plain_terms(long_form)
            if len(terms) < 2:
                continue
            concept = table.by_expansion.get(terms) or f"{CONCEPT}{acronym}={'_'.join(terms)}"
            table.by_acronym.setdefault(acronym, set()).add(concept)
            self._add_expansion(terms, concept)
        self._terms.clear()  # terms computed before all acronyms were known may be stale

    def _add_expansion(self, terms: tuple[str, ...], concept: str) -> None:
        if len(terms) >= 2 and terms not in self.acronyms.by_expansion:
            self.acronyms.by_expansion[terms] = concept
            self._first_terms.setdefault(terms[0], []).append(terms)

    def local_acronyms(self, mined: Iterable[tuple[str, str]]) -> dict[str, str]:
        """What the acronyms a paper defines itself mean inside that paper."""
        local = {}
        for acronym, long_form in mined:
            concept = self.acronyms.by_expansion.get(self._plain_terms(long_form))
            if concept is not None:
                local[acronym] = concept
        return local

    # Words -> terms ----------------------------------------------------------------------
    def term(self, word: Word) -> str:
        """The term of one word: an acronym as written (singular), otherwise its stem."""
        key = word.surface
        term = self._terms.get(key)
        if term is None:
            acronym = acronym_form(word.surface, word.folded, self.acronyms.by_acronym)
            term = acronym if acronym is not None else stem(word.folded)
            self._terms[key] = term
        return term

    def _joinable_pairs(self) -> frozenset[tuple[str, str]]:
        """Every pair of corpus words that the corpus also writes as one word."""
        pairs = set()
        for whole in self._singulars:
            if len(whole) < 4 or not whole.isalpha():
                continue
            for cut in range(2, len(whole) - 1):
                left, right = whole[:cut], whole[cut:]
                if left not in self.vocabulary or left in STOPWORDS:
                    continue
                for candidate in (right, right + "s"):
                    if candidate in self.vocabulary and candidate not in STOPWORDS:
                        pairs.add((left, candidate))
        return frozenset(p for p in pairs if light_singular(p[0] + p[1]) in self._singulars)

    def joinable(self, left: Word, right: Word) -> bool:
        """Whether two adjacent words are also written as one in this corpus ("data set")."""
        a, b = left.folded, right.folded
        if len(a) < 2 or len(b) < 2 or a in STOPWORDS or b in STOPWORDS:
            return False
        if not (a.isalpha() and b.isalpha()):
            return False
        return light_singular(a + b) in self._singulars

    def _split_compound(self, word: Word) -> tuple[str, str] | None:
        """ "semisupervised" -> ("semi", "supervised") when only the parts occur in the corpus."""
        text = word.folded
        if not self.vocabulary or not text.isalpha() or light_singular(text) in self._singulars:
            return None
        splits = [
            (text[:cut], text[cut:])
            for cut in range(2, len(text) - 1)
            if text[:cut] in self.vocabulary
            and text[cut:] in self.vocabulary
            and text[:cut] not in STOPWORDS
        ]
        # The most balanced split: "semi|supervised" rather than "se|misupervised".
        return max(splits, key=lambda parts: min(map(len, parts)), default=None)

    def _plain_terms(self, text: str) -> tuple[str, ...]:
        """Terms of a query text with compounds joined, before acronym concepts."""
        words = split_words(text)
        terms: list[str] = []
        i = 0
        while i < len(words):
            if i + 1 < len(words) and self.joinable(words[i], words[i + 1]):
                terms.append(stem(words[i].folded + words[i + 1].folded))
                i += 2
                continue
            parts = self._split_compound(words[i])
            if parts is not None:
                terms.extend(stem(part) for part in parts)
            else:
                terms.append(self.term(words[i]))
            i += 1
        return tuple(terms)

    def query_terms(self, text: str) -> tuple[str, ...]:
        """The canonical term sequence of a keyword: compounds joined, acronyms as concepts."""
        terms = list(self._plain_terms(text))
        out: list[str] = []
        i = 0
        while i < len(terms):
            for expansion in sorted(self._first_terms.get(terms[i], ()), key=len, reverse=True):
                if tuple(terms[i : i + len(expansion)]) == expansion:
                    out.append(self.acronyms.by_expansion[expansion])
                    i += len(expansion)
                    break
            else:
                concept = self.acronyms.resolve(terms[i])
                out.append(concept if concept is not None else terms[i])
                i += 1
        return tuple(out)

    def bag_terms(self, text: str) -> tuple[str, ...]:
        """The distinct content-word terms of a text (stopwords dropped), in order."""
        terms = [self.term(w) for w in split_words(text) if w.folded not in STOPWORDS]
        return tuple(dict.fromkeys(terms))

    # Documents ---------------------------------------------------------------------------
    def tokens(self, text: str, local: Mapping[str, str] | None = None) -> list[Token]:
        """All tokens of a paper's text: words, joined compounds and acronym concepts."""
        return [t for ts in self.postings(split_words(text), local).values() for t in ts]

    def postings(
        self, words: list[Word], local: Mapping[str, str] | None = None
    ) -> dict[str, list[Token]]:
        """The tokens of a text already split into words, grouped by term."""
        by_term: dict[str, list[Token]] = {}
        position = -1
        positions: list[int] = []
        known = self._terms
        for word in words:
            position += 2 if word.gap else 1
            positions.append(position)
            term = known.get(word.surface) or self.term(word)
            token = Token(term, position, position, word.start, word.end)
            found = by_term.get(term)
            if found is None:
                by_term[term] = [token]
            else:
                found.append(token)
        pairs = self._pairs  # the words of a paper are corpus words: no need for joinable()
        for i in range(len(words) - 1):
            left, right = words[i], words[i + 1]
            if positions[i + 1] == positions[i] + 1 and (left.folded, right.folded) in pairs:
                term = stem(left.folded + right.folded)
                token = Token(term, positions[i], positions[i + 1], left.start, right.end)
                by_term.setdefault(term, []).append(token)
        for token in list(self._concepts(by_term, local or {})):
            by_term.setdefault(token.term, []).append(token)
        return by_term

    def exact_forms(self, words: list[Word]) -> list[tuple[str, int]]:
        """(EXACT + inflection-free form, position) of each ordinary word of a text."""
        forms = []
        position = -1
        for word in words:
            position += 2 if word.gap else 1
            forms.append((EXACT + _inflections(word.folded), position))
        return forms

    def exact_term(self, text: str) -> str | None:
        """The exact form of a one-word keyword written as an ordinary word, else None."""
        words = split_words(text)
        if len(words) != 1 or " " in text.strip() or "-" in text:
            return None
        word = words[0]
        if acronym_form(word.surface, word.folded, self.acronyms.by_acronym) is not None:
            return None
        return EXACT + inflection(word.folded)

    def _concepts(
        self, by_term: Mapping[str, list[Token]], local: Mapping[str, str]
    ) -> Iterator[Token]:
        """Concept tokens for acronyms (as defined here, else corpus-wide) and expansions."""
        acronyms, first_terms = self.acronyms.by_acronym, self._first_terms
        for term, occurrences in by_term.items():
            concept = local.get(term) or (self.acronyms.resolve(term) if term in acronyms else None)
            if concept is not None:
                for t in occurrences:
                    yield Token(concept, t.first, t.last, t.start, t.end)
            for expansion in first_terms.get(term, ()):
                concept = self.acronyms.by_expansion[expansion]
                for first, last in phrase_spans(by_term, expansion):
                    yield _span_token(concept, by_term, expansion, first, last)


def _span_token(
    term: str, by_term: Mapping[str, list[Token]], phrase: tuple[str, ...], first: int, last: int
) -> Token:
    start = min(t.start for t in by_term[phrase[0]] if t.first == first)
    end = max(t.end for t in by_term[phrase[-1]] if t.last == last)
    return Token(term, first, last, start, end)


def phrase_spans(
    by_term: Mapping[str, list[Token]], phrase: tuple[str, ...]
) -> list[tuple[int, int]]:
    """(first, last) word positions of each occurrence of `phrase`, term after term."""
    first_tokens = by_term.get(phrase[0])
    if not first_tokens:
        return []
    current = {(t.first, t.last) for t in first_tokens}
    for term in phrase[1:]:
        following = by_term.get(term)
        if not following:
            return []
        starting: dict[int, list[int]] = {}
        for t in following:
            starting.setdefault(t.first, []).append(t.last)
        current = {(first, end) for first, last in current for end in starting.get(last + 1, ())}
        if not current:
            return []
    return sorted(current)


def words_found(
    text: str, fields: Sequence[Container[str]], analyzer: Analyzer
) -> tuple[str, ...] | None:
    """The words of an entry's text (split at spaces, as written) that a paper's `fields`
    (each the terms of a field: its term -> tokens mapping, or a set) have all the terms of,
    stopwords left out; None when it has every word. How a label names the words of an entry
    a paper matched in part."""
    read = [(word, analyzer.bag_terms(word)) for word in text.split()]
    found = [all(any(t in f for f in fields) for t in terms) for _, terms in read]
    if all(found):
        return None
    return tuple(word for (word, terms), there in zip(read, found, strict=True) if there and terms)


PLAIN = Analyzer()
"""The corpus-independent analyzer: what decides that two keyword profiles are the same."""
