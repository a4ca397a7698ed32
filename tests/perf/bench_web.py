"""Benchmark: the web app served by uvicorn in its own process, under concurrent clients.

`newsletter web` runs in a subprocess (SQLite in WAL, mail to the outbox); --clients readers
at once, each from an address of its own (X-Forwarded-For from a trusted proxy, so no rate
limit of one address is hit), send:

  healthz   GET /healthz: a database ping through the whole stack, the server's own floor
  preview   GET /preview/results, keywords drawn as bench_ranking.py draws profiles
  sign-up   POST / end to end: validation, subscriber row, signed link, confirmation .eml

and, in this process, the preview index of the papers is built a few times (once a minute at
most in the server, in the background). The papers are distinct: the recorded Hugging Face
day, arXiv feeds and the relevance set as they are, then new papers mixing the titles,
abstracts, authors and keywords of two of them (an arXiv day of the default categories is
~1,500 papers).

Targets (exit status 1 when one is missed): every response as expected; p95 of a preview
<= 250 ms and of a sign-up <= 500 ms with --clients readers at once.

    .venv/bin/python tests/perf/bench_web.py [--quick] [--papers N] [--requests N] [--clients N]
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import os
import random
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import timedelta
from pathlib import Path
from types import ModuleType

import httpx

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from newsletter import pipeline, storage  # noqa: E402
from newsletter.config import load_settings  # noqa: E402
from newsletter.db import Database  # noqa: E402
from newsletter.paper import Paper, read_jsonl  # noqa: E402
from newsletter.ranker import RecentPapers  # noqa: E402
from newsletter.sources import arxiv, hf_daily  # noqa: E402
from tests.support.net import free_port, wait_for_port  # noqa: E402

SOURCES = ROOT / "tests" / "fixtures" / "sources"
RELEVANCE = ROOT / "tests" / "fixtures" / "relevance" / "papers.jsonl"
PREVIEW_P95_MS = 250.0
SIGNUP_P95_MS = 500.0


def load(path: Path, name: str) -> ModuleType:
    """A benchmark module by path (tests/perf is not a package)."""
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # for its dataclasses, should it have any
    spec.loader.exec_module(module)
    return module


synth = load(ROOT / "tests" / "perf" / "bench_ranking.py", "bench_ranking_synth")


# Papers ------------------------------------------------------------------------------------


def recorded_papers() -> list[Paper]:
    """Every distinct paper of the recorded source days and the relevance set, as they are."""
    today = storage.utcnow().date()
    papers = list(hf_daily.parse(pipeline.DEMO_DATA.read_bytes()).papers)
    papers += arxiv.parse_rss((SOURCES / "arxiv_rss_multi_category.xml").read_bytes()).papers
    papers += arxiv.parse_rss((SOURCES / "arxiv_rss_cs_LG.xml").read_bytes()).papers
    papers += arxiv.parse_atom((SOURCES / "arxiv_atom_query.xml").read_bytes()).papers
    papers += [
        replace(p, published=today, source="arxiv", categories=["cs.LG"])
        for p in read_jsonl(RELEVANCE.read_text(encoding="utf-8"))
    ]
    unique: dict[str, Paper] = {}
    titles: set[str] = set()
    for paper in papers:
        if paper.id not in unique and paper.title not in titles:
            unique[paper.id] = paper
            titles.add(paper.title)
    return list(unique.values())


def distinct_papers(count: int, rng: random.Random) -> list[Paper]:
    """`count` papers, no two alike: the recorded ones, then mixes of two of them."""
    real = recorded_papers()
    papers = real[:count]
    titles = {p.title for p in papers}
    abstracts = {p.abstract for p in papers}
    today = storage.utcnow().date()
    while len(papers) < count:
        a, b = rng.sample(real, 2)
        title = _halves(a.title.split(), b.title.split(), " ")
        abstract = _halves(_sentences(a.abstract), _sentences(b.abstract), " ")
        if title in titles or abstract in abstracts:
            continue
        titles.add(title)
        abstracts.add(abstract)
        number = f"2606.{20000 + len(papers):05d}"
        papers.append(
            replace(
                a,
                id=number,
                title=title,
                abstract=abstract,
                authors=(a.authors[:3] + b.authors[:2]) or a.authors,
                keywords=list(dict.fromkeys(a.keywords[:4] + b.keywords[:4])),
                categories=list(dict.fromkeys(a.categories + b.categories)) or ["cs.LG"],
                url=f"https://arxiv.org/abs/{number}",
                upvotes=int(rng.paretovariate(1.2)) - 1,
                published=today - timedelta(days=rng.choice([0, 0, 1])),
            )
        )
    return papers


def _halves(first: list[str], second: list[str], sep: str) -> str:
    """The first half of one text's pieces and the second half of another's."""
    return sep.join(first[: max(1, len(first) // 2)] + second[len(second) // 2 :])


def _sentences(text: str) -> list[str]:
    return [s for s in re.split(r"(?<=[.!?])\s+", text) if s]


# The server --------------------------------------------------------------------------------


@contextmanager
def served(var_dir: Path, port: int) -> Iterator[str]:
    """`newsletter web` in a subprocess on `port`; yields its base URL, stops it after."""
    env = {
        **os.environ,
        "NEWSLETTER_VAR_DIR": str(var_dir),
        "NEWSLETTER_SECRET_KEY": "bench",
        "NEWSLETTER_BASE_URL": f"http://127.0.0.1:{port}",
        "NEWSLETTER_SOURCES": "hf_daily",
        "NEWSLETTER_SIGNUP_RATE_PER_HOUR": str(10**9),
        "NEWSLETTER_TRUSTED_PROXIES": "127.0.0.1",
    }
    command = [sys.executable, "-m", "newsletter", "web", "--host", "127.0.0.1"]
    log = var_dir.parent / "server.log"  # its access log would drown the figures
    with log.open("wb") as out:
        server = subprocess.Popen(
            [*command, "--port", str(port)], cwd=var_dir.parent, env=env, stdout=out, stderr=out
        )
    try:
        try:
            wait_for_port(port, timeout=60)
        except TimeoutError:
            sys.exit(f"the server did not start:\n{log.read_text(errors='replace')[-2000:]}")
        yield f"http://127.0.0.1:{port}"
    finally:
        server.terminate()
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


# Clients -----------------------------------------------------------------------------------


@dataclass
class Phase:
    """One path under concurrent clients: each request's seconds, the phase's wall time."""

    name: str
    seconds: list[float]
    wall: float
    failures: list[str]
    most_in_flight: int  # requests sent and not yet answered, at most

    def p(self, share: float) -> float:
        ordered = sorted(self.seconds)
        return ordered[min(len(ordered) - 1, int(len(ordered) * share))] * 1000

    def line(self) -> str:
        median = statistics.median(self.seconds) * 1000
        return (
            f"{self.name:<9} p50 {median:6.1f} ms   p95 {self.p(0.95):6.1f} ms   "
            f"max {max(self.seconds) * 1000:6.1f} ms   {len(self.seconds) / self.wall:6.0f} req/s"
            f"   ({self.most_in_flight} at once)"
        )


Request = Callable[[httpx.AsyncClient, int], Awaitable[httpx.Response]]


async def drive(
    base: str, name: str, count: int, clients: int, send: Request, expect: int = 200
) -> Phase:
    """`count` requests made by `clients` clients at once, each its own connection."""
    numbers = iter(range(count))
    seconds: list[float] = []
    failures: list[str] = []
    in_flight = [0, 0]  # now, most

    async def client() -> None:
        async with httpx.AsyncClient(base_url=base, timeout=60) as http:
            for number in numbers:  # shared: each request is sent by one client
                in_flight[0] += 1
                in_flight[1] = max(in_flight)
                start = time.perf_counter()
                response = await send(http, number)
                seconds.append(time.perf_counter() - start)
                in_flight[0] -= 1
                if response.status_code != expect:
                    failures.append(f"{name} #{number}: {response.status_code}")

    start = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(clients)))
    return Phase(name, seconds, time.perf_counter() - start, failures, in_flight[1])


def reader(number: int) -> dict[str, str]:
    """The headers of reader `number`: an address of its own, behind the trusted proxy."""
    return {"x-forwarded-for": f"10.{number // 65536 % 256}.{number // 256 % 256}.{number % 256}"}


async def run_clients(
    base: str, keywords: Sequence[str], requests: int, clients: int
) -> list[Phase]:
    async def healthz(http: httpx.AsyncClient, number: int) -> httpx.Response:
        return await http.get("/healthz", headers=reader(number))

    async def preview(http: httpx.AsyncClient, number: int) -> httpx.Response:
        params = {"keywords": keywords[number % len(keywords)]}
        return await http.get("/preview/results", params=params, headers=reader(number))

    async def signup(http: httpx.AsyncClient, number: int) -> httpx.Response:
        page = await http.get("/", headers=reader(number))  # a reader opens the form first
        token = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
        form = {
            "csrf_token": token[1] if token else "",
            "email": f"reader{number}@example.org",
            "keywords": keywords[number % len(keywords)],
            "send_hour": "7",
            "timezone": "Europe/Paris",
            "digest_size": "10",
        }
        return await http.post("/", data=form, headers=reader(number))

    await drive(base, "warm-up", clients, clients, preview)  # the index, the templates
    return [
        await drive(base, "healthz", requests, clients, healthz),
        await drive(base, "preview", requests, clients, preview),
        await drive(base, "sign-up", requests, clients, signup),
    ]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, for a smoke run")
    parser.add_argument("--papers", type=int, default=1500)
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--preview-p95", type=float, default=PREVIEW_P95_MS, help="target, ms")
    parser.add_argument("--signup-p95", type=float, default=SIGNUP_P95_MS, help="target, ms")
    args = parser.parse_args(argv)
    papers, requests = (200, 40) if args.quick else (args.papers, args.requests)
    if min(papers, requests, args.clients) < 1:
        parser.error("--papers, --requests and --clients must be at least 1")
    rng = random.Random(args.seed)
    day = distinct_papers(papers, rng)
    keywords = synth.synthesize_profiles(max(requests, 1), synth.vocabulary(day), rng)

    with tempfile.TemporaryDirectory() as directory:
        var_dir = Path(directory) / "var"
        settings = load_settings(var_dir=var_dir, secret_key="bench", sources="hf_daily")
        db = Database(settings)
        db.upgrade()
        with db.session() as session:
            storage.upsert_papers(session, day, storage.utcnow())
        recent = RecentPapers(db, settings)
        builds = []
        for _ in range(3 if args.quick else 5):
            recent.invalidate()
            start = time.perf_counter()
            recent.exact(storage.utcnow())
            builds.append(time.perf_counter() - start)
        db.dispose()
        with served(var_dir, free_port()) as base:
            phases = asyncio.run(run_clients(base, keywords, requests, args.clients))
        outbox = len(list((var_dir / "outbox").glob("*.eml")))

    print(
        f"{papers:,} distinct papers; {requests:,} requests per path from {args.clients} clients "
        f"at once; load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores"
    )
    print(f"index build   median {statistics.median(builds):.2f} s, best {min(builds):.2f} s")
    for phase in phases:
        print(phase.line())
    by_name = {phase.name: phase for phase in phases}
    failures = [f for phase in phases for f in phase.failures]
    missed = [f"{len(failures)} unexpected responses, first: {failures[0]}"] if failures else []
    for name, target in (("preview", args.preview_p95), ("sign-up", args.signup_p95)):
        p95 = by_name[name].p(0.95)
        verdict = "ok" if p95 <= target else "MISSED"
        print(f"{name:<9} p95 target <= {target:.0f} ms: {verdict}")
        if p95 > target:
            missed.append(f"{name} p95 {p95:.0f} ms")
    print(f"preview throughput: {_ratio(by_name):.0%} of healthz's (the server's floor)")
    print(f"confirmation mails in the outbox: {outbox:,} (sent in the background)")
    for miss in missed:
        print(f"target missed: {miss}")
    return 1 if missed else 0


def _ratio(by_name: dict[str, Phase]) -> float:
    """Preview throughput as a share of the server's floor (healthz), same clients."""
    return by_name["healthz"].wall / by_name["preview"].wall


if __name__ == "__main__":
    sys.exit(main())
