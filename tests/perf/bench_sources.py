"""Parse speed of the sources on 1,000-entry responses built from the recorded ones.

Run: .venv/bin/python tests/perf/bench_sources.py [--entries 1000] [--repeat 5] [--quick]
Target: at most 0.5 s per 1,000 entries for each format.
"""

from __future__ import annotations

import argparse
import copy
import html
import json
import time
from collections.abc import Callable
from pathlib import Path

from lxml import etree

from newsletter.sources import ParseResult, arxiv, hf_daily

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "sources"
TARGET_SECONDS_PER_1000 = 0.5
ATOM_NS = "{http://www.w3.org/2005/Atom}"


def new_id(n: int) -> str:
    return f"2611.{n:05d}"


def hf_response(count: int) -> bytes:
    """A Daily Papers API answer of `count` entries, the recorded ones cycled with new ids."""
    recorded = json.loads((FIXTURES / "hf_daily_papers_2026-06-12.json").read_bytes())
    entries = []
    for n in range(count):
        entry = copy.deepcopy(recorded[n % len(recorded)])
        entry["paper"]["id"] = new_id(n)
        entries.append(entry)
    return json.dumps(entries).encode()


def hf_page(count: int) -> bytes:
    """The same entries as an HF day page (HTML-escaped in data-props)."""
    props = html.escape(f'{{"dailyPapers":{hf_response(count).decode()}}}', quote=True)
    return (
        '<!doctype html><html><body><div class="SVELTE_HYDRATER contents" '
        f'data-target="DailyPapers" data-props="{props}"></div></body></html>'
    ).encode()


def rss_feed(count: int) -> bytes:
    """A daily RSS feed of `count` new items, the recorded items cycled with new ids."""
    root = etree.fromstring((FIXTURES / "arxiv_rss_multi_category.xml").read_bytes())
    channel = root.find("channel")
    assert channel is not None
    templates = channel.findall("item")
    for item in templates:
        channel.remove(item)
    for n in range(count):
        item = copy.deepcopy(templates[n % len(templates)])
        paper_id = new_id(n)
        item.find("{http://arxiv.org/schemas/atom}announce_type").text = "new"  # type: ignore[union-attr]
        item.find("guid").text = f"oai:arXiv.org:{paper_id}v1"  # type: ignore[union-attr]
        item.find("link").text = f"https://arxiv.org/abs/{paper_id}"  # type: ignore[union-attr]
        description = item.find("description")
        assert description is not None and description.text
        abstract = description.text.split("Abstract:", 1)[1]
        description.text = f"arXiv:{paper_id}v1 Announce Type: new \nAbstract:{abstract}"
        channel.append(item)
    return etree.tostring(root, xml_declaration=True, encoding="UTF-8")


def atom_feed(count: int) -> bytes:
    """An Atom API page of `count` entries, the recorded entries cycled with new ids."""
    root = etree.fromstring((FIXTURES / "arxiv_atom_query.xml").read_bytes())
    templates = root.findall(f"{ATOM_NS}entry")
    for entry in templates:
        root.remove(entry)
    for n in range(count):
        entry = copy.deepcopy(templates[n % len(templates)])
        entry.find(f"{ATOM_NS}id").text = f"http://arxiv.org/abs/{new_id(n)}v1"  # type: ignore[union-attr]
        root.append(entry)
    return etree.tostring(root, xml_declaration=True, encoding="UTF-8")


def bench(
    name: str, parse: Callable[[bytes], ParseResult], raw: bytes, count: int, repeat: int
) -> bool:
    """Parse `raw` `repeat` times; print the best run's figures; True if within the target."""
    timings = []
    for _ in range(repeat):
        started = time.perf_counter()
        result = parse(raw)
        timings.append(time.perf_counter() - started)
    if len(result.papers) != count:
        raise SystemExit(f"{name}: parsed {len(result.papers)} papers, expected {count}")
    best = min(timings)
    per_1000 = best / count * 1000
    ok = per_1000 <= TARGET_SECONDS_PER_1000
    print(
        f"{name:<14} {count:>6} entries  {len(raw) / 1e6:6.2f} MB  "
        f"{count / best:>10,.0f} entries/s  {per_1000:7.3f} s per 1,000  "
        f"{'ok' if ok else 'SLOWER THAN TARGET'}"
    )
    return ok


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entries", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="50 entries, 2 runs (smoke test)")
    args = parser.parse_args()
    count, repeat = (50, 2) if args.quick else (args.entries, args.repeat)

    cases = [
        ("arxiv rss", arxiv.parse_rss, rss_feed(count)),
        ("arxiv atom", arxiv.parse_atom, atom_feed(count)),
        ("hf_daily json", hf_daily.parse, hf_response(count)),
        ("hf_daily page", hf_daily.parse_page, hf_page(count)),
    ]
    print(f"best of {repeat} runs; target <= {TARGET_SECONDS_PER_1000} s per 1,000 entries")
    results = [bench(name, parse, raw, count, repeat) for name, parse, raw in cases]
    if not all(results):
        raise SystemExit(1)


if __name__ == "__main__":
    main()
