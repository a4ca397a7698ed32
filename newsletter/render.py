"""Email rendering: Jinja2 templates, CSS inlined by premailer once per edition, then personalized.

The templates are package data in `newsletter/templates/email/` (newsletter.resources), so a
checkout, an editable install and a wheel all find them beside the code.

Inlining CSS costs ~20 ms per document, far too much per recipient at 100,000 subscribers. So
the layout is rendered and inlined once per edition with placeholders where per-subscriber values
go, and a digest is put together by substituting strings.

Paper cards get the same treatment one level down. Inlining each paper's card (~11 ms) still cost
every worker process ~11 s of CPU on a 1,000-paper day before its first digest, and every Celery
worker pays it again. But a card's markup, and so what premailer does to it, depends only on its
*shape*: whether it has authors, and which of its meta parts are links. Titles, authors and URLs
are text and attribute values, which premailer passes through untouched. So each card template is
inlined once per shape with markers for the paper's strings, and a paper's card is that filled with
its escaped values: a few dozen premailer passes per edition at most, whatever the paper count.
"""

from __future__ import annotations

import logging
import re
import secrets
from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, timedelta
from email.utils import parseaddr
from functools import cache, cached_property
from pathlib import Path
from typing import Any
from urllib.parse import quote

import jinja2
import msgspec
from markupsafe import Markup, escape
from premailer import Premailer

from newsletter.analysis import Analyzer, Token, phrase_spans, split_words, words_found
from newsletter.config import Settings
from newsletter.paper import Paper
from newsletter.resources import TEMPLATES_DIR
from newsletter.text import tex_to_text

DEFAULT_SITE_NAME = "Paper Digest"
MAX_AUTHORS = 3
SUMMARY_CHARS = 320
# Gmail clips a message whose HTML is over about 102 KB, hiding the rest (and the unsubscribe
# link) behind "View entire message": a digest's HTML stays below this, cut to "see all N on
# the web" when its cards would not fit.
MAX_HTML_BYTES = 90_000
# Invisible filler after the preheader so mail clients do not pull body text into the preview.
PREHEADER_PADDING = Markup(("&#847;&zwnj;&nbsp;" * 10 + "\n") * 6)
_BODY = re.compile(r"<body[^>]*>(.*)</body>", re.DOTALL)
# What libxml2 percent-encodes when it writes an href: spaces, controls and non-ASCII.
_URL_UNSAFE = re.compile(r"[^\x21-\x7e]+")


@dataclass(frozen=True)
class Email:
    """A rendered email: what build_message() turns into a MIME message."""

    subject: str
    text: str
    html: str


class DigestItem(msgspec.Struct, frozen=True):
    """One matched paper of a digest, with why it matched (keywords, highlighted snippet).

    A Struct, made in C: a digest makes one per card (a frozen dataclass's ~8 setattrs each
    were a tenth of rendering). Benchmark: tests/perf/bench_delivery.py, "rendering".
    """

    paper: Paper
    matched: tuple[str, ...] = ()
    snippet_html: str = ""
    snippet_text: str = ""
    score: float | None = None
    # entry -> the fields it matched in ("title", "abstract", "keywords"); empty for old rows.
    where: Mapping[str, Sequence[str]] = {}
    # The entries whose words the ranker found only apart; None for rows planned before it
    # said so, whose labels are then worked out from the paper's text.
    apart: Sequence[str] | None = None
    # (id, title) of the liked paper this one is like, when the reader's ratings chose it.
    liked: tuple[str, str] | None = None


@dataclass(frozen=True)
class MetaPart:
    """One entry of a paper's meta line: a statistic (no url) or a link."""

    text: str
    url: str | None = None


@dataclass(frozen=True)
class PaperView:
    """What the templates show of a paper, computed once per paper and edition."""

    title: str
    url: str
    authors: str
    upvotes: int
    summary: str
    meta: tuple[MetaPart, ...] = field(default=())


def site_name(settings: Settings) -> str:
    """The newsletter's name: the display name of the From address."""
    return parseaddr(settings.from_address)[0] or DEFAULT_SITE_NAME


def format_authors(authors: Sequence[str]) -> str:
    """The first three authors, then "et al."."""
    shown = ", ".join(authors[:MAX_AUTHORS])
    return f"{shown} et al." if len(authors) > MAX_AUTHORS else shown


