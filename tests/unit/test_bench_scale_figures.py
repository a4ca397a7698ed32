"""tests/perf/bench_scale.py's figures mean what the README says, and a miss fails the run."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "perf" / "bench_scale.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_scale_figures", BENCH)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    yield module
    del sys.modules[spec.name]


def test_the_rate_after_the_plan_counts_only_the_digests_sent_after_it(bench):
    # 100 s in all, the plan's last row at 40 s, 300 of the 1,000 digests sent by then.
    run = bench.Run(workers=2, concurrency=2, wall=100.0, plan=40.0, digests=1000)
    run.sent_during_plan = 300
    assert run.deliver_rate == pytest.approx(700 / 60)
    assert run.rate == pytest.approx(10.0) and run.plan_share == pytest.approx(0.4)


def test_two_workers_short_of_the_target_fail_the_benchmark(bench):
    one = bench.Run(workers=1, concurrency=2, wall=100.0)
    assert bench.verdict(one, bench.Run(workers=2, concurrency=2, wall=56.0)) == (
        pytest.approx(100 / 56),
        False,
    )
    assert bench.verdict(one, bench.Run(workers=2, concurrency=2, wall=52.0))[1]
