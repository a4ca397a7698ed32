"""Benchmark: digests claimed, rendered, sent and marked sent, against raw smtplib to one sink.

Needs Postfix's smtp-sink (`apt-get install -y postfix`). Figures of one run:

  ours   deliver(), as one worker process (one of a Celery worker's two slots) runs it: the
         ledger's claim and lease, the render, the MIME message, SMTP with PIPELINING (the
         next digest rendered while the relay takes in the last, its MAIL, RCPT and DATA sent
         on the last one's 250), and the sent mark after each 250; on a SQLite ledger (or
         --database-url) whose rows the real planner wrote for synthetic subscribers
  raw    the transport alone: smtplib in one process on the same sink, sending the very
         messages and envelopes of ours' instrumented pass (cycled to as many), prebuilt and
         dot-stuffed, the same batches over as many connections one after another, pipelined
         (RFC 2920: MAIL, RCPT and DATA in one write; streamed also writes the next message's
         commands with a message's end, which ours does not, see SMTPTransport.finish); the
         best of four runs after ours
  naive  Jinja + premailer on every message (what per-recipient inlining would cost)

Then the sender CPU per message by part (a second, instrumented pass over --breakdown rows put
back to planned): claim and lease, rendering, signed links, MIME building, MIME encoding (the
bytes on the wire), SMTP, the sent mark, the rest; and the size distribution of every digest's
HTML part (Gmail clips a message over ~102 KB; a digest is cut to "see all N on the web" below
90 KB). Digests hold 1 to 50 papers, the range the settings page allows, most of them 10.

Exits 1 when ours is below 0.7 x raw, or a digest is over the cap.

    .venv/bin/python tests/perf/bench_delivery.py [--quick] [--digests N] [--batch N] [--fixed]
"""

from __future__ import annotations

import argparse
import os
import random
import smtplib
import socket
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import replace
from datetime import date
from pathlib import Path
from typing import Any

from markupsafe import Markup, escape
from sqlalchemy import insert, select, update

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from newsletter import pipeline, storage  # noqa: E402
from newsletter.config import Settings, load_settings  # noqa: E402
from newsletter.db import Database  # noqa: E402
from newsletter.models import ACTIVE, PLANNED, SENT, Delivery, Subscriber  # noqa: E402
from newsletter.paper import Paper  # noqa: E402
from newsletter.render import (  # noqa: E402
    PREHEADER_PADDING,
    DigestItem,
    EditionRenderer,
    inline_css,
    paper_view,
    site_name,
)

DATA = ROOT / "newsletter" / "data" / "hf_daily_papers_2026-06-12.json"
SINK = "/usr/sbin/smtp-sink"
EDITION = date(2026, 6, 12)
PAPERS_PER_DIGEST = 10
# How many papers the digests hold, and how often: the settings page allows 1 to 50.
DIGEST_SIZES = (1, 3, 5, 10, 20, 30, 50)
SIZE_WEIGHTS = (2, 4, 10, 60, 12, 7, 5)
# The recorded day has 30 papers; copies under other ids let a digest hold 50.
COPIES = 2
# Entries that match most papers, so the large digests fill up.
BROAD = ("model", "learning", "language models", "data", "training")
# The size cap of render.py, restated: the benchmark checks the renderer keeps to it.
CAP_BYTES = 90_000
TARGET = 0.7  # ours / raw
SENDER = "digest@news.example.org"


def load_papers() -> list[Paper]:
    """The recorded Hugging Face day, through the source parser."""
    from newsletter.sources import hf_daily

    return list(hf_daily.parse(DATA.read_bytes()).papers)


def day_of_papers() -> list[Paper]:
    """The recorded day and COPIES copies of it under other ids (titles told apart)."""
    papers = load_papers()
    copies = [
        replace(p, id=f"{p.id}{n}", title=f"{p.title} ({n})")
        for n in range(1, COPIES + 1)
        for p in papers
    ]
    return papers + copies