def compact_number(value: int) -> str:
    """1234 -> "1.2k", so star counts stay short."""
    if value < 1000:
        return str(value)
    if value < 10_000:
        return f"{value / 1000:.1f}k".replace(".0k", "k")
    return f"{value // 1000}k"


def _http_url(value: str | None) -> str | None:
    # Source data is untrusted: only absolute http(s) links reach a template.
    if value and value.startswith(("https://", "http://")):
        return value
    return None


def _code_url(repo: str | None) -> str | None:
    if repo and re.fullmatch(r"[\w.-]+/[\w.-]+", repo):
        return f"https://github.com/{repo}"
    return _http_url(repo)


def _shorten(text: str, limit: int) -> str:
    text = " ".join(text.split())
    if len(text) <= limit:
        return text
    return text[:limit].rsplit(" ", 1)[0].rstrip(",;:.") + "…"


def paper_view(paper: Paper) -> PaperView:
    """The template view of a paper: its link, authors, fallback summary and meta line."""
    from_hf = "hf_daily" in paper.source
    meta: list[MetaPart] = []
    if paper.upvotes > 0:
        meta.append(MetaPart(f"▲ {paper.upvotes} upvote{'s' if paper.upvotes != 1 else ''}"))
    if paper.github_stars:
        stars = paper.github_stars
        meta.append(MetaPart(f"★ {compact_number(stars)} star{'s' if stars != 1 else ''}"))
    meta.append(MetaPart("PDF", paper.pdf_url))
    code = _code_url(paper.github_repo)
    if code:
        meta.append(MetaPart("Code", code))
    project = _http_url(paper.project_page)
    if project:
        meta.append(MetaPart("Project page", project))
    if from_hf:
        meta.append(MetaPart("arXiv", paper.arxiv_url))
    # Papers stored before their TeX was cleaned at collection get it cleaned here.
    return PaperView(
        title=tex_to_text(paper.title),
        url=paper.hf_url if from_hf else paper.arxiv_url,
        authors=format_authors(paper.authors),
        upvotes=paper.upvotes,
        summary=_shorten(tex_to_text(paper.ai_summary or paper.abstract), SUMMARY_CHARS),
        meta=tuple(meta),
    )


def make_environment(templates_dir: Path | None = None) -> jinja2.Environment:
    """The Jinja environment of the email templates: autoescape for .html, none for .txt."""
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(templates_dir or TEMPLATES_DIR),
        autoescape=jinja2.select_autoescape(["html"], default_for_string=False),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=False,
    )
    env.filters["wrap"] = wrap
    return env


def inline_css(html: str) -> str:
    """Move the <style> rules into style attributes; only media queries stay in <style>."""
    inlined = Premailer(
        html,
        allow_network=False,
        disable_validation=True,
        cssutils_logging_level=logging.CRITICAL,
        remove_classes=False,  # the dark-mode media queries still select by class
        strip_important=False,
        keep_style_tags=False,
    ).transform(pretty_print=False)
    # premailer drops a lowercase doctype; without one, clients render in quirks mode.
    if not inlined.lstrip()[:9].upper().startswith("<!DOCTYPE"):
        inlined = "<!DOCTYPE html>\n" + inlined
    return str(inlined)


def _href(url: str) -> str:
    """A link as premailer (libxml2) writes it in an href, before HTML escaping.

    Filled into an already inlined card, a URL would otherwise keep the spaces and non-ASCII
    that inlining it per paper used to percent-encode (as UTF-8); this keeps the links the same.
    """
    return _URL_UNSAFE.sub(lambda found: quote(found.group(), safe=""), url)


class _Placeholders:
    """Unique markers for per-subscriber values, and their fast substitution.

    A random nonce makes the markers unguessable, so text from a paper (a title, say) can never
    be mistaken for one; values are put in once and never scanned again. A template is split at
    its markers the first time it is filled; later fills are one join of its text and the
    values, in C (str.format_map parsed the whole template again at every fill).
    """

    # Benchmark: tests/perf/bench_delivery.py, "rendering" (a digest is some 50 fills).

    def __init__(self) -> None:
        self.nonce = secrets.token_hex(6)
        self._pattern = re.compile(rf"@@{self.nonce}:([A-Za-z_]\w*)@@")
        self._forms: dict[str, tuple[list[str], tuple[str, ...]]] = {}

    def __call__(self, name: str) -> Markup:
        if not name.isidentifier():
            raise ValueError(f"a placeholder is named like a variable, not {name!r}")
        return Markup(f"@@{self.nonce}:{name}@@")

    def fill(self, template: str, values: Mapping[str, str]) -> str:
        """The template with every marker replaced by its value."""
        form = self._forms.get(template)
        if form is None:
            # Cached templates are the same str objects each time: the lookup is by identity.
            pieces = self._pattern.split(template)  # text, name, text, ..., name, text
            form = self._forms[template] = ([str(p) for p in pieces], tuple(pieces[1::2]))
        pieces, names = form
        if not names:
            return str(template)
        pieces = pieces.copy()
        pieces[1::2] = map(values.__getitem__, names)
        return "".join(pieces)


