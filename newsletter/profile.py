"""Keyword profiles: the syntax subscribers write, parsed, validated and explained.

Entries are separated by commas or new lines::

    diffusion models            words; closer together scores higher
    "graph neural network"      an exact phrase (after normalization)
    -medical, -"protein folding"   exclusions: a paper mentioning them is never sent
    author:Hinton, author:"Yann LeCun"
    cat:cs.LG                   an arXiv category (cat:cs matches every cs.* category)
    LLM^2, "label noise"^1.5    a weight from 0.1 to 10 (default 1)
    like:2401.12345             a paper you like (arXiv id or address, version ignored):
                                papers like it rank higher; a profile may be only likes

Two profiles are equal when their entries are, up to case, Unicode form, plural, hyphenation,
curated acronyms and order: the ranker then scores them once.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from typing import Literal, Protocol

from newsletter.analysis import PLAIN, name_words
from newsletter.paper import written_arxiv_id

MAX_ENTRIES = 50  # keyword entries; liked papers have their own limit
MAX_LIKES = 200
MAX_ENTRY_CHARS = 100
MIN_WEIGHT, MAX_WEIGHT = 0.1, 10.0

Kind = Literal["text", "author", "cat"]
Mode = Literal["phrase", "loose", "name", "cat"]
SortKey = tuple[str, str, tuple[str, ...], str, bool, float]
MatchKey = tuple[str, str, tuple[str, ...], str]

_QUOTES = str.maketrans(dict.fromkeys("\u201c\u201d\u201e\u201f\u2033\u301d\u301e\uff02", '"'))
_WEIGHT = re.compile(r"(?:\d+(?:\.\d*)?|\.\d+)", re.ASCII)
_PREFIX = re.compile(r"(author|cat)\s*:", re.IGNORECASE)
_LIKE = re.compile(r"like\s*:\s*", re.IGNORECASE)
_CATEGORY = re.compile(r"[a-z][a-z-]*(?:\.[a-z][a-z-]*)?", re.IGNORECASE | re.ASCII)
_SIMPLE = re.compile(r"[^\s,\"^]+")
_TERMS_CACHE: dict[str, tuple[str, ...]] = {}
_ENTRY_CACHE: dict[str, Entry] = {}  # entries parse the same wherever they appear
_CACHE_LIMIT = 200_000


class _Error(Protocol):
    def __call__(self, what: str) -> ProfileError: ...


class _ErrorAt(Protocol):
    def __call__(self, what: str, offset: int = 0) -> ProfileError: ...


class ProfileError(ValueError):
    """A keyword profile that cannot be used; says what is wrong and where (1-based)."""

    def __init__(self, what: str, line: int = 1, column: int = 1, *, multiline: bool = True):
        self.what, self.line, self.column = what, line, column
        self.multiline = multiline
        where = f"line {line}, column {column}" if multiline else f"column {column}"
        super().__init__(f"{what} at {where}")

    def sentence(self) -> str:
        """The error as a form shows it: a sentence that says where, and never echoes input."""
        what = self.what
        for ending, plain in _PLAIN_WHAT.items():
            if what.endswith(ending):  # these begin with the entry as written: leave it out
                what = plain
        where = f"line {self.line}, column {self.column}"
        where = where if self.multiline else f"column {self.column}"
        text = _SENTENCES.get(what, what[:1].upper() + what[1:])
        return f"{text.rstrip('.')} (at {where})."


# What a form says for the terse errors of the parser (the CLI keeps them short).
_SENTENCES = {
    "unclosed quote": 'A quote is not closed: add the closing "',
    "empty entry": "There is an empty entry: remove the extra comma",
    "empty phrase": "A pair of quotes has nothing between them",
    "nothing after '-'": "A minus sign needs a word or phrase after it to leave out",
    "nothing after the field name": "author: and cat: need a value after them",
    "author: needs a name": "author: needs a name after it",
    "an exclusion takes no weight": "An exclusion (-word) cannot take a weight (^)",
    "no keywords: write at least one": "Enter at least one keyword",
}
_PLAIN_WHAT = {
    " has no letters or digits to match": "an entry has no letters or digits to match",
    " is not an arXiv category like cs.LG": "a category is not an arXiv category like cs.LG",
}


@dataclass(frozen=True, slots=True)
class Entry:
    """One entry of a profile. Equality ignores how it was written, only what it matches."""

    kind: Kind
    mode: Mode  # "phrase": adjacent words; "loose": unquoted words, adjacency scores higher
    terms: tuple[str, ...]  # normalized terms, name words or the folded category
    exclude: bool = False
    weight: float = 1.0
    exact: str = ""  # a one-word keyword's own (inflection-free) form, which counts extra
    value: str = field(default="", compare=False)  # the words as written, without syntax
    label: str = field(default="", compare=False)  # the entry as written, without its weight
    sort_key: SortKey = field(init=False, repr=False, compare=False)
    _hash: int = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        key = (self.kind, self.mode, self.terms, self.exact, self.exclude, self.weight)
        object.__setattr__(self, "sort_key", key)
        object.__setattr__(self, "_hash", hash(key))

    def __hash__(self) -> int:
        return self._hash

    @property
    def match_key(self) -> MatchKey:
        """What decides which papers match; shared by every profile with this entry."""
        return (self.kind, self.mode, self.terms, self.exact)

    @property
    def text(self) -> str:
        """The entry in canonical syntax; parses back to an equal entry."""
        sign = "-" if self.exclude else ""
        weight = "" if self.weight == 1.0 else f"^{_number(self.weight)}"
        if self.kind == "cat":
            return f"{sign}cat:{self.value}{weight}"
        if self.kind == "author":
            return f'{sign}author:"{self.value}"{weight}'
        simple = self.mode == "loose" or (
            _SIMPLE.fullmatch(self.value) is not None
            and not self.value.startswith("-")
            and _PREFIX.match(self.value) is None
        )
        return f"{sign}{self.value if simple else chr(34) + self.value + chr(34)}{weight}"

    def __str__(self) -> str:
        return self.label or self.text


@dataclass(frozen=True, eq=False, slots=True)
class Profile:
    """A parsed keyword profile: hashable, equal to any profile with the same entries."""

    entries: tuple[Entry, ...]  # keyword entries in the order written, duplicates merged
    source: str = field(default="", compare=False)  # the text as written
    likes: tuple[str, ...] = ()  # liked papers' versionless arXiv ids, in the order written
    key: tuple[SortKey, ...] = field(init=False)
    positives: tuple[Entry, ...] = field(init=False, repr=False)  # entries not excluded
    _hash: int = field(init=False, repr=False)

    def __post_init__(self) -> None:
        key = tuple(sorted(e.sort_key for e in self.entries))
        if self.likes:  # the same keywords with other liked papers rank differently
            key += tuple(("like", "like", (paper,), "", False, 1.0) for paper in sorted(self.likes))
        object.__setattr__(self, "key", key)
        object.__setattr__(self, "positives", tuple(e for e in self.entries if not e.exclude))
        object.__setattr__(self, "_hash", hash(key))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Profile) and self.key == other.key

    def __hash__(self) -> int:
        return self._hash

    @property
    def exclusions(self) -> tuple[Entry, ...]:
        return tuple(e for e in self.entries if e.exclude)

    @property
    def text(self) -> str:
        """Canonical text: entries in a fixed order, canonical syntax; parses back equal."""
        keywords = [e.text for e in sorted(self.entries, key=lambda e: e.sort_key)]
        return ", ".join(keywords + [f"like:{paper}" for paper in sorted(self.likes)])

    @property
    def words(self) -> str:
        """The words its keyword entries look for (not excluded, not author: or cat:), one run
        of words an entry; what the learned part reads as the profile's own bag of words."""
        return " . ".join(e.value or " ".join(e.terms) for e in self.positives if e.kind == "text")

    @property
    def keywords_text(self) -> str:
        """The keyword entries alone, in canonical syntax (empty for a profile of likes)."""
        return ", ".join(e.text for e in sorted(self.entries, key=lambda e: e.sort_key))

    def __str__(self) -> str:
        return self.text


