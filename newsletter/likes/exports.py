"""Reference-manager exports (BibTeX, RIS, Zotero CSV) read for the arXiv papers they cite.

Pure: bytes in, the arXiv ids out, with every entry that is not an arXiv paper named by its
title and why. A file that cannot be read as a whole raises ExportError and gives nothing, so
a half-read upload never changes a profile.

Where the formats carry an arXiv id:
- BibTeX: `eprint` (with `archivePrefix` or `eprinttype` arXiv, or none), `arxivid`, `url`,
  `doi` 10.48550/arXiv.ID, DBLP's `journal = {CoRR}` with `volume = {abs/ID}`, and Google
  Scholar's `journal = {arXiv preprint arXiv:ID}` (also `note`, `howpublished`).
- RIS: `UR`, `L1`/`L2`/`LK` links, `DO`, and `N1`, `JO`/`JF`/`T2` ("arXiv:ID [cs]").
- Zotero CSV: the `Url`, `DOI`, `Extra` ("arXiv: ID"), `Archive ID`, `Number` (a preprint's
  "arXiv:ID"), `Publication Title` and `Link Attachments` columns.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from newsletter.paper import arxiv_id, written_arxiv_id

MAX_PAPERS = 200  # as many as a profile may like (newsletter.profile.MAX_LIKES)
_TITLE_CHARS = 160

# An arXiv id inside free text: after "arXiv:", an arxiv.org address, or the arXiv DOI prefix.
_ID = r"(?P<id>\d{4}\.\d{4,5}(?:v\d+)?|[a-z][a-z-]*(?:\.[A-Z]{2})?/\d{7}(?:v\d+)?)"
_ID_IN_TEXT = re.compile(
    r"(?:arxiv\.org/(?:abs|pdf|html)/|10\.48550/arxiv\.|\barxiv\s*:\s*|\barxiv\s+(?=\d))" + _ID,
    re.IGNORECASE,
)
_ARXIV_DOI = re.compile(r"^(?:https?://(?:dx\.)?doi\.org/|doi:\s*)?10\.48550/arxiv\." + _ID, re.I)


class ExportError(ValueError):
    """The file as a whole cannot be read; the message says what and, where known, the line."""


@dataclass(frozen=True)
class Skipped:
    """An entry that names no arXiv paper: its title (or where it is) and why."""

    title: str
    reason: str


@dataclass
class LikedExport:
    """What an export holds: arXiv ids in file order (repeats merged) and the other entries."""

    format: str  # "BibTeX", "RIS" or "CSV"
    ids: list[str] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)
    entries: int = 0

    def add(self, paper: str | None, title: str, reason: str) -> None:
        """Count one entry: its paper, or why it has none."""
        self.entries += 1
        if paper is None:
            self.skipped.append(Skipped(title, reason))
        elif paper not in self.ids:
            self.ids.append(paper)


def read_export(data: bytes, filename: str = "") -> LikedExport:
    """The arXiv papers of a BibTeX, RIS or CSV export (told apart by content, then name).

    Raises ExportError for a file that is none of them, is broken (an unclosed brace, a
    broken quote), holds no entry, or holds more than MAX_PAPERS arXiv papers.
    """
    text = _decode(data)
    kind = _kind(text, filename)
    if kind == "BibTeX":
        export = read_bibtex(text)
    elif kind == "RIS":
        export = read_ris(text)
    else:
        export = read_csv(text)
    if not export.entries:
        raise ExportError(f"the {export.format} file holds no entries")
    if len(export.ids) > MAX_PAPERS:
        raise ExportError(
            f"the file holds {len(export.ids)} arXiv papers; at most {MAX_PAPERS} can be liked: "
            "export a smaller collection"
        )
    return export


def _decode(data: bytes) -> str:
    if b"\x00" in data[:4096]:
        raise ExportError("this is not a text file: export BibTeX, RIS or CSV")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        # Older BibTeX tools write Latin-1; ids are ASCII either way.
        return data.decode("latin-1")


def _kind(text: str, filename: str) -> str:
    head = "\n".join(line for line in text.lstrip().splitlines()[:50] if line.strip())
    if re.search(r"^\s*TY  -", head, re.MULTILINE):
        return "RIS"
    if re.search(r"^\s*@\s*[A-Za-z]+\s*[{(]", text, re.MULTILINE):
        return "BibTeX"
    suffix = filename.lower().rpartition(".")[2] if "." in filename else ""
    if suffix in ("bib", "bibtex"):
        return "BibTeX"
    if suffix == "ris":
        return "RIS"
    first = head.splitlines()[0] if head else ""
    if suffix == "csv" or ("," in first and "title" in first.lower()):
        return "CSV"
    raise ExportError(
        "this is not a BibTeX, RIS or CSV export: in Zotero, use File > Export Library"
    )


def _title(value: str, where: str) -> str:
    title = " ".join(value.replace("{", "").replace("}", "").split())
    if len(title) > _TITLE_CHARS:
        title = title[: _TITLE_CHARS - 1] + "…"
    return title or where


def id_in_text(value: str) -> str | None:
    """The versionless arXiv id a free-text field or address names, or None."""
    direct = written_arxiv_id(value)
    if direct:
        return direct
    for found in _ID_IN_TEXT.finditer(value):
        paper = arxiv_id(found.group("id"))
        if paper:
            return paper
    return None


def _arxiv_doi(value: str) -> str | None:
    found = _ARXIV_DOI.match(value.strip())
    return arxiv_id(found.group("id")) if found else None


NO_ID = "no arXiv id, arXiv address or arXiv DOI in it"


def _no_id(doi: str) -> str:
    """Why an entry is left out: a DOI of elsewhere says where the paper is."""
    doi = " ".join(doi.split())
    return f"not an arXiv paper (DOI {doi[:80]})" if doi else NO_ID


def _first(values: Iterable[str]) -> str | None:
    return next((p for p in (id_in_text(v) for v in values if v) if p), None)


# BibTeX --------------------------------------------------------------------------------------


_BIB_NAME = re.compile(r"[^\s\"#%'(),={}]+")
_BRACES = re.compile(r"[{}]")
_PARENS = re.compile(r"[()]")


class _BibTeX:
    """A small BibTeX reader: entries, @string macros, # concatenation, braces and quotes.

    Text outside entries is a comment, as BibTeX has it; so is `%` to the end of a line
    between fields (biber's rule, which exporters rely on).
    """

    def __init__(self, text: str) -> None:
        self.text = text
        self.i = 0
        self.macros: dict[str, str] = {}

    def line(self, at: int | None = None) -> int:
        return self.text.count("\n", 0, self.i if at is None else at) + 1

    def error(self, what: str, at: int | None = None) -> ExportError:
        return ExportError(f"line {self.line(at)}: {what}")

    def entries(self) -> Iterable[tuple[int, str, dict[str, str]]]:
        """(offset, entry type, fields lower-cased) of each entry, in order."""
        text = self.text
        while True:
            at = text.find("@", self.i)
            if at < 0:
                return
            self.i = at + 1
            line_start = text.rfind("\n", 0, at) + 1
            if text[line_start:at].lstrip().startswith("%"):
                continue  # an "@" in a % comment line between entries
            kind = self._name()
            if not kind:
                continue  # an "@" in the free text between entries
            self._space()
            if self.i >= len(text) or text[self.i] not in "{(":
                continue  # "@comment text", an address: free text between entries
            close = "}" if text[self.i] == "{" else ")"
            self.i += 1
            kind = kind.lower()
            if kind == "comment":
                self._skip_balanced(close, at)
                continue
            if kind == "preamble":
                self._value(at)
                self._space()
                self._expect(close, at)
                continue
            if kind == "string":
                name, value = self._field(at)
                self.macros[name] = value
                self._space()
                self._expect(close, at)
                continue
            yield at, kind, self._body(close, at)

    def _body(self, close: str, at: int) -> dict[str, str]:
        self._space()
        key_end = self._scan_key(close)
        self.i = key_end
        fields: dict[str, str] = {}
        while True:
            self._space()
            if self.i >= len(self.text):
                raise self.error("this entry never ends (a missing closing brace?)", at)
            char = self.text[self.i]
            if char == close:
                self.i += 1
                return fields
            if char == ",":
                self.i += 1
                continue
            name, value = self._field(at)
            fields.setdefault(name, value)

    def _scan_key(self, close: str) -> int:
        # The citation key runs to the first comma (or the end of an entry with no fields).
        j = self.i
        while j < len(self.text) and self.text[j] not in ",\n" + close and self.text[j] != "=":
            j += 1
        if j < len(self.text) and self.text[j] == "=":
            return self.i  # no key: fields start at once
        return j

    def _field(self, at: int) -> tuple[str, str]:
        name = self._name()
        if not name:
            raise self.error("a field name was expected here")
        self._space()
        self._expect("=", at, f"field {name!r} has no '='")
        return name.lower(), self._value(at)

    def _value(self, at: int) -> str:
        parts: list[str] = []
        while True:
            self._space()
            if self.i >= len(self.text):
                raise self.error("this entry never ends (a missing closing brace?)", at)
            char = self.text[self.i]
            if char == "{":
                parts.append(self._braced(at))
            elif char == '"':
                parts.append(self._quoted(at))
            else:
                word = self._name()
                if not word:
                    raise self.error("a value was expected here")
                parts.append(word if word.isdigit() else self.macros.get(word.lower(), word))
            self._space()
            if self.i < len(self.text) and self.text[self.i] == "#":
                self.i += 1
                continue
            return "".join(parts)

    def _braced(self, at: int) -> str:
        start = self.i + 1
        self._skip_balanced("}", at, start=start)
        return self.text[start : self.i - 1]

    def _quoted(self, at: int) -> str:
        # A quote inside braces is text: "Caf{\"e}" is one value.
        depth, j = 0, self.i + 1
        while j < len(self.text):
            char = self.text[j]
            if char == "{":
                depth += 1
            elif char == "}":
                depth -= 1
                if depth < 0:
                    raise self.error("a closing brace inside a quoted value has no opening one")
            elif char == '"' and depth == 0:
                value = self.text[self.i + 1 : j]
                self.i = j + 1
                return value
            j += 1
        raise self.error("a quoted value is never closed", at)

    def _skip_balanced(self, close: str, at: int, start: int | None = None) -> None:
        # Jump from brace to brace (or parenthesis): a long abstract costs one scan.
        marks = _BRACES if close == "}" else _PARENS
        depth = 1
        for found in marks.finditer(self.text, self.i if start is None else start):
            depth += 1 if found.group() in "{(" else -1
            if depth == 0:
                self.i = found.end()
                return
        raise self.error("this entry never ends (a missing closing brace?)", at)

    def _name(self) -> str:
        found = _BIB_NAME.match(self.text, self.i)
        if not found:
            return ""
        self.i = found.end()
        return found.group(0)

    def _space(self) -> None:
        text = self.text
        while self.i < len(text):
            if text[self.i].isspace():
                self.i += 1
            elif text[self.i] == "%":
                end = text.find("\n", self.i)
                self.i = len(text) if end < 0 else end + 1
            else:
                return

    def _expect(self, char: str, at: int, what: str | None = None) -> None:
        if self.i < len(self.text) and self.text[self.i] == char:
            self.i += 1
            return
        raise self.error(what or f"{char!r} was expected here")


def read_bibtex(text: str) -> LikedExport:
    """The arXiv papers of a BibTeX file; ExportError names the line of a broken entry."""
    export = LikedExport("BibTeX")
    reader = _BibTeX(text)
    for at, _kind, fields in reader.entries():
        paper, reason = bibtex_paper(fields)
        title = fields.get("title", "")
        # The line is counted only for an entry without a title: counting is a scan.
        where = "" if title.strip(" {}\t\n") else f"the entry on line {reader.line(at)}"
        export.add(paper, _title(title, where), reason)
    return export


def bibtex_paper(fields: Mapping[str, str]) -> tuple[str | None, str]:
    """The arXiv id of one BibTeX entry's fields, or None and why it has none."""
    archive = (fields.get("archiveprefix") or fields.get("eprinttype") or "").strip().lower()
    eprint = fields.get("eprint", "").strip()
    if eprint and archive in ("", "arxiv"):
        paper = written_arxiv_id(eprint)
        primary = fields.get("primaryclass", "").strip()
        if paper is None and primary and eprint.isdigit():  # old style: 9901001, hep-th
            paper = arxiv_id(f"{primary}/{eprint}")
        if paper:
            return paper, ""
        if archive == "arxiv":
            return None, "its eprint is not an arXiv id"
    found = written_arxiv_id(fields.get("arxivid", "")) or _arxiv_doi(fields.get("doi", ""))
    if found:
        return found, ""
    journal = fields.get("journal", "")
    volume = fields.get("volume", "").strip()
    if journal.strip().lower() == "corr" and volume.lower().startswith("abs/"):
        found = arxiv_id(volume[4:])  # DBLP: journal = {CoRR}, volume = {abs/1706.03762}
    found = found or _first(
        fields.get(name, "") for name in ("url", "journal", "note", "howpublished", "annote")
    )
    if found:
        return found, ""
    if eprint and archive:
        return None, f"its eprint is on {fields.get('archiveprefix') or archive}, not arXiv"
    return None, _no_id(fields.get("doi", ""))


# RIS -----------------------------------------------------------------------------------------

_RIS_TAG = re.compile(r"^([A-Z][A-Z0-9])  -(?: (.*))?$")
_RIS_ID_TAGS = ("UR", "L1", "L2", "L3", "LK", "DO", "N1", "JO", "JF", "T2", "M1", "AN")
_RIS_TITLE_TAGS = ("TI", "T1", "CT", "BT", "ST")


def read_ris(text: str) -> LikedExport:
    """The arXiv papers of a RIS file; a value may go on over several lines."""
    export = LikedExport("RIS")
    record: dict[str, list[list[str]]] | None = None  # each value as its lines, joined once
    last = ""
    started = 0
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.rstrip()
        tagged = _RIS_TAG.match(line.lstrip("\ufeff"))
        if tagged is None:
            if not line.strip():
                continue
            if record is None or not last:
                raise ExportError(f"line {number}: text outside a record (a record opens with TY)")
            record[last][-1].append(line.strip())  # a value continued on the next line
            continue
        tag, value = tagged.group(1), (tagged.group(2) or "").strip()
        if tag == "TY":
            if record is not None:
                raise ExportError(
                    f"line {number}: a record opens before the one on line {started} closed with ER"
                )
            record, last, started = {}, "", number
            continue
        if record is None:
            raise ExportError(f"line {number}: {tag} outside a record (a record opens with TY)")
        if tag == "ER":
            _ris_record(export, record, started)
            record, last = None, ""
            continue
        record.setdefault(tag, []).append([value])
        last = tag
    if record is not None:
        raise ExportError(f"line {started}: this record never ends (ER is missing)")
    return export


def _ris_record(export: LikedExport, lines: Mapping[str, list[list[str]]], line: int) -> None:
    record = {tag: [" ".join(parts) for parts in values] for tag, values in lines.items()}
    title = next((record[t][0] for t in _RIS_TITLE_TAGS if record.get(t)), "")
    paper = _arxiv_doi(record.get("DO", [""])[0]) or _first(
        value for tag in _RIS_ID_TAGS for value in record.get(tag, ())
    )
    export.add(
        paper, _title(title, f"the record on line {line}"), _no_id(record.get("DO", [""])[0])
    )


# CSV (Zotero's export; any CSV with a title and one of these columns) -----------------------

_CSV_ID_COLUMNS = (
    "url",
    "doi",
    "extra",
    "archive id",
    "number",
    "report number",
    "publication title",
    "link attachments",
    "notes",
)


def read_csv(text: str) -> LikedExport:
    """The arXiv papers of a CSV export with a Title column and a Url, DOI or Extra column."""
    export = LikedExport("CSV")
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    try:
        header = next(reader, None)
        if not header:
            raise ExportError("the CSV file is empty")
        names = [name.strip().lower() for name in header]
        if "title" not in names or not {"url", "doi", "extra"} & set(names):
            raise ExportError(
                "line 1: a CSV export needs a Title column and a Url, DOI or Extra column "
                "(Zotero's CSV export has them all)"
            )
        columns = [names.index(c) for c in _CSV_ID_COLUMNS if c in names]
        title_at = names.index("title")
        doi_at = names.index("doi") if "doi" in names else None
        while True:
            line = reader.line_num + 1
            row = next(reader, None)
            if row is None:
                break
            if not any(value.strip() for value in row):
                continue
            where = f"the row on line {line}"
            if len(row) != len(names):
                export.add(None, where, f"{len(row)} values, the header has {len(names)}")
                continue
            paper = _arxiv_doi(row[doi_at]) if doi_at is not None else None
            paper = paper or _first(row[i] for i in columns)
            doi = row[doi_at] if doi_at is not None else ""
            export.add(paper, _title(row[title_at], where), _no_id(doi))
    except csv.Error as exc:
        raise ExportError(f"line {reader.line_num}: not valid CSV ({exc})") from None
    return export