LAYOUT_SLOTS = (
    "preheader",
    "headline",
    "cards",
    "trending_section",
    "email",
    "keywords_text",
    "manage_url",
    "unsubscribe_url",
    "view_link",
    "more",
)


class EditionRenderer:
    """Renders every subscriber's digest of one edition (one day) cheaply.

    Each template is rendered (and, for HTML, inlined) once per edition, or once per card shape,
    with placeholders for what differs between papers and subscribers; a paper's card is filled
    once and cached, and a digest is then a few string substitutions. Keep one instance per
    edition for a delivery run. Not thread-safe.
    """

    def __init__(
        self,
        settings: Settings,
        edition: date,
        *,
        templates_dir: Path | None = None,
        weekly: bool = False,
    ) -> None:
        self.settings = settings
        self.edition = edition
        # A weekly edition is keyed by its week's Monday: its words name the week, not that day.
        self.weekly = weekly
        self.env = make_environment(templates_dir)
        self._slot = _Placeholders()
        card_slots = ("number", "labels", "matched", "snippet", "rate")
        self._card_slots = {n: self._slot(n) for n in card_slots}
        # (template, paper id / card shape / "", empty) -> rendered (and inlined) fragment
        self._fragments: dict[tuple[str, Hashable, bool], str] = {}
        self._views: dict[str, PaperView] = {}
        self._url_parts: dict[str, tuple[str, ...]] = {}  # fragment -> its text around the URL
        self._wraps: dict[str, str] = {}
        self._subject = self.env.get_template("email/digest/subject.txt")
        self._labels: dict[tuple[str, str], str] = {}  # (paper id, entry) -> label shown
        # What recurs across subscribers, made once (bounded, see _kept): a label with its
        # fields, a score, a marked snippet, a "Matched:" line, a trending section, a subject.
        # Benchmark: tests/perf/bench_delivery.py, "rendering".
        self._label_html: dict[tuple[str, str], str] = {}
        self._score_html: dict[float, str] = {}
        self._snippets: dict[str, str] = {}
        self._matched_lines: dict[
            tuple[float | None, tuple[tuple[str, str], ...], tuple[str, str] | None], str
        ] = {}
        self._trendings: dict[tuple[str, tuple[str, ...]], str] = {}
        self._subjects: dict[tuple[str, int], str] = {}
        # Corpus-free: the rules that make two profiles equal (case, stems, acronyms).
        self._analyzer = Analyzer()
        self._postings: dict[str, list[dict[str, list[Token]]]] = {}

    @cached_property
    def site_name(self) -> str:
        """The newsletter's name, read from the From address once per edition."""
        return site_name(self.settings)

    @cached_property
    def _common(self) -> dict[str, Any]:
        day = self.edition
        if self.weekly:
            long, short = f"Week of {day.day} {day:%B %Y}", f"week of {day.day} {day:%B}"
            note = "Nothing new matched your keywords this week. Your next digest comes next week."
        else:
            long, short, note = f"{day:%A}, {day.day} {day:%B %Y}", f"{day.day} {day:%B}", ""
        return {
            "site_name": self.site_name,
            "base_url": self.settings.base_url,
            "edition_long": long,
            "edition_short": short,
            "preheader_padding": PREHEADER_PADDING,
            "empty_note": note or empty_note(day),
        }

    def view(self, paper: Paper) -> PaperView:
        """The cached template view of a paper."""
        if paper.id not in self._views:
            self._views[paper.id] = paper_view(paper)
        return self._views[paper.id]

    # Fragments, each rendered once ----------------------------------------------------------
    def _fragment(
        self, name: str, context: Mapping[str, Any], key: Hashable = "", *, empty: bool = False
    ) -> str:
        """Template `name` rendered once per key; .html ones get their CSS inlined."""
        cache_key = (name, key, empty)
        if cache_key not in self._fragments:
            template = self.env.get_template(name)
            if name.endswith(".html"):
                html = template.render(**self._common, **context, empty=empty)
                self._fragments[cache_key] = html_ascii(self._inline(html))
            else:
                text = template.render(**self._common, **context, empty=empty)
                self._fragments[cache_key] = text.strip("\n")
        return self._fragments[cache_key]

    def _inline(self, html: str) -> str:
        if html.lstrip().startswith("<!DOCTYPE"):
            return inline_css(html)
        # A fragment: inline it inside a page that carries the stylesheet, keep the body.
        styles = self.env.get_template("email/styles.css").render()
        page = f"<html><head><style>{styles}</style></head><body>{html}</body></html>"
        found = _BODY.search(inline_css(page))
        assert found is not None, "premailer always writes a body"
        return found.group(1).strip()

    def _layout(self, kind: str, empty: bool) -> str:
        found = self._fragments.get((f"email/digest/body.{kind}", "", empty))
        if found is not None:
            return found
        slots = {name: self._slot(name) for name in LAYOUT_SLOTS}
        return self._fragment(f"email/digest/body.{kind}", slots, empty=empty)

    def _card(self, kind: str, paper: Paper) -> str:
        return self._paper_card(f"email/digest/card.{kind}", paper, self._card_slots)

    def _trending_card(self, kind: str, paper: Paper) -> str:
        return self._paper_card(f"email/digest/trending_card.{kind}", paper, {})

    def _paper_card(self, name: str, paper: Paper, slots: Mapping[str, str]) -> str:
        """Card template `name` for one paper, once per paper; `slots` stay for each digest."""
        found = self._fragments.get((name, paper.id, False))
        if found is not None:
            return found
        view = self.view(paper)
        if name.endswith(".txt"):  # no inlining: rendering per paper costs next to nothing
            return self._fragment(name, {"view": view, **slots}, paper.id)
        # Rendered and inlined once per shape, then filled with this paper's values.
        marked, values = self._marked_view(view)
        shape = (bool(marked.authors), tuple(part.url is not None for part in marked.meta))
        template = self._fragment(name, {"view": marked, **slots}, shape)
        # The subscriber slots are put back as markers, for each digest to fill.
        found = self._fragments[name, paper.id, False] = self._slot.fill(
            template, {**values, **slots}
        )
        return found

    def _marked_view(self, view: PaperView) -> tuple[PaperView, dict[str, str]]:
        """The view with a marker for each of its strings, and the HTML to fill each marker with.

        The markers stand for the strings only: an HTML card that showed the upvotes or the
        summary would need them here too (a test compares the cards with inlining each paper's).
        """
        values = {"title": view.title, "url": view.url, "authors": view.authors}
        meta: list[MetaPart] = []
        for i, part in enumerate(view.meta):
            values[f"meta{i}_text"] = part.text
            if part.url:
                values[f"meta{i}_url"] = part.url
            url = self._slot(f"meta{i}_url") if part.url else None
            meta.append(MetaPart(self._slot(f"meta{i}_text"), url))
        marked = PaperView(
            title=self._slot("title"),
            url=self._slot("url"),
            authors=self._slot("authors") if view.authors else "",
            upvotes=0,
            summary="",
            meta=tuple(meta),
        )
        html: dict[str, str] = {}
        for name, value in values.items():
            # What premailer's parser made of a value: \n line breaks, U+FFFD for NUL.
            value = value.replace("\r\n", "\n").replace("\r", "\n").replace("\0", "\ufffd")
            html[name] = html_ascii(escape(_href(value) if name.endswith("url") else value))
        return marked, html

    def _trending_section(self, kind: str) -> str:
        return self._fragment(f"email/digest/trending.{kind}", {"cards": self._slot("cards")})

    @cached_property
    def _label_tags(self) -> tuple[str, str, str, str, str]:
        """The inlined labels wrapper, the score, one label, its fields and the <mark> tag."""
        names = ("labels", "score", "label", "where", "mark")
        html = self._fragment("email/digest/labels.html", {n: self._slot(n) for n in names})
        wrapper, score, label, where, mark = (
            line.strip() for line in html.splitlines() if line.strip()
        )
        return wrapper, score, label, where, mark[: mark.index(">") + 1]

    def explanation(self, item: DigestItem) -> list[tuple[str, str]]:
        """(label, where) for each matched entry of an item, as the card shows them.

        An entry whose words matched only apart is labelled with its words ("diffusion +
        models"), not as if the phrase had been found; `where` is "title, abstract" or "".
        """
        shown = []
        for label in item.matched:
            if item.apart is not None:  # the ranker said which: no text to read again
                words = loose_words(label) if label in item.apart else ()
                found = " + ".join(words) if words else label
            else:  # a row planned before: the paper's terms, read once per edition
                key = (item.paper.id, label)
                known = self._labels.get(key)
                if known is None:
                    words = words_apart(label, lambda: self._fields(item.paper), self._analyzer)
                    known = self._labels[key] = " + ".join(words) if words else label
                found = known
            shown.append((found, ", ".join(item.where.get(label, ()))))
        return shown

    def _fields(self, paper: Paper) -> list[dict[str, list[Token]]]:
        """The paper's title, abstract and keywords as terms, read once per edition."""
        found = self._postings.get(paper.id)
        if found is None:
            texts = (paper.title, paper.abstract, " ; ".join(paper.keywords))
            found = self._postings[paper.id] = [
                self._analyzer.postings(split_words(tex_to_text(text))) for text in texts
            ]
        return found

    # Per subscriber --------------------------------------------------------------------------
    def _rate_links(self, kind: str, rate_url: str | None) -> str:
        """A card's "More like this · Less like this" links, to the paper's rating page."""
        if not rate_url:
            return ""
        if kind == "txt":
            return f"\n   More like this: {rate_url}/more\n   Less like this: {rate_url}/less"
        return self._url_fragment("email/digest/rate.html", "rate_url", rate_url)

    def _url_fragment(self, name: str, variable: str, url: str) -> str:
        """HTML fragment `name` whose one `variable` is a URL, inlined once and filled here."""
        parts = self._url_parts.get(name)
        if parts is None:
            # Split at the URL's markers once: a card's rating links are filled 10 times a
            # digest, and the generic fill cost as much as signing their tokens.
            html = self._fragment(name, {variable: self._slot("url")})
            parts = self._url_parts[name] = tuple(html.split(self._slot("url")))
        return _escaped_url(url).join(parts)

    def _card_html(
        self, item: DigestItem, shown: Sequence[tuple[str, str]], rate_url: str | None = None
    ) -> str:
        """One card's HTML; `shown` is the item's explanation()."""
        wrapper, score_tag, label_tag, where_tag, mark = self._label_tags
        labels = ""
        if item.matched or item.score is not None or item.liked:
            score = ""
            if item.score is not None:
                score = self._score_html.get(item.score, "")
                if not score:
                    score = self._slot.fill(score_tag, {"score": _points(item.score)}) + "\n"
                    _kept(self._score_html)[item.score] = score
            # One label a line keeps lines short enough to send the HTML unencoded (7bit).
            inner = []
            for text, where in shown:
                label = self._label_html.get((text, where))
                if label is None:
                    fields = escape(f" in {where}")
                    label = self._slot.fill(
                        label_tag,
                        {
                            "label": html_ascii(escape(text)),
                            "where": self._slot.fill(where_tag, {"where": fields}) if where else "",
                        },
                    )
                    _kept(self._label_html)[text, where] = label
                inner.append(label)
            if item.liked:  # what the reader liked chose it: say which paper
                liked = f"like <em>{html_ascii(escape(item.liked[1]))}</em>"
                inner.append(self._slot.fill(label_tag, {"label": liked, "where": ""}))
            labels = self._slot.fill(wrapper, {"score": score, "labels": "\n".join(inner)})
        snippet = self._snippets.get(item.snippet_html)
        if snippet is None:
            # The snippet is escaped HTML whose only tags are <mark>: give them their style.
            marked = item.snippet_html.replace("<mark>", mark)
            snippet = html_ascii(marked or escape(self.view(item.paper).summary))
            if item.snippet_html:  # an empty one stands for the paper's own summary
                _kept(self._snippets)[item.snippet_html] = snippet
        return self._slot.fill(
            self._card("html", item.paper),
            {"labels": labels, "snippet": snippet, "rate": self._rate_links("html", rate_url)},
        )

    def _wrapped(self, snippet: str) -> str:
        # Subscribers with the same keywords share snippets: wrap each one once.
        found = self._wraps.get(snippet)
        if found is None:
            if len(self._wraps) > 100_000:
                self._wraps.clear()
            found = self._wraps[snippet] = wrap(snippet, 69, "   ")
        return found

    def _card_text(
        self,
        number: int,
        item: DigestItem,
        shown: Sequence[tuple[str, str]],
        rate_url: str | None = None,
    ) -> str:
        """One card's text; `shown` is the item's explanation()."""
        key = (item.score, tuple(shown) if item.matched else (), item.liked)
        matched = self._matched_lines.get(key)
        if matched is None:
            parts = []
            if item.score is not None:
                parts.append(_points(item.score))
            if item.matched:
                entries = [f"{text} (in {where})" if where else text for text, where in shown]
                parts.append("Matched: " + ", ".join(entries))
            if item.liked:
                parts.append(f"like *{item.liked[1]}*")
            matched = "   " + wrap(" · ".join(parts), 69, "   ") + "\n" if parts else ""
            _kept(self._matched_lines)[key] = matched
        snippet = self._wrapped(item.snippet_text or self.view(item.paper).summary)
        values = {"number": str(number), "matched": matched, "snippet": snippet}
        card = self._slot.fill(self._card("txt", item.paper), values)
        return card + self._rate_links("txt", rate_url) if rate_url else card

    def _trending(self, kind: str, papers: Sequence[Paper]) -> str:
        if not papers:
            return ""
        key = (kind, tuple([p.id for p in papers]))
        found = self._trendings.get(key)
        if found is None:
            separator = "" if kind == "html" else "\n\n"
            cards = "".join(separator + self._trending_card(kind, p) for p in papers)
            section = self._slot.fill(self._trending_section(kind), {"cards": cards})
            found = _kept(self._trendings)[key] = separator + "\n" + section
        return found

    def _view_link(self, kind: str, view_url: str | None) -> str:
        if not view_url:
            return ""
        if kind == "txt":
            return f"View in browser: {view_url}"
        return self._url_fragment("email/digest/view_link.html", "view_url", view_url)

    def _more(self, kind: str, view_url: str | None, count: int) -> str:
        """The "see all N on the web" line after the cards of a cut digest."""
        if not view_url:
            return ""
        if kind == "txt":
            return f"\n\nSee all {count} on the web: {view_url}"
        slots = {"view_url": self._slot("url"), "count": self._slot("count")}
        html = self._fragment("email/digest/more.html", slots)
        return self._slot.fill(html, {"url": html_ascii(escape(view_url)), "count": str(count)})

    def render_digest(
        self,
        *,
        email: str,
        keywords_text: str,
        items: Sequence[DigestItem],
        trending: Sequence[Paper],
        unsubscribe_url: str,
        manage_url: str,
        view_url: str | None = None,
        max_html_bytes: int | None = MAX_HTML_BYTES,
        rate_url: Callable[[str], str] | None = None,
    ) -> Email:
        """One subscriber's digest: matched papers, then trending ones not already listed.

        With `view_url` the digest links to its web page at the top and, when its HTML would
        be over `max_html_bytes`, keeps only the cards that fit, then "see all N on the web".
        With `rate_url` (paper id -> its rating page) each card links "More / Less like this".
        """
        rates = [rate_url(item.paper.id) if rate_url else None for item in items]
        listed = {item.paper.id for item in items}
        trending = [p for p in trending if p.id not in listed][: self.settings.trending_size]
        headline = _headline(len(items), self.edition, weekly=self.weekly)
        keywords = keywords_line(keywords_text)
        common = {
            "headline": headline,
            "email": email,
            "manage_url": manage_url,
            "unsubscribe_url": unsubscribe_url,
        }
        html_values = {key: html_ascii(escape(value)) for key, value in common.items()}
        layout = self._layout("html", empty=not items)
        values = {
            **html_values,
            "preheader": html_ascii(escape(_preheader(self, items, trending))),
            "keywords_text": html_ascii(escape(keywords)),
            "trending_section": self._trending("html", trending),
            "view_link": self._view_link("html", view_url),
        }
        shown = [self.explanation(item) for item in items]
        cards = [
            self._card_html(item, why, rate)
            for item, why, rate in zip(items, shown, rates, strict=True)
        ]
        html = self._slot.fill(layout, {**values, "cards": "".join(cards), "more": ""})
        fit = len(cards)
        if view_url and max_html_bytes is not None and len(html) > max_html_bytes:
            more = self._more("html", view_url, len(items))
            budget = max_html_bytes - (len(html) - sum(map(len, cards))) - len(more)
            fit = _fitting(cards, budget)
            html = self._slot.fill(layout, {**values, "cards": "".join(cards[:fit]), "more": more})
        text = self._slot.fill(
            self._layout("txt", empty=not items),
            {
                **common,
                "preheader": "",
                "keywords_text": wrap(keywords, 72, ""),
                "cards": "".join(
                    "\n\n" + self._card_text(n, item, why, rate)
                    for n, (item, why, rate) in enumerate(
                        zip(items[:fit], shown, rates, strict=False), 1
                    )
                ),
                "more": self._more("txt", view_url, len(items)) if fit < len(items) else "",
                "trending_section": self._trending("txt", trending),
                "view_link": self._view_link("txt", view_url),
            },
        )
        top = (self.view(items[0].paper).title, len(items)) if items else ("", 0)
        subject = self._subjects.get(top)
        if subject is None:
            rendered = self._subject.render(**self._common, **subject_parts(self, items))
            subject = _kept(self._subjects)[top] = _one_line(rendered)
        while "\n\n\n" in text:  # at most one blank line anywhere (faster than a regex)
            text = text.replace("\n\n\n", "\n\n")
        text = text.strip() + "\n"
        return Email(subject=subject, text=text, html=html)