def parse_profile(text: str) -> Profile:
    """Parse a keyword profile; raise ProfileError saying what is wrong and where."""
    source = text
    lines = text.translate(_QUOTES).splitlines()
    multiline = len(lines) > 1
    entries: list[Entry] = []
    likes: dict[str, None] = {}  # ordered, repeats merged
    count = 0
    for number, line in enumerate(lines, start=1):
        for column, segment, last in _segments(line, number, multiline):
            stripped = segment.strip()
            if not stripped:
                if last and (column > 0 or not line.strip()):
                    continue  # a trailing comma or a blank line
                # Point at the comma that ends the empty entry.
                raise ProfileError(
                    "empty entry", number, column + len(segment) + 1, multiline=multiline
                )
            start = column + len(segment) - len(segment.lstrip())
            liked = _like(stripped, number, start, multiline)
            if liked is not None:
                likes[liked] = None
                if len(likes) > MAX_LIKES:
                    raise ProfileError(
                        f"too many liked papers (the limit is {MAX_LIKES})",
                        number,
                        start + 1,
                        multiline=multiline,
                    )
                continue
            count += 1
            if count > MAX_ENTRIES:
                raise ProfileError(
                    f"too many entries (the limit is {MAX_ENTRIES})",
                    number,
                    start + 1,
                    multiline=multiline,
                )
            entry = _ENTRY_CACHE.get(stripped)
            if entry is None:
                entry = _parse_entry(stripped, number, start, multiline)
                if len(_ENTRY_CACHE) < _CACHE_LIMIT:
                    _ENTRY_CACHE[stripped] = entry
            entries.append(entry)
    if not entries and not likes:
        raise ProfileError("no keywords: write at least one", 1, 1, multiline=multiline)
    if not likes and all(e.exclude for e in entries):
        raise ProfileError(
            "only exclusions: add at least one keyword to match", 1, 1, multiline=multiline
        )
    return Profile(_merge(entries), source, tuple(likes))


