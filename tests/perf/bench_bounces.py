"""Benchmark: hard bounces arriving by webhook while a send runs are suppressed before the next one.

Two sends of the same N digests (same subscribers, same papers, each on a fresh SQLite
database in embedded mode) into Postfix's smtp-sink: the first alone, the second while the web
app runs (uvicorn, a real HTTP port) and a thread POSTs a hard-bounce webhook
(/webhooks/generic) for 2% of the recipients, each soon after its digest is accepted, as a
provider would. Prints digests/s for both and their ratio; then plans the next edition and
checks that every bounced subscriber is `bouncing`, on the suppression list and not planned.
Exits non-zero if one is not, or if the send with webhooks is slower than --min-ratio.

Needs Postfix's smtp-sink (`apt-get install -y postfix`).

    .venv/bin/python tests/perf/bench_bounces.py                      # 20,000 subscribers
    .venv/bin/python tests/perf/bench_bounces.py --subscribers 2000   # a quick run
"""

from __future__ import annotations

import argparse
import importlib.util
import random
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from types import ModuleType

import httpx
from sqlalchemy import insert, select

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from newsletter import pipeline, storage  # noqa: E402
from newsletter.bounces.events import is_suppressed  # noqa: E402
from newsletter.config import Settings, load_settings  # noqa: E402
from newsletter.db import Database  # noqa: E402
from newsletter.models import ACTIVE, BOUNCING, PLANNED, SENT, Delivery, Subscriber  # noqa: E402

SECRET = "bench-webhook-secret-0123456789"
BOUNCE_SHARE = 0.02


def load(path: Path, name: str) -> ModuleType:
    """A benchmark module by path (tests/ is not a package)."""
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


synth = load(ROOT / "tests" / "perf" / "bench_ranking.py", "bench_ranking_synth")
delivery = load(ROOT / "tests" / "perf" / "bench_delivery.py", "bench_delivery_sink")


def make_settings(var_dir: Path, sink_port: int, web_port: int, batch: int) -> Settings:
    return load_settings(
        var_dir=var_dir,
        secret_key="bench",
        sources="hf_daily",
        smtp_url=f"smtp://127.0.0.1:{sink_port}",
        base_url=f"http://127.0.0.1:{web_port}",
        from_address="Paper Digest <digest@news.example.org>",
        batch_size=batch,
        webhook_generic_secret=SECRET,
    )


def seed(db: Database, subscribers: int, papers: int) -> None:
    """Papers collected now and active subscribers due now (the same for every pass)."""
    rng = random.Random(7)
    made = synth.synthesize_papers(papers, rng)
    pipeline.load_papers(db, made, source="hf_daily", url="bench:synthetic")
    profiles = synth.synthesize_profiles(subscribers, synth.vocabulary(made), rng)
    now = storage.utcnow()
    rows = [
        {
            "email": f"reader{n}@example.org",
            "state": ACTIVE,
            "keywords": text,
            "timezone": "UTC",
            "send_hour": 0,
            "digest_size": 10,
            "show_trending": True,
            "hard_failures": 0,
            "created_at": now,
            "confirmed_at": now,
        }
        for n, text in enumerate(profiles)
    ]
    with db.session() as session:
        for start in range(0, len(rows), 10_000):
            session.execute(insert(Subscriber), rows[start : start + 10_000])


@dataclass
class Bouncer:
    """Posts a hard bounce for each chosen recipient once its digest is sent."""

    db: Database
    url: str
    chosen: dict[int, str]  # subscriber id -> address
    posted: set[int] = field(default_factory=set)
    refused: list[str] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)
    latencies: list[float] = field(default_factory=list)

    def run(self) -> None:
        with httpx.Client(timeout=30, headers={"authorization": f"Bearer {SECRET}"}) as client:
            while True:
                done = self.stop.is_set()  # read first: one more sweep after the send ends
                for subscriber_id in self._sent_not_posted():
                    started = time.perf_counter()
                    response = client.post(
                        self.url,
                        json={
                            "email": self.chosen[subscriber_id],
                            "kind": "hard",
                            "reason": "smtp; 550 5.1.1 user unknown",
                            "id": f"bench-{subscriber_id}",
                        },
                    )
                    self.latencies.append(time.perf_counter() - started)
                    if response.status_code != 200:
                        self.refused.append(
                            f"{subscriber_id}: {response.status_code} {response.text}"
                        )
                    self.posted.add(subscriber_id)
                if done:
                    return
                time.sleep(0.2)

    def _sent_not_posted(self) -> list[int]:
        waiting = [s for s in self.chosen if s not in self.posted]
        if not waiting:
            return []
        with self.db.session() as session:
            return list(
                session.scalars(
                    select(Delivery.subscriber_id).where(
                        Delivery.state == SENT, Delivery.subscriber_id.in_(waiting)
                    )
                )
            )