_KEPT = 100_000  # entries a renderer cache holds before it starts again


def _kept(cache: dict[Any, str]) -> dict[Any, str]:
    """The cache, emptied first when full: one edition's recurring pieces stay far below."""
    if len(cache) >= _KEPT:
        cache.clear()
    return cache


def _fitting(cards: Sequence[str], budget: int) -> int:
    """How many of the first cards fit in `budget` characters (at least one)."""
    used = 0
    for count, card in enumerate(cards):
        used += len(card)
        if used > budget:
            return max(count, 1)
    return len(cards)


SUBJECT_CHARS = 78  # RFC 5322's line length: inbox lists show about this much


def subject_parts(renderer: EditionRenderer, items: Sequence[DigestItem]) -> dict[str, str]:
    """The subject's pieces: brand and date first (always whole), then the top title cut to fit.

    "Paper Digest · Tue 1 Dec · <title> + 7 more": inbox lists cut long subjects, so what
    identifies the mail comes first and only the title is shortened.
    """
    day = renderer.edition
    # The renderer's values hold the name, parsed from the From address once per edition
    # (parsing it per message was ~50 µs of each one's sender CPU in bench_delivery.py).
    when = f"week of {day.day} {day:%b}" if renderer.weekly else f"{day:%a} {day.day} {day:%b}"
    head = f"{renderer.site_name} · {when}"
    more = f" + {len(items) - 1} more" if len(items) > 1 else ""
    if not items:
        weekend = day.weekday() >= 5 and not renderer.weekly
        why = "No new arXiv papers on weekends" if weekend else "Nothing new on your keywords"
        return {"subject_head": head, "top_title": "", "more": "", "empty_subject": why}
    room = SUBJECT_CHARS - len(head) - len(" · ") - len(more)
    title = renderer.view(items[0].paper).title
    top = _shorten(title, max(room, 10))
    return {"subject_head": head, "top_title": top, "more": more, "empty_subject": ""}


