"""Simulation: plan a million subscribers in shards on PostgreSQL, as the workers would.

Seeds `--subscribers` synthetic subscribers (profiles and papers synthesized as in
bench_ranking.py), lists the shards as plan_editions does (pipeline.plan_shards: the due ids,
the papers' index built once and left in a shared store), then plans every shard with
pipeline.plan(subscribers=...) in `--processes` worker processes taking shards from one queue,
as Celery's pool processes take plan_shard tasks from the `plan` queue. Nothing is sent: this
measures the plan alone, ranking and database writes.

Prints the time per shard (median, 90th percentile, max; with its part in the database
write), the peak memory of each worker process, the ledger rows written per second, and the
CPU seconds of the workers and of PostgreSQL. Target (exits 1 when missed): every due
subscriber planned exactly once, and each worker process's peak memory below the workers'
recycle limit (`worker_max_memory_per_child`, 1 GB).

    .venv/bin/python tests/perf/sim_million.py                         # 1,000,000 x 1,000 papers
    .venv/bin/python tests/perf/sim_million.py --subscribers 50000     # a quick look
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import multiprocessing
import os
import random
import resource
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

import psutil
from sqlalchemy import func, select

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from newsletter import pipeline, storage  # noqa: E402
from newsletter.config import load_settings  # noqa: E402
from newsletter.db import Database  # noqa: E402
from newsletter.models import PLANNED, Delivery  # noqa: E402
from newsletter.ranker import RecentPapers, SharedIndexes  # noqa: E402
from tests.support.postgres import PostgresServer, postgres_bin_dir  # noqa: E402

MEMORY_LIMIT = 1_000_000 * 1024  # bytes: workers.celery_app's worker_max_memory_per_child


def load(path: Path, name: str) -> ModuleType:
    """A test helper module by path (tests/ is not a package)."""
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


class FileStore:
    """The shared index store in a directory (Redis, in the distributed mode)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def _path(self, key: str) -> Path:
        return self.directory / hashlib.sha256(key.encode()).hexdigest()

    def get(self, key: str) -> bytes | None:
        path = self._path(key)
        return path.read_bytes() if path.exists() else None

    def put(self, key: str, value: bytes) -> None:
        temporary = self._path(key).with_suffix(".tmp")
        temporary.write_bytes(value)
        temporary.replace(self._path(key))


def seed(db: Database, subscribers: int, papers: int, rng: random.Random) -> None:
    """The same day as bench_scale.py's: papers collected now, subscribers due now."""
    load(ROOT / "tests" / "perf" / "bench_scale.py", "bench_scale_seed").seed(
        db, subscribers, papers, rng
    )


# The worker processes -------------------------------------------------------------------------

_worker: dict[str, Any] = {}


def _start_worker(values: dict[str, Any], store: str) -> None:
    settings = load_settings(**values)
    db = Database(settings)
    shared = SharedIndexes(FileStore(Path(store)), settings.secret_key or "")
    writing = [0.0]
    insert_deliveries = storage.insert_deliveries

    def timed(*args: Any, **kwargs: Any) -> Any:  # the database write's part of a shard
        started = time.perf_counter()
        try:
            return insert_deliveries(*args, **kwargs)
        finally:
            writing[0] += time.perf_counter() - started

    storage.insert_deliveries = timed  # type: ignore[assignment]
    _worker.update(
        db=db, settings=settings, recent=RecentPapers(db, settings, shared=shared), write=writing
    )


def _plan_shard(job: tuple[int, int, str]) -> dict[str, Any]:
    first, last, planned_at = job
    from datetime import datetime

    writing = _worker["write"]
    writing[0] = 0.0
    started = time.perf_counter()
    cpu = time.process_time()
    report = pipeline.plan(
        _worker["db"],
        _worker["settings"],
        now=datetime.fromisoformat(planned_at),
        recent=_worker["recent"],
        subscribers=(first, last),
    )
    return {
        "pid": os.getpid(),
        "seconds": time.perf_counter() - started,
        "cpu": time.process_time() - cpu,
        "write": writing[0],
        "rows": report.planned + report.skipped,
        "peak": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
    }


# The run --------------------------------------------------------------------------------------


def postgres_cpu(pid: int) -> float:
    """The CPU seconds of the server: the postmaster, the backends alive and those it reaped."""
    root = psutil.Process(pid)
    times = root.cpu_times()
    total = times.user + times.system + times.children_user + times.children_system
    for child in root.children(recursive=True):
        try:
            times = child.cpu_times()
        except psutil.NoSuchProcess:
            continue
        total += times.user + times.system
    return total


