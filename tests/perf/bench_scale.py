"""Benchmark: a whole day in distributed mode, with one worker and then two, each its own host.

100,000 subscribers and 1,000 papers on PostgreSQL and Redis: plan_editions lists the due
subscribers and queues plan_shard tasks, which any worker ranks and writes, fanning out
deliver_batch tasks as each commits; the workers render and send every digest to a Postfix
smtp-sink. A worker stands for one host: it runs as the compose file runs it (a pool of
`--concurrency` processes) in a cgroup that gives it `--cpu-per-worker` cores, capped and
reserved, so two workers have twice the CPU of one, whatever else the machine runs; PostgreSQL,
Redis and smtp-sink (other hosts, in a deployment) are reserved the CPU they need in both
runs (`--cpu-services` caps them), so neither run waits on a database the other jobs slow.
The one-worker baseline runs at each
pool size in `--baseline-concurrency` and the best of them counts; two workers run at that
pool size.

Prints, for each run, the wall time from queueing the plan to the last digest accepted, the
plan's share of it (until the last shard's rows were written; sending goes on meanwhile),
digests/s overall and after the plan (the digests sent after the plan over the time after
it), and the CPU seconds of each process; then the ratio two workers / one. Papers and
profiles are synthesized as in bench_ranking.py.

Needs redis-server, PostgreSQL, Postfix (`apt-get install -y redis-server postgresql
postfix`) and a writable cgroup cpu controller (root; `--cpu-per-worker 0` runs without one).
Target: two workers >= 1.9 x one on the whole run; exits 1 when missed.

    .venv/bin/python tests/perf/bench_scale.py                 # 100,000 subscribers
    .venv/bin/python tests/perf/bench_scale.py --subscribers 20000
    .venv/bin/python tests/perf/bench_scale.py --quick         # 5,000 subscribers
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
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


TARGET = 1.9  # two workers / one, on the whole run


@dataclass
class Run:
    """One day's figures: wall time, the plan's part of it, digests, CPU seconds by process."""

    workers: int
    concurrency: int
    wall: float = 0.0
    plan: float = 0.0
    digests: int = 0
    sent_during_plan: int = 0  # digests already accepted when the plan's last row was written
    skipped: int = 0
    cpu: dict[str, float] = field(default_factory=dict)
    pools: dict[int, list[float]] = field(default_factory=dict)  # worker -> each pool process

    @property
    def rate(self) -> float:
        """Digests a second over the whole run."""
        return self.digests / self.wall if self.wall else 0.0

    @property
    def deliver_rate(self) -> float:
        """Digests a second after the plan: those sent after it, over the time after it."""
        after = self.wall - self.plan
        return (self.digests - self.sent_during_plan) / after if after > 0 else 0.0

    @property
    def plan_share(self) -> float:
        return self.plan / self.wall if self.wall else 0.0


def verdict(baseline: Run, scaled: Run) -> tuple[float, bool]:
    """The ratio two workers / one on the whole run, and whether it meets the target."""
    ratio = baseline.wall / scaled.wall if scaled.wall else 0.0
    return ratio, ratio >= TARGET


class CpuBudget:
    """A cgroup holding its processes to `cores` CPUs, as a host of that size would.

    Capped (a CFS quota) and reserved (eight times a process's weight): on a machine that
    other jobs share, the processes get their cores, no more and not much less, so the runs
    compare the code rather than what else ran meanwhile.
    """

    def __init__(self, name: str, cores: float) -> None:
        unified = Path("/sys/fs/cgroup")
        quota = int(cores * 100_000) if cores else -1  # 0 cores: reserved, not capped
        if "cpu" in _read(unified / "cgroup.controllers").split():
            self.path = unified / name
            self.path.mkdir()
            (self.path / "cpu.max").write_text(f"{quota if quota > 0 else 'max'} 100000")
            (self.path / "cpu.weight").write_text("800")
        else:
            self.path = Path("/sys/fs/cgroup/cpu") / name
            self.path.mkdir()
            (self.path / "cpu.cfs_period_us").write_text("100000")
            (self.path / "cpu.cfs_quota_us").write_text(str(quota))
            (self.path / "cpu.shares").write_text(str(8 * 1024))

    def add(self, pid: int) -> None:
        """Move a process (and so every process it forks from now on) into the budget."""
        with suppress(ProcessLookupError):
            (self.path / "cgroup.procs").write_text(str(pid))

    def add_tree(self, pid: int) -> None:
        """Move a process and the children it already has."""
        self.add(pid)
        with suppress(psutil.NoSuchProcess):
            for child in psutil.Process(pid).children(recursive=True):
                self.add(child.pid)

    def close(self) -> None:
        """Remove the cgroup once its processes have gone."""
        for _ in range(50):
            try:
                self.path.rmdir()
                return
            except OSError:
                time.sleep(0.1)


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except OSError:
        return ""


def check_budgets() -> str | None:
    """Why no CPU budget can be made here, or None."""
    try:
        budget = CpuBudget(f"bench-scale-probe-{os.getpid()}", 0.5)
    except OSError as exc:
        return f"cannot make a cgroup with a CPU quota ({exc}); run as root, or --cpu-per-worker 0"
    budget.close()
    return None


def seed(db: Database, subscribers: int, papers: int, rng: random.Random) -> None:
    """Papers collected now and active subscribers due now, written in bulk."""
    made = synth.synthesize_papers(papers, rng)
    pipeline.load_papers(db, made, source="hf_daily", url="bench:synthetic")
    vocabulary = synth.vocabulary(made)
    now = storage.utcnow()
    step = 100_000  # profiles made at a time: a million would not need to be held at once
    for first in range(0, subscribers, step):
        profiles = synth.synthesize_profiles(min(step, subscribers - first), vocabulary, rng)
        rows = [
            {
                "email": f"reader{first + n}@example.org",
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
    workers: int,
    concurrency: int,
    args: argparse.Namespace,
    pg: Any,
    redis: Any,
    sink: Any,
    log_dir: Path,
) -> Run:
    """A fresh database seeded with the day, `workers` workers started, the day measured."""
    name = f"{workers}x{concurrency}"
    url = pg.create_database()
    values = {
        "var_dir": log_dir / f"var{name}",
        "database_url": url,
        "redis_url": redis.url,
        "smtp_url": f"smtp://127.0.0.1:{sink[0]}",
        "secret_key": "bench",
        "sources": "hf_daily",
        "batch_size": args.batch_size,
        "plan_shard_size": args.shard_size,
    }
    settings = load_settings(**values)
    db = Database(settings)
    db.upgrade()
    seed(db, args.subscribers, args.papers, random.Random(7))
    client = redis.client()
    client.flushall()
    client.close()
    env = newsletter_env(**values)
    budgets: list[CpuBudget] = []
    processes = []
    try:
        for n in range(1, workers + 1):
            process = CeleryProcess(
                f"w{n}-of-{name}", worker_args(f"w{n}", concurrency), env, log_dir
            )
            processes.append(process)
            if args.cpu_per_worker:
                budgets.append(
                    CpuBudget(f"bench-scale-{os.getpid()}-{name}-w{n}", args.cpu_per_worker)
                )
                budgets[-1].add(process.pid)  # before it forks its pool
        for process, budget in zip(processes, budgets or [None] * workers, strict=True):
            process.wait_for("ready.", timeout=60)
            if budget is not None:  # any pool process forked before the move, too
                budget.add_tree(process.pid)
        run = measure(workers, concurrency, settings, db, processes, pg, redis, sink[1], args)
    finally:
        for process in processes:
            process.stop()
        for budget in budgets:
            budget.close()
        db.dispose()
    return run


def measure(
    workers: int,
    concurrency: int,
    settings: Any,
    db: Database,
    processes: list[Any],
    pg: Any,
    redis: Any,
    sink: psutil.Process,
    args: argparse.Namespace,
) -> Run:
    """Queue the plan, then poll the ledger until every digest is settled."""
    from workers.celery_app import make_app

    groups = {f"worker {n}": [psutil.Process(p.pid)] for n, p in enumerate(processes, start=1)}
    groups.update(
        {
            "postgres": [psutil.Process(int(pg.pid()))],
            "smtp-sink": [sink],
            "redis": [psutil.Process(redis.process.pid)],
        }
    )
    script = psutil.Process()  # alone: the workers are its children
    before = {name: cpu_seconds(group) for name, group in groups.items()}
    before["this script"] = sum(script.cpu_times()[:2])
    busy_before = machine_busy()
    pools = {n: pool_processes(p) for n, p in enumerate(processes, start=1)}
    app = make_app(settings)
    run = Run(workers, concurrency)
    started = time.perf_counter()
    app.send_task("workers.tasks.plan_editions")
    while True:
        time.sleep(args.poll)
        counts = states(db)
        if not run.plan and sum(counts.values()) >= args.subscribers:
            run.plan = time.perf_counter() - started
            run.sent_during_plan = counts.get(SENT, 0)
        if sum(counts.get(s, 0) for s in DONE) >= args.subscribers:
            break
    run.wall = time.perf_counter() - started
    app.close()
    pool_cpu = {n: [cpu_seconds([p]) for p in ps] for n, ps in pools.items()}
    run.cpu = {name: cpu_seconds(group) - before[name] for name, group in groups.items()}
    run.cpu["this script"] = sum(script.cpu_times()[:2]) - before["this script"]
    # The kernel's share (loopback traffic: ~4 GB of mail) and whatever else ran meanwhile.
    run.cpu["kernel and other"] = max(0.0, machine_busy() - busy_before - sum(run.cpu.values()))
    run.pools = pool_cpu
    run.digests, run.skipped = counts.get(SENT, 0), counts.get(SKIPPED, 0)
    return run


def pool_processes(process: Any) -> list[psutil.Process]:
    try:
        return psutil.Process(process.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []


def report(run: Run) -> None:
    cpu = ", ".join(f"{name} {seconds:.0f} s" for name, seconds in run.cpu.items())
    print(
        f"{run.workers} worker(s) x {run.concurrency} processes: {run.wall:6.1f} s wall, plan "
        f"{run.plan:.1f} s ({run.plan_share:.0%} of the run), {run.digests} digests "
        f"({run.skipped} with no match): {run.rate:6.0f} digests/s overall, "
        f"{run.deliver_rate:6.0f}/s after the plan ({run.sent_during_plan} sent during it)\n"
        f"    CPU: {cpu}",
        flush=True,
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="5,000 subscribers")
    parser.add_argument("--subscribers", type=int, default=100_000)
    parser.add_argument("--papers", type=int, default=1000)
    parser.add_argument("--batch-size", type=int, default=200)
    parser.add_argument("--shard-size", type=int, default=5000, help="NEWSLETTER_PLAN_SHARD_SIZE")
    parser.add_argument("--concurrency", type=int, default=None, help="skip the baseline's search")
    parser.add_argument(
        "--baseline-concurrency", default="1,2", help="pool sizes tried for the one worker"
    )
    parser.add_argument(
        "--cpu-per-worker", type=float, default=0.5, help="cores of each worker's host (0: no cap)"
    )
    parser.add_argument(
        "--cpu-services",
        type=float,
        default=0.0,
        help="cores of PostgreSQL, Redis and smtp-sink (0: as many as they need, reserved)",
    )
    parser.add_argument("--poll", type=float, default=0.5, help="seconds between ledger reads")
    args = parser.parse_args(argv)
    if args.quick:
        args.subscribers = min(args.subscribers, 5000)
    for tool in ("redis-server",):
        if shutil.which(tool) is None:
            sys.exit(f"{tool} is missing: apt-get install -y redis-server")
    bin_dir = postgres_bin_dir()
    if bin_dir is None:
        sys.exit("PostgreSQL is missing: apt-get install -y postgresql")
    if args.cpu_per_worker and (why := check_budgets()):
        sys.exit(why)
    tried = (
        [args.concurrency]
        if args.concurrency
        else [int(n) for n in args.baseline_concurrency.split(",")]
    )
    budget = (
        f"{args.cpu_per_worker} cores each, the services {args.cpu_services or 'uncapped'}"
        if args.cpu_per_worker
        else "no CPU cap"
    )
    print(
        f"{args.subscribers} subscribers, {args.papers} papers, shards of {args.shard_size}, "
        f"batches of {args.batch_size}; workers: {budget}; {os.cpu_count()} CPUs, load "
        f"{os.getloadavg()[0]:.1f}",
        flush=True,
    )
    log_dir = Path(tempfile.mkdtemp(prefix="bench-scale-"))
    pg = PostgresServer(bin_dir, durable=True)
    redis = RedisServer(log_dir)
    pg.start()
    redis.start()
    baselines: list[Run] = []
    services = None
    try:
        with smtp_sink() as sink:
            if args.cpu_per_worker:  # the database, the broker and the relay: other hosts
                services = CpuBudget(f"bench-scale-{os.getpid()}-services", args.cpu_services)
                for pid in (int(pg.pid()), redis.process.pid, sink[1].pid):
                    services.add_tree(pid)
            for concurrency in tried:
                baselines.append(run_day(1, concurrency, args, pg, redis, sink, log_dir))
                report(baselines[-1])
            baseline = min(baselines, key=lambda run: run.wall)
            scaled = run_day(2, baseline.concurrency, args, pg, redis, sink, log_dir)
            report(scaled)
    finally:
        redis.stop()
        pg.stop()
        if services is not None:
            services.close()
    for run in (baseline, scaled):
        pools = "; ".join(
            f"worker {n}: " + ", ".join(f"{cpu:.0f} s" for cpu in each)
            for n, each in run.pools.items()
        )
        print(f"each pool process's CPU since it started, {run.workers} worker(s): {pools}")
    ratio, met = verdict(baseline, scaled)
    print(
        f"two workers / the best one ({baseline.concurrency} processes): {ratio:.2f} x on the "
        f"whole run (target >= {TARGET}), {scaled.deliver_rate / baseline.deliver_rate:.2f} x "
        f"after the plan; plan {baseline.plan_share:.0%} and {scaled.plan_share:.0%} of the run"
    )
    shutil.rmtree(log_dir, ignore_errors=True)
    if not met:
        print(f"MISSED: {ratio:.2f} x < {TARGET} x", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