def _points(score: float) -> str:
    """A score as the pages show it: "42/100"."""
    return f"{score:.0f}/100"


_LOOSE_ENTRY = re.compile(r"[^\W_][\w'-]*(?:\s+[\w'-]+)+")


def loose_words(label: str) -> tuple[str, ...]:
    """The words of an entry label that is an unquoted multi-word entry; else ()."""
    text = label.split("^", 1)[0].strip()
    return tuple(text.split()) if _LOOSE_ENTRY.fullmatch(text) else ()


def words_apart(
    label: str,
    fields: Sequence[Mapping[str, list[Token]]] | Callable[[], Sequence[Mapping[str, list[Token]]]],
    analyzer: Analyzer,
) -> tuple[str, ...]:
    """The words of an unquoted multi-word entry that the paper has, if they are nowhere
    adjacent in it.

    The ranking lets "diffusion models" match a paper that says "diffusion" in one sentence
    and "models" in another; calling that a "diffusion models" match would claim a phrase the
    paper does not have. Empty when the phrase is there, or the entry is not such an entry.
    """
    text = label.split("^", 1)[0].strip()
    if not loose_words(label):
        return ()
    phrase = analyzer.query_terms(text)
    if len(phrase) < 2:
        return ()
    # The paper's terms are read only for such an entry: analysing every paper of an edition
    # for the one-word entries too doubled the workers' CPU in bench_scale.py.
    read = fields() if callable(fields) else fields
    if any(phrase_spans(terms, phrase) for terms in read):
        return ()
    # A paper may have only some of the words (the ranking matches it in part): those it has.
    found = words_found(text, read, analyzer)
    return tuple(text.split()) if found is None else found


