"""A pytest plugin for the test command: at the end, which tests were skipped for a missing
system package (redis-server, PostgreSQL, Chromium, ...), and what to install.

`make test` loads it (`-p tests.missing_packages`); tests/conftest.py marks those skips.
"""

from __future__ import annotations

from collections import defaultdict

import pytest

MISSING = "missing system package"


def _reason(report: pytest.TestReport) -> str | None:
    if not report.skipped or not isinstance(report.longrepr, tuple):
        return None
    reason = str(report.longrepr[2]).removeprefix("Skipped: ")
    return reason if MISSING in reason or "could not import" in reason else None


@pytest.hookimpl(trylast=True)
def pytest_terminal_summary(terminalreporter) -> None:  # type: ignore[no-untyped-def]
    """List the tests a missing package skipped, grouped by what is missing."""
    by_reason: dict[str, list[str]] = defaultdict(list)
    for report in terminalreporter.stats.get("skipped", []):
        reason = _reason(report)
        if reason is not None:
            by_reason[reason].append(report.nodeid)
    if not by_reason:
        return
    count = sum(len(ids) for ids in by_reason.values())
    terminalreporter.section("skipped for a missing system package", yellow=True)
    terminalreporter.write_line(
        f"{count} test(s) did not run; install what is missing (.ci/run does) to run them:"
    )
    for reason, ids in sorted(by_reason.items()):
        terminalreporter.write_line(f"{reason}:")
        for nodeid in ids:
            terminalreporter.write_line(f"  {nodeid}")