def split_likes(text: str) -> tuple[str, tuple[str, ...]]:
    """The profile's keyword entries as written, `like:` entries taken out, and the liked ids.

    For a form that shows the liked papers in a box of their own. Light (no entry is parsed
    but the likes); a line that does not split (an unclosed quote) is kept as it is.
    """
    lines: list[str] = []
    likes: dict[str, None] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        try:
            parts = _segments(line.translate(_QUOTES), number, True)
        except ProfileError:
            lines.append(line)
            continue
        kept: list[str] = []
        for column, segment, _last in parts:
            try:
                liked = _like(segment.strip(), number, column, True) if segment.strip() else None
            except ProfileError:
                liked = None
            if liked is None:
                kept.append(line[column : column + len(segment)])
            else:
                likes[liked] = None
        if len(kept) == len(parts):
            lines.append(line)
        elif ",".join(kept).strip(" \t,"):
            lines.append(",".join(kept).strip(" \t"))
    return "\n".join(lines).strip(), tuple(likes)


def _like(entry: str, line: int, column: int, multiline: bool) -> str | None:
    """The paper id of a `like:` entry, None for any other entry; a bad one is an error."""
    exclude = entry.startswith("-")
    prefix = _LIKE.match(entry, 1 if exclude else 0)
    if prefix is None:
        return None

    def error(what: str) -> ProfileError:
        return ProfileError(what, line, column + 1, multiline=multiline)

    if exclude:
        raise error("a liked paper can't be excluded: rate it down in a digest instead")
    value = entry[prefix.end() :].strip()
    if "^" in value:
        raise error("like: takes no weight")
    paper = written_arxiv_id(value.strip('"'))
    if paper is None:
        raise error("like: needs an arXiv id or address, like like:2401.12345")
    return paper


def _segments(line: str, number: int, multiline: bool) -> list[tuple[int, str, bool]]:
    """(0-based column, text, is-last) of each comma-separated part of a line, quote-aware."""
    parts: list[tuple[int, str]] = []
    if '"' not in line:
        column = 0
        for part in line.split(","):
            parts.append((column, part))
            column += len(part) + 1
    else:
        start, opened = 0, -1
        for i, char in enumerate(line):
            if char == '"':
                opened = i if opened < 0 else -1
            elif char == "," and opened < 0:
                parts.append((start, line[start:i]))
                start = i + 1
        if opened >= 0:
            raise ProfileError("unclosed quote", number, opened + 1, multiline=multiline)
        parts.append((start, line[start:]))
    return [(column, part, i == len(parts) - 1) for i, (column, part) in enumerate(parts)]


