"""Readable text from paper metadata: TeX markup in titles and abstracts as plain Unicode.

arXiv titles and abstracts are written in TeX ("6.01$\\times$", "100\\%", "\\emph{new}"), and
Hugging Face passes some of it on half-converted ("{approx}5{times}"). Readers should see
"6.01×", "100%", "new" and "~5×", in the email, on the pages and in the feed alike, and the
ranking should index the words, not the markup. pylatexenc does the TeX; this module only
decides what to hand it and cleans up what it cannot know (superscripts, Hugging Face's braces).
"""

from __future__ import annotations

import re
from functools import cache, lru_cache

from pylatexenc.latex2text import LatexNodes2Text, MacroTextSpec, get_default_latex_context_db
from pylatexenc.latexwalker import LatexWalker

# Only text with one of these can hold TeX: the common case (no markup) costs one search.
_TEX_HINT = re.compile(r"[\\$]|\{[A-Za-z]+\}")
# Hugging Face writes a math macro as its name in braces: "{approx}5{times}".
_BRACED_NAME = re.compile(r"\{([A-Za-z]+)\}")
_SUPERSCRIPTS = str.maketrans("0123456789+-=()n", "⁰¹²³⁴⁵⁶⁷⁸⁹⁺⁻⁼⁽⁾ⁿ")
_SUBSCRIPTS = str.maketrans("0123456789+-=()", "₀₁₂₃₄₅₆₇₈₉₊₋₌₍₎")
_SCRIPT = re.compile(r"([_^])(\{[0-9+\-=()n]+\}|[0-9n])")
_SPACE = re.compile(r"\s+")
# A "%" not escaped is a percent sign in an abstract ("95%"), never a TeX comment.
_BARE_PERCENT = re.compile(r"(?<!\\)%")
# Symbols pylatexenc leaves out or spells differently from what a reader expects in prose.
_SYMBOLS = {"sim": "~", "approx": "≈", "times": "×", "pm": "±", "leq": "≤", "geq": "≥"}
# Hugging Face writes the authors' "$\sim$" as "{approx}": show what the authors wrote.
_BRACED = {"approx": "~"}


@cache
def _converter() -> LatexNodes2Text:
    db = get_default_latex_context_db()
    # A colour is not text: \textcolor[model]{red}{x} is "x", not "redx".
    extra = [MacroTextSpec("textcolor", simplify_repl="%(3)s")]
    extra += [MacroTextSpec(name, simplify_repl=char) for name, char in _SYMBOLS.items()]
    db.add_context_category("newsletter", macros=extra, prepend=True)
    # math_mode="text": "$O(n^2)$" reads as "O(n²)" once scripts are turned into characters.
    return LatexNodes2Text(latex_context=db, math_mode="text", strict_latex_spaces=False)


def _scripts(text: str) -> str:
    """ "n^2" -> "n²", "x_{10}" -> "x₁₀": the scripts Unicode has characters for."""

    def replace(found: re.Match[str]) -> str:
        body = found.group(2).strip("{}")
        return body.translate(_SUPERSCRIPTS if found.group(1) == "^" else _SUBSCRIPTS)

    return _SCRIPT.sub(replace, text)


def _braced_names(text: str) -> str:
    """Hugging Face's "{times}" as "×", for the names that are TeX symbols; others stay."""

    def replace(found: re.Match[str]) -> str:
        name = found.group(1)
        return _BRACED.get(name, _SYMBOLS.get(name, found.group()))

    return _BRACED_NAME.sub(replace, text)


# Pure, and slow where there is markup (pylatexenc reads it token by token): every process
# cleans a paper's text once, however many editions and renderers show it. Without this the
# scale benchmark's workers (tests/perf/bench_scale.py) spent half their CPU here.
@lru_cache(maxsize=20_000)
def tex_to_text(value: str) -> str:
    """`value` with its TeX markup rendered as readable Unicode, whitespace collapsed.

    Text without markup comes back unchanged (but for whitespace); markup pylatexenc cannot
    parse leaves the text as it was rather than losing words.
    """
    if not value or not _TEX_HINT.search(value):
        return _SPACE.sub(" ", value).strip() if value else ""
    text = _braced_names(value)
    if "\\" in text or "$" in text:
        text = _BARE_PERCENT.sub(r"\\%", _scripts_in_math(text))
        try:
            walker = LatexWalker(text, tolerant_parsing=True)
            nodes, _, _ = walker.get_latex_nodes()
            text = _converter().nodelist_to_text(nodes)
        except Exception:  # pylatexenc's parse errors have no common base: keep the words
            text = value
    return _SPACE.sub(" ", text).strip()


_MATH = re.compile(r"\$([^$]+)\$")


def _scripts_in_math(text: str) -> str:
    """Superscripts and subscripts inside $...$ as characters, before pylatexenc drops ^ and _."""
    return _MATH.sub(lambda found: "$" + _scripts(found.group(1)) + "$", text)