def wrap(text: str, width: int, indent: str) -> str:
    """Greedy word wrap; continuation lines start with `indent`. (textwrap is 10x slower.)"""
    text = " ".join(text.split())
    if len(text) <= width:
        return text
    return ("\n" + indent).join(_wrapper(width).findall(text))


@cache
def _wrapper(width: int) -> re.Pattern[str]:
    # The longest run of up to `width` characters that ends before a space (or the end);
    # a word longer than a line stays whole on its own line.
    return re.compile(rf"\S.{{0,{width - 1}}}(?= |$)|\S+")


def _headline(count: int, edition: date | None = None, *, weekly: bool = False) -> str:
    if count == 0:
        if weekly:
            return "No new paper matched your keywords this week"
        if edition is not None and edition.weekday() >= 5:
            return "No new papers today: arXiv announces none on weekends"
        return "No new paper matched your keywords today"
    return f"{count} paper{'s' if count != 1 else ''} matched your keywords"


def empty_note(edition: date) -> str:
    """Why a digest is empty, and when the next one can bring papers (the empty-day note).

    arXiv announces new papers Monday to Friday (its announcements fall in the first hour of
    those days in UTC) and not on its holidays; Hugging Face lists few papers on those days.
    """
    days = 7 - edition.weekday() if edition.weekday() >= 4 else 1  # Fri, Sat, Sun -> Monday
    upcoming = edition + timedelta(days=days)
    when = "tomorrow" if days == 1 else f"on {upcoming:%A} {upcoming.day} {upcoming:%B}"
    if edition.weekday() >= 5:
        return (
            "arXiv announces no new papers on weekends, so nothing new came today. "
            f"The next announcement brings papers for your digest {when}."
        )
    return (
        "Nothing new matched your keywords today (on an arXiv holiday no new papers come at "
        f"all). Your next digest comes {when}, at your usual time."
    )