def serve(settings: Settings, db: Database, port: int):  # type: ignore[no-untyped-def]
    """The web app on a real port, in a thread; returns the uvicorn server."""
    import uvicorn

    from newsletter.web.app import create_app

    server = uvicorn.Server(
        uvicorn.Config(create_app(settings, db), host="127.0.0.1", port=port, log_level="warning")
    )
    threading.Thread(target=server.run, daemon=True).start()
    deadline = time.monotonic() + 20
    while not server.started:
        if time.monotonic() > deadline:
            raise RuntimeError("the web app did not start")
        time.sleep(0.05)
    return server


def one_pass(
    folder: Path, args: argparse.Namespace, sink_port: int, webhooks: bool
) -> tuple[float, int, list[str]]:
    """(seconds to deliver, digests sent, problems) for one send, with or without webhooks."""
    web_port = delivery.free_port()
    settings = make_settings(folder, sink_port, web_port, args.batch)
    db = Database(settings)
    db.upgrade()
    seed(db, args.subscribers, args.papers)
    pipeline.plan(db, settings)
    with db.session() as session:
        planned = list(
            session.execute(
                select(Subscriber.id, Subscriber.email)
                .join(Delivery, Delivery.subscriber_id == Subscriber.id)
                .where(Delivery.state == PLANNED)
                .order_by(Subscriber.id)
            )
        )
    rng = random.Random(11)
    chosen = dict(rng.sample(planned, max(1, round(BOUNCE_SHARE * len(planned)))))
    server = bouncer = thread = None
    if webhooks:
        server = serve(settings, db, web_port)
        bouncer = Bouncer(db, f"http://127.0.0.1:{web_port}/webhooks/generic", chosen)
        thread = threading.Thread(target=bouncer.run, daemon=True)
        thread.start()
    started = time.perf_counter()
    report = pipeline.deliver(db, settings)
    seconds = time.perf_counter() - started
    problems: list[str] = []
    if bouncer and thread and server:
        bouncer.stop.set()
        thread.join(timeout=120)
        problems += bouncer.refused
        latencies = sorted(bouncer.latencies) or [0.0]
        print(
            f"  webhooks: {len(bouncer.posted)} hard bounces posted, median "
            f"{1000 * latencies[len(latencies) // 2]:.1f} ms, max {1000 * latencies[-1]:.1f} ms",
            flush=True,
        )
        problems += check_next_plan(db, settings, chosen)
        server.should_exit = True
    db.dispose()
    return seconds, report.sent, problems


def check_next_plan(db: Database, settings: Settings, chosen: dict[int, str]) -> list[str]:
    """Every bounced subscriber bouncing, suppressed, and not in the next edition's plan."""
    problems = []
    tomorrow = storage.utcnow() + timedelta(days=1)
    pipeline.plan(db, settings, now=tomorrow)
    with db.session() as session:
        rows = session.execute(
            select(Subscriber.id, Subscriber.state).where(Subscriber.id.in_(chosen))
        )
        states = {subscriber_id: state for subscriber_id, state in rows}
        again = set(
            session.scalars(
                select(Delivery.subscriber_id).where(
                    Delivery.subscriber_id.in_(chosen), Delivery.created_at >= tomorrow
                )
            )
        )
        for subscriber_id, email in chosen.items():
            if states.get(subscriber_id) != BOUNCING:
                problems.append(f"subscriber {subscriber_id} is {states.get(subscriber_id)}")
            if not is_suppressed(session, settings, email):
                problems.append(f"{email} is not on the suppression list")
            if subscriber_id in again:
                problems.append(f"subscriber {subscriber_id} was planned for the next edition")
    print(
        f"  next plan: {len(chosen) - len(again)} of {len(chosen)} bounced subscribers left out",
        flush=True,
    )
    return problems


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subscribers", type=int, default=20_000)
    parser.add_argument("--papers", type=int, default=300)
    parser.add_argument("--batch", type=int, default=200, help="digests per SMTP connection")
    parser.add_argument(
        "--min-ratio", type=float, default=0.8, help="with/without throughput below this fails"
    )
    args = parser.parse_args(argv)
    rates = {}
    problems: list[str] = []
    with tempfile.TemporaryDirectory() as tmp, delivery.smtp_sink() as sink_port:
        for name, webhooks in (("without webhooks", False), ("with webhooks", True)):
            print(f"{name}:", flush=True)
            seconds, sent, found = one_pass(
                Path(tmp) / name.replace(" ", "-"), args, sink_port, webhooks
            )
            rates[name] = sent / seconds
            problems += found
            print(f"  {sent} digests in {seconds:.1f} s: {rates[name]:.0f} digests/s", flush=True)
    ratio = rates["with webhooks"] / rates["without webhooks"]
    print(f"throughput with/without webhooks: {ratio:.2f} (target >= {args.min_ratio})")
    if ratio < args.min_ratio:
        problems.append(f"the send with webhooks ran at {ratio:.2f} of the one without")
    for problem in problems[:20]:
        print(f"FAIL: {problem}")
    print("ok" if not problems else f"{len(problems)} problem(s)")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
