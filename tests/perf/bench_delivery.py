"""Benchmark: personalized digests rendered and sent over SMTP, against raw smtplib sending.

Needs Postfix's smtp-sink (`apt-get install -y postfix`). Three figures, one run:

  ours   EditionRenderer + build_message + SMTPTransport, one connection per batch
  raw    smtplib.sendmail of prebuilt messages of the same size, same batches
  naive  Jinja + premailer on every message (what per-recipient inlining would cost)

and the size distribution of every digest's HTML part (Gmail clips a message over ~102 KB; a
digest is cut to "see all N on the web" below 90 KB). Digests hold 1 to 50 papers, the range
the settings page allows, most of them the default 10.

    .venv/bin/python tests/perf/bench_delivery.py [--quick] [--digests N] [--batch N] [--fixed]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import smtplib
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import date
from pathlib import Path

from markupsafe import Markup, escape

from newsletter.config import Settings
from newsletter.mail import SMTPTransport, build_message, message_id_for, serialize
from newsletter.paper import Paper
from newsletter.render import (
    PREHEADER_PADDING,
    DigestItem,
    EditionRenderer,
    inline_css,
    paper_view,
    site_name,
)

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT / "newsletter" / "data" / "hf_daily_papers_2026-06-12.json"
SINK = "/usr/sbin/smtp-sink"
EDITION = date(2026, 6, 12)
PAPERS_PER_DIGEST = 10
# How many papers the digests hold, and how often: the settings page allows 1 to 50.
DIGEST_SIZES = (1, 3, 5, 10, 20, 30, 50)
SIZE_WEIGHTS = (2, 4, 10, 60, 12, 7, 5)
# The size cap of render.py, restated: the benchmark checks the renderer keeps to it.
CAP_BYTES = 90_000


def load_papers() -> list[Paper]:
    """The recorded Hugging Face day, through the source parser when it is there."""
    try:
        from newsletter.sources import hf_daily

        return list(hf_daily.parse(DATA.read_bytes()).papers)
    except ImportError:
        papers = []
        for entry in json.loads(DATA.read_bytes()):
            raw = entry["paper"]
            papers.append(
                Paper(
                    id=raw["id"],
                    title=raw["title"],
                    abstract=raw.get("summary", ""),
                    authors=[a["name"] for a in raw.get("authors", [])],
                    upvotes=raw.get("upvotes", 0),
                    source="hf_daily",
                    keywords=raw.get("ai_keywords", []),
                    ai_summary=raw.get("ai_summary"),
                    github_repo=raw.get("githubRepo"),
                    github_stars=raw.get("githubStars"),
                )
            )
        return papers


def make_items(
    papers: Sequence[Paper], rng: random.Random, count: int = PAPERS_PER_DIGEST
) -> list[DigestItem]:
    """`count` papers with a subscriber's matched keywords and a highlighted snippet."""
    items = []
    # The recorded day has 30 papers: a larger digest repeats them (the cards cost the same).
    chosen = rng.sample(list(papers), min(count, len(papers)))
    chosen += [rng.choice(papers) for _ in range(count - len(chosen))]
    for paper in chosen:
        words = paper.keywords or paper.title.split()
        matched = tuple(rng.sample(words, min(len(words), rng.randint(1, 3))))
        sentence = (paper.ai_summary or paper.abstract)[:300]
        term = matched[0]
        html = str(escape(sentence)).replace(str(escape(term)), f"<mark>{escape(term)}</mark>")
        items.append(DigestItem(paper, matched, html, sentence, round(rng.uniform(5, 60), 2)))
    return items


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


def bench_ours(
    settings: Settings,
    people: list[list[DigestItem]],
    trending: list[Paper],
    batch: int,
    html_sizes: list[int],
) -> tuple[float, list[bytes]]:
    """Render, build and send every digest; return seconds and a few messages for `raw`.

    The size of each digest's HTML part is appended to `html_sizes`.
    """
    renderer = EditionRenderer(settings, EDITION)
    samples: list[bytes] = []
    assert settings.smtp_url
    started = time.perf_counter()
    for start in range(0, len(people), batch):
        with SMTPTransport(settings.smtp_url) as transport:
            for number in range(start, min(start + batch, len(people))):
                message, html_size = digest_message(
                    settings, renderer, number, people[number], trending
                )
                html_sizes.append(html_size)
                transport.send(message)
                if len(samples) < 50:
                    samples.append(serialize(message))
    return time.perf_counter() - started, samples


def digest_message(
    settings: Settings,
    renderer: EditionRenderer,
    number: int,
    items: list[DigestItem],
    trending: list[Paper],
):  # type: ignore[no-untyped-def]
    """One digest's message, and the size in bytes of its HTML part."""
    address = f"reader{number}@example.net"
    unsubscribe = f"{settings.base_url}/unsubscribe/{'t' * 60}{number}"
    email = renderer.render_digest(
        email=address,
        keywords_text=", ".join(dict.fromkeys(m for i in items for m in i.matched)),
        items=items,
        trending=trending,
        unsubscribe_url=unsubscribe,
        manage_url=f"{settings.base_url}/manage/{'t' * 60}{number}",
        view_url=f"{settings.base_url}/digest/{'t' * 70}{number}",
    )
    message = build_message(
        email,
        sender=settings.from_address,
        recipient=address,
        message_id=message_id_for(number, EDITION, "news.example.org"),
        unsubscribe_url=unsubscribe,
        unsubscribe_mailto=settings.unsubscribe_mailto,
        list_id=settings.list_id,
    )
    return message, len(email.html.encode())