def _preheader(
    renderer: EditionRenderer, items: Sequence[DigestItem], trending: Sequence[Paper]
) -> str:
    if items:
        return f"Top match: {renderer.view(items[0].paper).title}"
    if trending:
        return f"Trending today: {renderer.view(trending[0]).title}"
    return "Nothing new matched your keywords today."


# What markupsafe.escape() replaces; a signed link has none of them, nor non-ASCII.
_ESCAPED = re.compile(r"[&<>\"']")


def _escaped_url(url: str) -> str:
    """html_ascii(escape(url)) as a str, without escaping one that needs none (a signed link,
    ten a digest). Benchmark: tests/perf/bench_delivery.py, "rendering"."""
    if url.isascii() and _ESCAPED.search(url) is None:
        return str(url)
    return str(html_ascii(escape(url)))  # str: a Markup join escapes the parts


def html_ascii(html: str) -> str:
    """HTML with every non-ASCII character as a character reference (the same document).

    Pure ASCII HTML can be mailed without a transfer encoding (see newsletter.mail); converting the
    cached fragments once spares converting each whole digest.
    """
    return html if html.isascii() else html.encode("ascii", "xmlcharrefreplace").decode("ascii")


def keywords_line(profile: str) -> str:
    """A keyword profile on one line: its lines (entries, like commas) joined by commas."""
    entries = (line.strip().strip(",").strip() for line in profile.splitlines())
    return _one_line(", ".join(entry for entry in entries if entry))


def _one_line(text: str) -> str:
    return " ".join(text.split())


def render_confirmation(
    settings: Settings, *, email: str, confirm_url: str, templates_dir: Path | None = None
) -> Email:
    """The sign-up confirmation: a link to a page that confirms (valid `confirm_hours`)."""
    env = make_environment(templates_dir)
    context = {
        "site_name": site_name(settings),
        "base_url": settings.base_url,
        "email": email,
        "confirm_url": confirm_url,
        "confirm_hours": settings.confirm_hours,
        # No hidden preheader: in a mail without an unsubscribe link, hidden text is what
        # filters score (SpamAssassin's STY_INVIS_DIRECT); the visible heading is the preview.
        "preheader": "",
    }
    return Email(
        subject=_one_line(env.get_template("email/confirm/subject.txt").render(context)),
        text=env.get_template("email/confirm/body.txt").render(context).strip() + "\n",
        html=inline_css(env.get_template("email/confirm/body.html").render(context)),
    )
