"""Benchmark: a whole day in distributed mode, with one worker process and then two.

100,000 subscribers and 1,000 papers on PostgreSQL and Redis: plan_editions ranks every
subscriber and fans out deliver_batch tasks; the workers render and send every digest to a
Postfix smtp-sink. Prints, for each worker count, the wall time from queueing the plan to the
last digest accepted, the plan's share, digests/s and the CPU seconds each process spent; then
the ratio two workers / one. Papers and profiles are synthesized as in bench_ranking.py.

Needs redis-server, PostgreSQL and Postfix (`apt-get install -y redis-server postgresql
postfix`). Targets: two workers >= 1.6 x one; 100,000 subscribers in <= 3 minutes.

    .venv/bin/python tests/perf/bench_scale.py            # 100,000 subscribers, 1,000 papers
    .venv/bin/python tests/perf/bench_scale.py --quick    # 5,000 subscribers
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import psutil
from sqlalchemy import func, insert, select

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from newsletter import pipeline, storage  # noqa: E402
from newsletter.config import load_settings  # noqa: E402
from newsletter.db import Database  # noqa: E402
from newsletter.models import ACTIVE, FAILED, SENT, SKIPPED, Delivery, Subscriber  # noqa: E402
from tests.support.celery import CeleryProcess, newsletter_env, worker_args  # noqa: E402
from tests.support.net import free_port, wait_for_port  # noqa: E402
from tests.support.postgres import PostgresServer, postgres_bin_dir  # noqa: E402
from tests.support.redis import RedisServer  # noqa: E402

SINK = "/usr/sbin/smtp-sink"
DONE = (SENT, SKIPPED, FAILED)


def load(path: Path, name: str) -> ModuleType:
    """A test helper module by path (tests/ is not a package)."""
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


synth = load(ROOT / "tests" / "perf" / "bench_ranking.py", "bench_ranking_synth")


@contextmanager
def smtp_sink() -> Iterator[tuple[int, psutil.Process]]:
    """Postfix's smtp-sink on a free port, accepting everything with a backlog of 1000."""
    if not Path(SINK).exists():
        sys.exit(f"{SINK} is missing: apt-get install -y postfix")
    port = free_port()
    user = ["-u", "nobody"] if os.geteuid() == 0 else []  # it will not run as root
    process = subprocess.Popen(
        [SINK, *user, "-c", f"127.0.0.1:{port}", "1000"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for_port(port)
        yield port, psutil.Process(process.pid)
    finally:
        process.terminate()
        process.wait(timeout=10)


@dataclass
class Run:
    workers: int
    wall: float = 0.0
    plan: float = 0.0
    digests: int = 0
    skipped: int = 0
    cpu: dict[str, float] = field(default_factory=dict)

    @property
    def rate(self) -> float:
        return self.digests / self.wall if self.wall else 0.0

    @property
    def deliver_rate(self) -> float:
        return self.digests / (self.wall - self.plan) if self.wall > self.plan else 0.0


def seed(db: Database, subscribers: int, papers: int, rng: random.Random) -> None:
    """Papers collected now and active subscribers due now, written in bulk."""
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


def states(db: Database) -> dict[str, int]:
    with db.session() as session:
        rows = session.execute(select(Delivery.state, func.count()).group_by(Delivery.state))
        return {state: count for state, count in rows}


def cpu_seconds(processes: Sequence[psutil.Process]) -> float:
    total = 0.0
    for process in processes:
        try:
            for each in [process, *process.children(recursive=True)]:
                times = each.cpu_times()
                total += times.user + times.system
        except psutil.NoSuchProcess:
            pass
    return total


def machine_busy() -> float:
    """CPU seconds the whole machine has spent on anything but idling, since boot."""
    times = psutil.cpu_times()
    return sum(times) - times.idle - getattr(times, "iowait", 0.0)


def run_day(
    workers: int, args: argparse.Namespace, pg: Any, redis: Any, sink: Any, log_dir: Path
) -> Run:
    url = pg.create_database()
    values = {
        "var_dir": log_dir / f"var{workers}",
        "database_url": url,
        "redis_url": redis.url,
        "smtp_url": f"smtp://127.0.0.1:{sink[0]}",
        "secret_key": "bench",
        "sources": "hf_daily",
        "batch_size": args.batch_size,
    }
    settings = load_settings(**values)
    db = Database(settings)
    db.upgrade()
    seed(db, args.subscribers, args.papers, random.Random(7))
    client = redis.client()
    client.flushall()
    client.close()
    env = newsletter_env(**values)
    processes = [
        CeleryProcess(f"w{n}-of-{workers}", worker_args(f"w{n}"), env, log_dir)
        for n in range(1, workers + 1)
    ]
    try:
        for process in processes:
            process.wait_for("ready.", timeout=60)
        run = measure(workers, settings, db, processes, pg, redis, sink[1], args.subscribers)
    finally:
        for process in processes:
            process.stop()
        db.dispose()
    return run


def measure(
    workers: int,
    settings: Any,
    db: Database,
    processes: list[Any],
    pg: Any,
    redis: Any,
    sink: psutil.Process,
    subscribers: int,
) -> Run:
    from workers.celery_app import make_app

    groups = {
        "workers": [psutil.Process(p.pid) for p in processes],
        "postgres": [psutil.Process(int(pg.pid()))],
        "smtp-sink": [sink],
        "redis": [psutil.Process(redis.process.pid)],
    }
    script = psutil.Process()  # alone: the workers are its children
    before = {name: cpu_seconds(group) for name, group in groups.items()}
    before["this script"] = sum(script.cpu_times()[:2])
    busy_before = machine_busy()
    app = make_app(settings)
    run = Run(workers)
    started = time.perf_counter()
    app.send_task("workers.tasks.plan_editions")
    while True:
        time.sleep(0.25)
        counts = states(db)
        if not run.plan and sum(counts.values()) >= subscribers:
            run.plan = time.perf_counter() - started
        if sum(counts.get(s, 0) for s in DONE) >= subscribers:
            break
    run.wall = time.perf_counter() - started
    app.close()
    run.cpu = {name: cpu_seconds(group) - before[name] for name, group in groups.items()}
    run.cpu["this script"] = sum(script.cpu_times()[:2]) - before["this script"]
    # The kernel's share (loopback traffic: ~4 GB of mail) and whatever else ran meanwhile.
    run.cpu["kernel and other"] = max(0.0, machine_busy() - busy_before - sum(run.cpu.values()))
    run.digests, run.skipped = counts.get(SENT, 0), counts.get(SKIPPED, 0)
    plan_log = re.findall(
        r"plan_editions\[[^]]+\] succeeded in ([\d.]+)s", "".join(p.log() for p in processes)
    )
    if plan_log:
        run.plan = float(plan_log[0])
    return run


def report(run: Run) -> None:
    cpu = ", ".join(f"{name} {seconds:.0f} s" for name, seconds in run.cpu.items())
    print(
        f"{run.workers} worker(s): {run.wall:6.1f} s wall (plan {run.plan:.1f} s), "
        f"{run.digests} digests ({run.skipped} with no match): {run.rate:6.0f} digests/s "
        f"overall, {run.deliver_rate:6.0f}/s after the plan; CPU: {cpu}",
        flush=True,
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="5,000 subscribers")
    parser.add_argument("--subscribers", type=int, default=100_000)
    parser.add_argument("--papers", type=int, default=1000)
    parser.add_argument("--batch-size", type=int, default=200)
    parser.add_argument("--workers", default="1,2", help="worker counts to run, e.g. 1,2")
    args = parser.parse_args(argv)
    if args.quick:
        args.subscribers = min(args.subscribers, 5000)
    for tool in ("redis-server",):
        if shutil.which(tool) is None:
            sys.exit(f"{tool} is missing: apt-get install -y redis-server")
    bin_dir = postgres_bin_dir()
    if bin_dir is None:
        sys.exit("PostgreSQL is missing: apt-get install -y postgresql")
    counts = [int(n) for n in args.workers.split(",")]
    print(
        f"{args.subscribers} subscribers, {args.papers} papers, batches of {args.batch_size}, "
        f"{os.cpu_count()} CPUs",
        flush=True,
    )
    log_dir = Path(tempfile.mkdtemp(prefix="bench-scale-"))
    pg = PostgresServer(bin_dir, durable=True)
    redis = RedisServer(log_dir)
    pg.start()
    redis.start()
    runs = []
    try:
        with smtp_sink() as sink:
            for workers in counts:
                runs.append(run_day(workers, args, pg, redis, sink, log_dir))
                report(runs[-1])
    finally:
        redis.stop()
        pg.stop()
    if len(runs) == 2:
        ratio = runs[0].wall / runs[1].wall
        print(
            f"two workers / one: {ratio:.2f} x on the whole run (target >= 1.6), "
            f"{runs[1].deliver_rate / runs[0].deliver_rate:.2f} x after the plan"
        )
    best = min(run.wall for run in runs)
    print(f"whole run for {args.subscribers}: {best:.0f} s (target <= 180 s for 100,000)")
    shutil.rmtree(log_dir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