def percentile(values: Sequence[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subscribers", type=int, default=1_000_000)
    parser.add_argument("--papers", type=int, default=1000)
    parser.add_argument("--shard-size", type=int, default=5000, help="NEWSLETTER_PLAN_SHARD_SIZE")
    parser.add_argument("--processes", type=int, default=2, help="worker processes planning")
    args = parser.parse_args(argv)
    bin_dir = postgres_bin_dir()
    if bin_dir is None:
        sys.exit("PostgreSQL is missing: apt-get install -y postgresql")
    work = Path(tempfile.mkdtemp(prefix="sim-million-"))
    (work / "store").mkdir()
    pg = PostgresServer(bin_dir, durable=True)
    pg.start()
    try:
        values = {
            "var_dir": work / "var",
            "database_url": pg.create_database(),
            "secret_key": "sim",
            "sources": "hf_daily",
            "plan_shard_size": args.shard_size,
        }
        settings = load_settings(**values)
        db = Database(settings)
        db.upgrade()
        started = time.perf_counter()
        seed(db, args.subscribers, args.papers, random.Random(7))
        print(
            f"seeded {args.subscribers:,} subscribers and {args.papers} papers in "
            f"{time.perf_counter() - started:.0f} s; {args.processes} worker processes, shards of "
            f"{args.shard_size:,}, {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}",
            flush=True,
        )
        now = storage.utcnow()
        pg_before = postgres_cpu(int(pg.pid()))
        started = time.perf_counter()
        shared = SharedIndexes(FileStore(work / "store"), "sim")
        coordinator = RecentPapers(db, settings, shared=shared)
        shards = pipeline.plan_shards(db, now=now, size=args.shard_size, recent=coordinator)
        listed = time.perf_counter() - started
        jobs = [(first, last, now.isoformat()) for first, last in shards]
        db.dispose()  # the workers open their own connections
        context = multiprocessing.get_context("spawn")  # none inherits the coordinator's index
        with context.Pool(
            args.processes, initializer=_start_worker, initargs=(values, str(work / "store"))
        ) as pool:
            results = list(pool.imap_unordered(_plan_shard, jobs))
        wall = time.perf_counter() - started
        pg_cpu = postgres_cpu(int(pg.pid())) - pg_before
        with db.session() as session:
            rows = int(session.scalar(select(func.count()).select_from(Delivery)) or 0)
            per_subscriber = session.scalar(
                select(func.count(func.distinct(Delivery.subscriber_id)))
            )
            planned = session.scalar(
                select(func.count()).select_from(Delivery).where(Delivery.state == PLANNED)
            )
        db.dispose()
    finally:
        pg.stop()
    seconds = [r["seconds"] for r in results]
    writes = [r["write"] for r in results]
    peaks: dict[int, int] = {}
    for r in results:
        peaks[r["pid"]] = max(peaks.get(r["pid"], 0), r["peak"])
    workers_cpu = sum(r["cpu"] for r in results)
    print(
        f"coordinator: {len(shards)} shards listed and the index built in {listed:.1f} s\n"
        f"plan: {wall:.0f} s wall for {rows:,} rows ({planned:,} to send): "
        f"{rows / wall:,.0f} rows/s written\n"
        f"per shard ({args.shard_size:,} subscribers): median {statistics.median(seconds):.1f} s,"
        f" p90 {percentile(seconds, 0.9):.1f} s, max {max(seconds):.1f} s; of which the database "
        f"write median {statistics.median(writes):.2f} s; "
        f"{args.shard_size / statistics.median(seconds):,.0f} subscribers/s per process\n"
        f"peak memory per worker process: "
        + ", ".join(f"{peak / 2**20:,.0f} MiB" for peak in peaks.values())
        + f"\nCPU: worker processes {workers_cpu:.0f} s "
        f"({workers_cpu / max(rows, 1) * 1000:.2f} ms a subscriber), PostgreSQL {pg_cpu:.0f} s "
        f"({pg_cpu / max(rows, 1) * 1000:.3f} ms a row)",
        flush=True,
    )
    failures = []
    if rows != args.subscribers or per_subscriber != args.subscribers:
        failures.append(f"{rows} rows for {per_subscriber} of {args.subscribers} subscribers")
    if max(peaks.values()) >= MEMORY_LIMIT:
        failures.append(f"a worker process peaked at {max(peaks.values()) / 2**20:,.0f} MiB")
    for failure in failures:
        print(f"MISSED: {failure}", file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