def bench_raw(port: int, samples: list[bytes], count: int, batch: int) -> float:
    """smtplib.sendmail of prebuilt messages over the same batches of connections."""
    started = time.perf_counter()
    for start in range(0, count, batch):
        smtp = smtplib.SMTP("127.0.0.1", port)
        for number in range(start, min(start + batch, count)):
            smtp.sendmail(
                "digest@news.example.org",
                [f"reader{number}@example.net"],
                samples[number % len(samples)],
            )
        smtp.quit()
    return time.perf_counter() - started


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


def bench_naive(
    renderer: EditionRenderer, people: list[list[DigestItem]], trending: list[Paper]
) -> float:
    started = time.perf_counter()
    for number, items in enumerate(people):
        naive_html(renderer, number, items, trending)
    return time.perf_counter() - started


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="500 digests")
    parser.add_argument("--digests", type=int, default=20_000)
    parser.add_argument("--batch", type=int, default=250, help="messages per connection")
    parser.add_argument("--naive", type=int, default=200, help="messages for the naive baseline")
    parser.add_argument(
        "--fixed",
        action="store_true",
        help=f"every digest of {PAPERS_PER_DIGEST} papers (as the throughput figures before sizes)",
    )
    args = parser.parse_args(argv)
    count = 500 if args.quick else args.digests
    naive_count = min(args.naive, 50 if args.quick else args.naive)

    papers = load_papers()
    rng = random.Random(12)
    sizes = (
        [PAPERS_PER_DIGEST] * count
        if args.fixed
        else rng.choices(DIGEST_SIZES, SIZE_WEIGHTS, k=count)
    )
    people = [make_items(papers, rng, size) for size in sizes]
    html_sizes: list[int] = []
    trending = sorted(papers, key=lambda p: -p.upvotes)[:8]
    with smtp_sink() as port:
        settings = Settings(
            secret_key="bench",
            base_url="https://news.example.org",
            from_address="Paper Digest <digest@news.example.org>",
            unsubscribe_mailto="unsubscribe@news.example.org",
            smtp_url=f"smtp://127.0.0.1:{port}",
        )
        cpu = time.process_time()
        ours, samples = bench_ours(settings, people, trending, args.batch, html_sizes)
        cpu_ours, cpu = time.process_time() - cpu, time.process_time()
        raw = bench_raw(port, samples, count, args.batch)
        cpu_raw = time.process_time() - cpu
    naive = bench_naive(EditionRenderer(settings, EDITION), people[:naive_count], trending)

    size = sum(map(len, samples)) / len(samples)
    print(
        f"digests: {count}, {min(sizes)} to {max(sizes)} papers (mostly {PAPERS_PER_DIGEST}), "
        f"~{size / 1024:.0f} KiB per message, "
        f"{args.batch} per SMTP connection"
    )
    print(f"ours  (render + build + send): {count / ours:8.0f} digests/s  ({ours:.2f} s)")
    print(f"raw   smtplib, prebuilt:       {count / raw:8.0f} messages/s ({raw:.2f} s)")
    print(f"ratio ours/raw:                {raw / ours:8.2f}  (target >= 0.5)")
    print(
        f"sender CPU per message:        ours {1e6 * cpu_ours / count:.0f} µs, "
        f"raw {1e6 * cpu_raw / count:.0f} µs (smtp-sink and other load not counted)"
    )
    print(
        f"naive premailer per message:   {naive_count / naive:8.1f} digests/s "
        f"(render + inline only, {naive_count} digests; {1000 * naive / naive_count:.1f} ms each)"
    )
    print(f"speed-up over naive:           {(count / ours) / (naive_count / naive):8.0f}x")
    print_sizes(html_sizes, sizes)


def print_sizes(html_sizes: Sequence[int], papers: Sequence[int]) -> None:
    """The distribution of the digests' HTML sizes; exits 1 if one is over the cap."""
    ordered = sorted(html_sizes)

    def at(share: float) -> int:
        return ordered[min(len(ordered) - 1, int(share * len(ordered)))]

    print(
        f"HTML size of {len(ordered)} digests:  min {ordered[0] / 1000:.1f} KB, "
        f"p50 {at(0.50) / 1000:.1f}, p90 {at(0.90) / 1000:.1f}, p99 {at(0.99) / 1000:.1f}, "
        f"max {ordered[-1] / 1000:.1f} KB (cap {CAP_BYTES / 1000:.0f} KB, Gmail clips ~102 KB)"
    )
    for count in DIGEST_SIZES:
        of_size = [s for s, n in zip(html_sizes, papers, strict=True) if n == count]
        if of_size:
            print(
                f"  {count:2d} papers: {len(of_size):6d} digests, "
                f"{min(of_size) / 1000:5.1f}-{max(of_size) / 1000:5.1f} KB"
            )
    over = sum(size > CAP_BYTES for size in ordered)
    print(f"over the cap: {over}")
    if over:
        sys.exit(1)


if __name__ == "__main__":
    if shutil.which(SINK) is None and not Path(SINK).exists():
        sys.exit(f"{SINK} is missing: apt-get install -y postfix")
    main()