def profiles(papers: Sequence[Paper], rng: random.Random, count: int) -> list[str]:
    """Keyword profiles drawn from the papers' own keywords (multi-word ones are loose entries)."""
    words = sorted({k for p in papers for k in p.keywords if "," not in k and len(k) < 40})
    made = []
    for _ in range(count):
        entries = rng.sample(words, rng.randint(2, 4)) + rng.sample(BROAD, rng.randint(0, 2))
        made.append(", ".join(entries))
    return made


def seed(db: Database, count: int, sizes: Sequence[int], rng: random.Random) -> None:
    """The day's papers, and `count` active subscribers due now, written in bulk."""
    papers = day_of_papers()
    pipeline.load_papers(db, papers, source="hf_daily", url="bench:recorded")
    now = storage.utcnow()
    rows = [
        {
            "email": f"reader{n}@example.net",
            "state": ACTIVE,
            "keywords": text,
            "timezone": "UTC",
            "send_hour": 0,
            "digest_size": size,
            "show_trending": True,
            "hard_failures": 0,
            "created_at": now,
            "confirmed_at": now,
        }
        for n, (text, size) in enumerate(zip(profiles(papers, rng, count), sizes, strict=True))
    ]
    with db.session() as session:
        for start in range(0, len(rows), 10_000):
            session.execute(insert(Subscriber), rows[start : start + 10_000])


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def smtp_sink() -> Iterator[int]:
    """A Postfix smtp-sink on a free loopback port."""
    if not Path(SINK).exists():
        sys.exit(f"{SINK} is missing: apt-get install -y postfix")
    port = free_port()
    # smtp-sink refuses to run as root without a user to drop privileges to.
    user = ["-u", "nobody"] if os.geteuid() == 0 else []
    process = subprocess.Popen(
        [SINK, *user, f"127.0.0.1:{port}", "1000"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline or process.poll() is not None:
                    process.kill()
                    error = process.communicate()[1].decode(errors="replace")
                    raise RuntimeError(f"smtp-sink did not start: {error}") from None
                time.sleep(0.05)
        yield port
    finally:
        process.terminate()
        process.wait(timeout=10)


# Ours -----------------------------------------------------------------------------------------


@contextmanager
def patched(target: Any, name: str, make: Callable[[Any], Any]) -> Iterator[None]:
    """`target.name` replaced by make(original) for the block."""
    original = getattr(target, name)
    setattr(target, name, make(original))
    try:
        yield
    finally:
        setattr(target, name, original)


def bench_ours(
    db: Database, settings: Settings, caches: Any, html_sizes: list[tuple[int, int]]
) -> tuple[float, float, int]:
    """deliver() every planned row; (wall seconds, CPU seconds, digests sent).

    The only instrument is a list append per digest: its HTML size and its paper count.
    """

    def sized(render: Any) -> Any:
        def render_digest(self: EditionRenderer, **kw: Any) -> Any:
            email = render(self, **kw)
            html_sizes.append((len(email.html), len(kw["items"])))
            return email

        return render_digest

    with patched(EditionRenderer, "render_digest", sized):
        cpu, started = time.process_time(), time.perf_counter()
        report = pipeline.deliver(db, settings, edition_caches=caches)
        wall, cpu = time.perf_counter() - started, time.process_time() - cpu
    if report.retry or report.failed:
        sys.exit(f"deliver() did not send everything: {report}")
    return wall, cpu, report.sent


class Breakdown:
    """Exclusive CPU and wall seconds of instrumented functions (less their callees')."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)
        self.wall: dict[str, float] = defaultdict(float)
        self._inner: list[list[float]] = []

    def timing(self, part: str) -> Callable[[Any], Any]:
        def make(function: Any) -> Any:
            def timed(*args: Any, **kwargs: Any) -> Any:
                cpu, wall = time.process_time(), time.perf_counter()
                self._inner.append([0.0, 0.0])
                try:
                    return function(*args, **kwargs)
                finally:
                    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
                    inner_cpu, inner_wall = self._inner.pop()
                    self.seconds[part] += cpu - inner_cpu
                    self.wall[part] += wall - inner_wall
                    if self._inner:
                        self._inner[-1][0] += cpu
                        self._inner[-1][1] += wall

            return timed

        return make


# What each part of a message's sender CPU is: (module or class, attribute, part).
def instrumented() -> list[tuple[Any, str, str]]:
    from newsletter.mail import smtp
    from newsletter.pipeline import claims, delivery, digests

    return [
        (claims.Claim, "claim", "claim, lease, papers"),
        (claims.Claim, "keep", "claim, lease, papers"),
        (delivery, "load_editions", "claim, lease, papers"),
        (digests.Digests, "wire", "rendering"),
        (digests.Digests, "message", "rendering"),  # code of before WireMessage
        (digests.Digests, "_rendered", "rendering"),
        (EditionRenderer, "render_digest", "rendering"),
        (digests, "link", "signed links"),
        (digests, "view_link", "signed links"),
        (digests.verp, "return_path", "signed links"),
        (digests, "wire_message", "MIME building"),
        (digests, "build_message", "MIME building"),
        (smtp, "serialize", "MIME encoding"),
        (smtp.SMTPTransport, "start", "SMTP"),
        (smtp.SMTPTransport, "finish", "SMTP"),
        (smtp.SMTPTransport, "send", "SMTP"),
        (storage, "mark_sent", "sent mark"),  # code of before SentMarks
        (storage.SentMarks, "__call__", "sent mark"),
    ]


Sample = tuple[str, str, bytes]  # MAIL FROM, RCPT TO, the message's bytes


def bench_breakdown(
    db: Database, settings: Settings, caches: Any, count: int
) -> tuple[Breakdown, float, list[Sample]]:
    """Send the first `count` rows again, instrumented: CPU by part, total CPU, and every
    message of the pass with its envelope (what raw sends)."""
    with db.session() as session:
        ids = list(session.scalars(select(Delivery.id).where(Delivery.state == SENT).limit(count)))
        session.execute(
            update(Delivery)
            .where(Delivery.id.in_(ids))
            .values(state=PLANNED, claim_token=None, lease_until=None, sent_at=None, attempts=0)
        )
    breakdown = Breakdown()
    samples: list[Sample] = []
    from newsletter.mail import smtp
    from newsletter.pipeline import digests

    def keep(serialize: Any) -> Any:
        def kept(message: Any, *args: Any, **kwargs: Any) -> bytes:
            data: bytes = serialize(message, *args, **kwargs)
            sender, recipient, _ = smtp.envelope_of(message)
            samples.append((sender, recipient, data))
            return data

        return kept

    def signed(rate_links: Any) -> Any:
        # Each digest's rating links come from a closure made per digest: time its calls.
        def timed_links(*args: Any) -> Any:
            return breakdown.timing("signed links")(rate_links(*args))

        return breakdown.timing("signed links")(timed_links)

    with contextlib_stack() as stack:
        for target, name, part in instrumented():
            if hasattr(target, name):  # an older version of the code may lack a part
                stack.enter_context(patched(target, name, breakdown.timing(part)))
        stack.enter_context(patched(smtp, "serialize", keep))
        stack.enter_context(patched(digests, "rate_links", signed))
        cpu = time.process_time()
        report = pipeline.deliver(db, settings, ids=ids, edition_caches=caches)
        cpu = time.process_time() - cpu
    assert report.sent == len(ids), report
    return breakdown, cpu / len(ids), samples


def contextlib_stack() -> Any:
    from contextlib import ExitStack

    return ExitStack()


# Raw smtplib ----------------------------------------------------------------------------------


def bench_raw(port: int, samples: list[Sample], count: int, batch: int, streamed: bool) -> float:
    """smtplib sending ours' messages, prebuilt, over `batch`-message connections, pipelined.

    The messages and envelopes are the very ones of ours' instrumented pass (`count` sends
    cycle through them). Each message's MAIL, RCPT and DATA go in one write; `streamed`
    also sends the next message's commands with a message's end, as RFC 2920 allows. Every
    reply is checked.
    """
    ready = [_stuffed(data) for _, _, data in samples]
    started = time.perf_counter()
    for start in range(0, count, batch):
        smtp = smtplib.SMTP("127.0.0.1", port)
        smtp.ehlo()
        assert "pipelining" in smtp.esmtp_features, "smtp-sink offers PIPELINING"
        numbers = range(start, min(start + batch, count))
        envelopes = [samples[n % len(samples)][:2] for n in numbers]
        commands = [
            f"MAIL FROM:<{sender}>{_EIGHT_BIT}\r\nRCPT TO:<{recipient}>\r\nDATA\r\n".encode()
            for sender, recipient in envelopes
        ]
        if streamed:
            smtp.send(commands[0])
        for i, number in enumerate(numbers):
            if not streamed:
                smtp.send(commands[i])
            for expected in (250, 250, 354):
                code, reply = smtp.getreply()
                assert code == expected, (code, reply)
            data = ready[number % len(ready)]
            following = commands[i + 1] if streamed and i + 1 < len(commands) else b""
            smtp.send(data + following)
            code, reply = smtp.getreply()
            assert code == 250, (code, reply)
        smtp.quit()
    return time.perf_counter() - started


# Ours declares the 8bit text part smtp-sink takes (8BITMIME): raw sends the same bytes.
_EIGHT_BIT = " BODY=8BITMIME"


def _stuffed(data: bytes) -> bytes:
    stuffed = data.replace(b"\r\n.", b"\r\n..")
    return (b"." + stuffed if stuffed.startswith(b".") else stuffed) + b".\r\n"


# Naive ----------------------------------------------------------------------------------------


def make_items(
    papers: Sequence[Paper], rng: random.Random, count: int = PAPERS_PER_DIGEST
) -> list[DigestItem]:
    """`count` papers with a subscriber's matched keywords and a highlighted snippet."""
    items = []
    chosen = rng.sample(list(papers), min(count, len(papers)))
    for paper in chosen:
        words = paper.keywords or paper.title.split()
        matched = tuple(rng.sample(words, min(len(words), rng.randint(1, 3))))
        sentence = (paper.ai_summary or paper.abstract)[:300]
        term = matched[0]
        html = str(escape(sentence)).replace(str(escape(term)), f"<mark>{escape(term)}</mark>")
        items.append(DigestItem(paper, matched, html, sentence, round(rng.uniform(5, 60), 2)))
    return items


def naive_html(
    renderer: EditionRenderer, number: int, items: list[DigestItem], trending: list[Paper]
) -> str:
    """The whole digest rendered by Jinja, then inlined by premailer: per message."""
    env = renderer.env
    card = env.get_template("email/digest/card.html")
    labels = "".join(f'<span class="label">{escape(m)}</span>' for m in items[0].matched)
    cards = "".join(
        card.render(
            view=paper_view(i.paper),
            labels=Markup(f'<p class="labels">{labels}</p>'),
            snippet=Markup(i.snippet_html),
            rate="",
        )
        for i in items
    )
    trend = env.get_template("email/digest/trending_card.html")
    section = env.get_template("email/digest/trending.html").render(
        cards=Markup("".join(trend.render(view=paper_view(p)) for p in trending))
    )
    day = renderer.edition
    html = env.get_template("email/digest/body.html").render(
        site_name=site_name(renderer.settings),
        base_url=renderer.settings.base_url,
        edition_long=f"{day:%A}, {day.day} {day:%B %Y}",
        preheader_padding=PREHEADER_PADDING,
        preheader=items[0].paper.title,
        headline="10 papers matched your keywords",
        cards=Markup(cards),
        trending_section=Markup(section),
        email=f"r{number}@example.net",
        keywords_text="x, y",
        manage_url="https://news.example.org/manage/t",
        unsubscribe_url="https://news.example.org/unsubscribe/t",
        view_link=Markup(
            '<p class="view-online"><a href="https://news.example.org/digest/t">'
            "View in browser</a></p>"
        ),
        more="",
        empty=False,
    )
    return inline_css(html)


def bench_naive(settings: Settings, count: int) -> float:
    """Seconds to render and inline `count` digests of 10 papers, premailer on each."""
    papers = load_papers()
    rng = random.Random(3)
    people = [make_items(papers, rng) for _ in range(count)]
    trending = sorted(papers, key=lambda p: -p.upvotes)[:5]
    renderer = EditionRenderer(settings, EDITION)
    started = time.perf_counter()
    for number, items in enumerate(people):
        naive_html(renderer, number, items, trending)
    return time.perf_counter() - started


# Run ------------------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="500 digests")
    parser.add_argument("--digests", type=int, default=20_000)
    parser.add_argument("--batch", type=int, default=250, help="messages per connection")
    parser.add_argument(
        "--naive", type=int, default=200, help="messages for the naive baseline (0: none)"
    )
    parser.add_argument("--breakdown", type=int, default=2000, help="rows of the CPU breakdown")
    parser.add_argument("--database-url", default="", help="a PostgreSQL ledger instead")
    parser.add_argument(
        "--fixed",
        action="store_true",
        help=f"every digest of {PAPERS_PER_DIGEST} papers (as the throughput figures before sizes)",
    )
    args = parser.parse_args(argv)
    count = 500 if args.quick else args.digests
    naive_count = min(args.naive, 50 if args.quick else args.naive)
    rng = random.Random(12)
    sizes = (
        [PAPERS_PER_DIGEST] * count
        if args.fixed
        else rng.choices(DIGEST_SIZES, SIZE_WEIGHTS, k=count)
    )
    with tempfile.TemporaryDirectory() as tmp, smtp_sink() as port:
        settings = load_settings(
            var_dir=Path(tmp),
            database_url=args.database_url,
            secret_key="bench",
            base_url="https://news.example.org",
            from_address=f"Paper Digest <{SENDER}>",
            unsubscribe_mailto="unsubscribe@news.example.org",
            smtp_url=f"smtp://127.0.0.1:{port}",
            batch_size=args.batch,
            sources="hf_daily",
        )
        db = Database(settings)
        db.upgrade()
        seed(db, count, sizes, rng)
        planned = pipeline.plan(db, settings)
        if planned.planned != count:
            sys.exit(f"the planner planned {planned.planned} of {count} digests")
        caches = pipeline.EditionCaches()
        # Raw sends the messages of the instrumented pass (which also gives the breakdown):
        # ours first, then raw's runs of each kind, the best of them counted.
        html_sizes: list[tuple[int, int]] = []
        ours, cpu_ours, sent = bench_ours(db, settings, caches, html_sizes)
        parts, cpu_instrumented, samples = bench_breakdown(
            db, settings, caches, min(args.breakdown, count)
        )
        raws: list[tuple[float, str, float]] = []
        for streamed in (False, True, False, True):
            cpu = time.process_time()
            seconds = bench_raw(port, samples, count, args.batch, streamed)
            label = "streamed" if streamed else "per message"
            raws.append((seconds, label, time.process_time() - cpu))
        db.dispose()
        naive = bench_naive(settings, naive_count) if naive_count else 0.0

    raw, raw_mode, cpu_raw = min(raws)
    size = sum(len(data) for _, _, data in samples) / len(samples)
    papers = [n for _, n in html_sizes]
    ratio = raw / ours
    print(
        f"digests: {count}, {min(papers)} to {max(papers)} papers "
        f"(mean {sum(papers) / len(papers):.1f}), ~{size / 1024:.0f} KiB per message, "
        f"{args.batch} per SMTP connection, ledger on {db.engine.dialect.name}"
    )
    print(
        f"ours  deliver(): claim, render, MIME, SMTP, mark: {sent / ours:8.0f} digests/s "
        f"({ours:.2f} s)"
    )
    print(
        f"raw   smtplib, prebuilt, pipelined:               {count / raw:8.0f} messages/s "
        f"({raw:.2f} s, best of {len(raws)}: {raw_mode}; "
        + ", ".join(f"{count / s:.0f}" for s, _, _ in raws)
        + ")"
    )
    print(f"ratio ours/raw:                                   {ratio:8.2f}  (target >= {TARGET})")
    print(
        f"sender CPU per message:  ours {1e6 * cpu_ours / count:.0f} µs, "
        f"raw {1e6 * cpu_raw / count:.0f} µs (smtp-sink and other load not counted)"
    )
    print_breakdown(parts, cpu_instrumented, min(args.breakdown, count))
    if naive_count:
        print(
            f"naive premailer per message:   {naive_count / naive:8.1f} digests/s "
            f"(render + inline only, {naive_count} digests; "
            f"{1000 * naive / naive_count:.1f} ms each)"
        )
    over = print_sizes([s for s, _ in html_sizes], papers)
    missed = []
    if ratio < TARGET:
        missed.append(f"ours/raw {ratio:.2f} < {TARGET}")
    if over:
        missed.append(f"{over} digests over the {CAP_BYTES}-byte cap")
    if missed:
        print("MISSED: " + "; ".join(missed))
        return 1
    return 0


def print_breakdown(parts: Breakdown, per_message: float, count: int) -> None:
    """Each part's CPU per message (and wall time); the rest is the loop, logs, instruments."""
    total = per_message * count
    print(f"sender CPU per message by part ({count} digests sent again, instrumented):")
    rows = sorted(parts.seconds.items(), key=lambda kv: -kv[1])
    rows.append(("the rest (loop, log, instruments)", total - sum(parts.seconds.values())))
    for part, seconds in rows:
        wall = parts.wall.get(part)
        waited = f"  (wall {1e6 * wall / count:.0f} µs)" if wall is not None else ""
        print(
            f"  {part:34s} {1e6 * seconds / count:6.0f} µs  {100 * seconds / total:4.0f}%{waited}"
        )
    print(f"  {'total':34s} {1e6 * per_message:6.0f} µs")


def print_sizes(html_sizes: Sequence[int], papers: Sequence[int]) -> int:
    """The distribution of the digests' HTML sizes; returns how many are over the cap."""
    ordered = sorted(html_sizes)

    def at(share: float) -> int:
        return ordered[min(len(ordered) - 1, int(share * len(ordered)))]

    print(
        f"HTML size of {len(ordered)} digests:  min {ordered[0] / 1000:.1f} KB, "
        f"p50 {at(0.50) / 1000:.1f}, p90 {at(0.90) / 1000:.1f}, p99 {at(0.99) / 1000:.1f}, "
        f"max {ordered[-1] / 1000:.1f} KB (cap {CAP_BYTES / 1000:.0f} KB, Gmail clips ~102 KB)"
    )
    for count in sorted(set(papers)):
        of_size = [s for s, n in zip(html_sizes, papers, strict=True) if n == count]
        print(
            f"  {count:2d} papers: {len(of_size):6d} digests, "
            f"{min(of_size) / 1000:5.1f}-{max(of_size) / 1000:5.1f} KB"
        )
    over = sum(size > CAP_BYTES for size in ordered)
    print(f"over the cap: {over}")
    return over


if __name__ == "__main__":
    sys.exit(main())
