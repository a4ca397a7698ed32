"""Benchmark: the web app's hot paths, in process (starlette's TestClient, SQLite in WAL).

  preview   GET /preview/results as typed: index built once a minute, then ranking only
  index     building the preview index of a day's papers (once a minute at most)
  sign-up   POST / end to end: validation, subscriber row, signed link, .eml in the outbox

Papers are the bundled Hugging Face day, copied under new ids up to --papers (an arXiv day
of the default categories is ~1,500 papers).

    .venv/bin/python tests/perf/bench_web.py [--quick] [--papers N] [--requests N]
"""

from __future__ import annotations

import argparse
import re
import statistics
import tempfile
import time
import warnings
from dataclasses import replace
from pathlib import Path

from newsletter import pipeline, storage
from newsletter.config import load_settings
from newsletter.db import Database
from newsletter.sources import hf_daily
from newsletter.web.app import create_app
from newsletter.web.ratelimit import MemoryRateLimiter

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient

PROFILES = [
    "diffusion models",
    '"reinforcement learning", agents',
    "large language models, -medical",
    "cat:cs.CV, video generation",
    "author:Zhang, reasoning^2",
    'benchmark, "code generation", -survey',
]


def load_day(db: Database, count: int) -> None:
    day = list(hf_daily.parse(pipeline.DEMO_DATA.read_bytes()).papers)
    papers = [replace(day[i % len(day)], id=f"9999.{i:05d}") for i in range(count)]
    with db.session() as session:
        storage.upsert_papers(session, papers, storage.utcnow())


def percentiles(samples: list[float]) -> str:
    ms = sorted(s * 1000 for s in samples)
    p95 = ms[min(len(ms) - 1, int(len(ms) * 0.95))]
    return f"p50 {statistics.median(ms):6.1f} ms   p95 {p95:6.1f} ms   max {ms[-1]:6.1f} ms"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, for a smoke run")
    parser.add_argument("--papers", type=int, default=1500)
    parser.add_argument("--requests", type=int, default=300)
    args = parser.parse_args()
    papers, requests = (200, 30) if args.quick else (args.papers, args.requests)

    with tempfile.TemporaryDirectory() as directory:
        settings = load_settings(
            var_dir=Path(directory) / "var",
            secret_key="bench",
            sources="hf_daily",
            signup_rate_per_hour=10**9,
        )
        db = Database(settings)
        db.upgrade()
        load_day(db, papers)
        app = create_app(settings, db)
        web = app.state.web
        web.limiter = MemoryRateLimiter(clock=iter(range(0, 10**12, 3600)).__next__)
        with TestClient(app) as client:
            builds = []
            for _ in range(3 if args.quick else 5):
                web.papers.invalidate()
                start = time.perf_counter()
                web.papers.paper_ids(storage.utcnow())
                builds.append(time.perf_counter() - start)
            previews = []
            for number in range(requests):
                keywords = PROFILES[number % len(PROFILES)] + ("" if number < 6 else f", w{number}")
                start = time.perf_counter()
                response = client.get("/preview/results", params={"keywords": keywords})
                previews.append(time.perf_counter() - start)
                assert response.status_code == 200, response.text[:200]
            token = re.search(r'name="csrf_token" value="([^"]+)"', client.get("/").text)[1]
            signups = []
            for number in range(requests):
                form = {
                    "csrf_token": token,
                    "email": f"reader{number}@example.org",
                    "keywords": PROFILES[number % len(PROFILES)],
                    "send_hour": "7",
                    "timezone": "Europe/Paris",
                    "digest_size": "10",
                }
                start = time.perf_counter()
                response = client.post("/", data=form)
                signups.append(time.perf_counter() - start)
                assert response.status_code == 200, response.text[:200]
        db.dispose()

    print(f"papers in the preview index: {papers}; requests per path: {requests}")
    print(f"index build     {percentiles(builds)}")
    print(f"preview         {percentiles(previews)}   {len(previews) / sum(previews):6.0f} req/s")
    print(f"sign-up         {percentiles(signups)}   {len(signups) / sum(signups):6.0f} req/s")


if __name__ == "__main__":
    main()
