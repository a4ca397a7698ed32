"""Missing system packages: a skip on a laptop, a failure under CI=true."""

from __future__ import annotations

import importlib
import os
from types import ModuleType
from typing import NoReturn

import pytest

# Every skip for something not installed starts with this, so the end-of-run check finds it.
MISSING = "missing system package"


def in_ci() -> bool:
    """True when CI=true (or 1/yes) is set, as CI services and .ci/run do."""
    return os.environ.get("CI", "").strip().lower() in ("true", "1", "yes")


def require_system(component: str, install: str) -> NoReturn:
    """Skip the test because `component` is not installed; under CI=true fail it instead.

    A green CI must mean the Redis, PostgreSQL, browser and TLS tests really ran.
    """
    reason = f"{MISSING}: {component} is not installed ({install})"
    if in_ci():
        pytest.fail(f"{reason}; CI=true turns this skip into a failure", pytrace=False)
    pytest.skip(reason)


def require_module(name: str, install: str = "make test installs the dev extras") -> ModuleType:
    """Import and return the Python module `name`, or require_system() it."""
    try:
        return importlib.import_module(name)
    except ImportError:
        require_system(f"the Python module {name}", install)


def is_missing_system_skip(report: pytest.TestReport) -> bool:
    """True for a skip whose reason is something not installed."""
    if not report.skipped or not isinstance(report.longrepr, tuple):
        return False
    reason = str(report.longrepr[2])
    # importorskip's own wording, for a skip that did not go through require_module().
    return MISSING in reason or "could not import" in reason


def fail_run_on_missing_skips(session: pytest.Session, exitstatus: int) -> None:
    """Under CI=true, a run with any skip for a missing package fails, however it skipped."""
    if not in_ci():
        return
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is None:  # -p no:terminal: nothing counted the skips
        return
    missing = [r for r in reporter.stats.get("skipped", []) if is_missing_system_skip(r)]
    if not missing:
        return
    reporter.write_line(
        f"CI=true: {len(missing)} test(s) skipped for a missing system package", red=True
    )
    if exitstatus == pytest.ExitCode.OK:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