def _parse_entry(entry: str, line: int, column: int, multiline: bool) -> Entry:
    """One stripped entry starting at 0-based `column` of `line`."""

    def error(what: str, offset: int = 0) -> ProfileError:
        return ProfileError(what, line, column + offset + 1, multiline=multiline)

    if len(entry) > MAX_ENTRY_CHARS:
        raise error(f"entry longer than {MAX_ENTRY_CHARS} characters")
    i, exclude = 0, entry.startswith("-")
    if exclude:
        i = len(entry) - len(entry[1:].lstrip())
        if i == len(entry):
            raise error("nothing after '-'")
    kind: Kind = "text"
    prefix = _PREFIX.match(entry, i)
    if prefix:
        kind = "author" if prefix.group(1).lower() == "author" else "cat"
        i = prefix.end()
        while i < len(entry) and entry[i].isspace():
            i += 1
    value, quoted, weight_at = _value(entry, i, error)
    weight = 1.0
    if weight_at >= 0:
        if exclude:
            raise error("an exclusion takes no weight", weight_at)
        weight = _weight(entry[weight_at + 1 :].strip(), lambda what: error(what, weight_at))
    label = entry[:weight_at].rstrip() if weight_at >= 0 else entry
    return _entry(kind, value, quoted, exclude, weight, label, lambda what: error(what, i))


def _value(entry: str, i: int, error: _ErrorAt) -> tuple[str, bool, int]:
    """(value, quoted, index of the weight's '^' or -1) of the entry's part from `i`."""
    if i < len(entry) and entry[i] == '"':
        close = entry.find('"', i + 1)
        if close < 0:
            raise error("unclosed quote", i)
        value = entry[i + 1 : close]
        after = close + 1
        while after < len(entry) and entry[after].isspace():
            after += 1
        if after < len(entry) and entry[after] != "^":
            raise error("unexpected text after the closing quote", after)
        if not value.strip():
            raise error("empty phrase", i)
        return " ".join(value.split()), True, after if after < len(entry) else -1
    quote = entry.find('"', i)
    if quote >= 0:
        raise error("a quote must open the entry: put the whole phrase in quotes", quote)
    caret = entry.find("^", i)
    value = entry[i:caret] if caret >= 0 else entry[i:]
    if not value.strip():
        raise error("empty entry" if caret >= 0 else "nothing after the field name", i)
    return " ".join(value.split()), False, caret


def _weight(text: str, error: _Error) -> float:
    if _WEIGHT.fullmatch(text) is None or not MIN_WEIGHT <= float(text) <= MAX_WEIGHT:
        raise error(f"weight must be a number between {MIN_WEIGHT:g} and {MAX_WEIGHT:g}")
    return float(text)


def _entry(
    kind: Kind,
    value: str,
    quoted: bool,
    exclude: bool,
    weight: float,
    label: str,
    error: _Error,
) -> Entry:
    if kind == "author":
        names = name_words(value)
        if not names:
            raise error("author: needs a name")
        return Entry("author", "name", names, exclude, weight, "", value, label)
    if kind == "cat":
        if _CATEGORY.fullmatch(value) is None:
            raise error(f"{value!r} is not an arXiv category like cs.LG")
        return Entry("cat", "cat", (value.casefold(),), exclude, weight, "", value, label)
    terms = text_terms(value)
    if not terms:
        raise error(f"{value!r} has no letters or digits to match")
    # Unquoted words are loose (adjacency scores higher but is not required), unless they
    # normalize to one term: "large language models" is just LLM.
    loose = not quoted and not exclude and " " in value and len(terms) > 1
    exact = "" if loose or exclude else (PLAIN.exact_term(value) or "")
    mode: Mode = "loose" if loose else "phrase"
    return Entry("text", mode, terms, exclude, weight, exact, value, label)


def _number(value: float) -> str:
    short = f"{value:g}"
    return short if float(short) == value else repr(value)


def text_terms(value: str) -> tuple[str, ...]:
    """The corpus-independent terms of a keyword (cached: subscribers share keywords)."""
    terms = _TERMS_CACHE.get(value)
    if terms is None:
        terms = PLAIN.query_terms(value)
        if len(_TERMS_CACHE) < _CACHE_LIMIT:
            _TERMS_CACHE[value] = terms
    return terms


def _merge(entries: list[Entry]) -> tuple[Entry, ...]:
    """Drop repeated entries (same match, same sign), keeping the first and the largest weight."""
    merged: dict[tuple[MatchKey, bool], Entry] = {}
    for entry in entries:
        key = (entry.match_key, entry.exclude)
        kept = merged.get(key)
        if kept is None:
            merged[key] = entry
        elif entry.weight > kept.weight:
            merged[key] = replace(kept, weight=entry.weight)
    return tuple(merged.values())
