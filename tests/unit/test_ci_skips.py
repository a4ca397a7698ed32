"""A test skipped for a missing system package skips on a laptop and fails under CI=true."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

CONFTEST = Path(__file__).resolve().parents[1] / "conftest.py"
SUPPORT = CONFTEST.parent / "support"  # the harnesses the conftest imports
ABSENT = "no_such_module_for_the_ci_check"

TESTS = {
    "test_needs_redis.py": "def test_with_redis(redis_server):\n    assert redis_server.port\n",
    "test_needs_a_module.py": (
        f"def test_with_a_module(python_module):\n    python_module({ABSENT!r})\n"
    ),
    # A skip that bypasses the helper is still caught at the end of the run.
    "test_bypasses_the_helper.py": (
        f"import pytest\n\n\ndef test_importorskip():\n    pytest.importorskip({ABSENT!r})\n"
    ),
    "test_plain.py": "def test_needs_nothing():\n    assert True\n",
}


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A tiny test directory: the suite's real conftest.py and tests/support, an empty bin/."""
    root = tmp_path / "project"
    root.mkdir()
    shutil.copy(CONFTEST, root / "conftest.py")
    shutil.copytree(
        SUPPORT, root / "tests" / "support", ignore=shutil.ignore_patterns("__pycache__")
    )
    for name, text in TESTS.items():
        (root / name).write_text(text)
    (tmp_path / "bin").mkdir()
    return root


def run_pytest(project: Path, ci: str | None, *args: str, path: str | None = None):
    """Run pytest on `project`, without redis-server on PATH unless `path` is given."""
    env = {k: v for k, v in os.environ.items() if k not in ("CI", "PYTEST_ADDOPTS")}
    env["PATH"] = path if path is not None else str(project.parent / "bin")
    if ci is not None:
        env["CI"] = ci
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider", *args],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_without_ci_a_missing_package_is_a_skip(project):
    result = run_pytest(project, None)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 passed, 3 skipped" in result.stdout
    assert "missing system package: redis-server is not installed" in result.stdout
    assert f"missing system package: the Python module {ABSENT}" in result.stdout


@pytest.mark.parametrize("value", ["true", "1"])
def test_under_ci_a_missing_package_fails_the_run(project, value):
    result = run_pytest(project, value)
    output = result.stdout + result.stderr
    assert result.returncode == 1, output
    # The helper fails the tests where they would have skipped, saying why.
    assert "1 failed, 1 passed, 1 skipped, 1 error" in result.stdout, output
    assert "redis-server is not installed" in output and "CI=true turns this skip" in output
    # The importorskip that bypassed the helper still turns the run red.
    assert "CI=true: 1 test(s) skipped for a missing system package" in output


def test_under_ci_a_skip_that_bypasses_the_helper_fails_the_run(project):
    result = run_pytest(project, "true", "test_bypasses_the_helper.py", "test_plain.py")
    assert result.returncode == 1, result.stdout + result.stderr
    assert "1 passed, 1 skipped" in result.stdout
    assert "CI=true: 1 test(s) skipped" in result.stdout


def test_under_ci_a_run_with_everything_installed_passes(project, redis_server):
    # redis_server is asked for only so that this test, too, needs redis-server installed.
    result = run_pytest(
        project, "true", "test_needs_redis.py", "test_plain.py", path=os.environ["PATH"]
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "2 passed" in result.stdout


# --- .ci/run, with apt-get and make replaced by stubs that record how they were called -------

CI_RUN = Path(__file__).resolve().parents[2] / ".ci" / "run"


@pytest.fixture
def stubs(tmp_path: Path) -> Path:
    """A bin/ of stubs: each appends its arguments (and make its CI variable) to calls.log."""
    directory = tmp_path / "stubs"
    directory.mkdir()
    for name, extra in [
        ("apt-get", ""),
        ("debconf-set-selections", "cat >/dev/null\n"),
        ("id", "echo 0\nexit 0\n"),  # as root: no sudo
        ("make", 'echo "make CI=$CI" >>"$LOG"\nexit "${MAKE_EXIT:-0}"\n'),
    ]:
        stub = directory / name
        stub.write_text(f'#!/bin/sh\necho "{name} $*" >>"$LOG"\n{extra}')
        stub.chmod(0o755)
    return directory


def run_ci(stubs: Path, make_exit: int) -> tuple[int, list[str]]:
    env = {
        "PATH": f"{stubs}:{os.environ['PATH']}",
        "LOG": str(stubs.parent / "calls.log"),
        "MAKE_EXIT": str(make_exit),
    }
    result = subprocess.run(["bash", str(CI_RUN)], env=env, capture_output=True, timeout=30)
    return result.returncode, (stubs.parent / "calls.log").read_text().splitlines()


def test_ci_installs_what_a_fresh_debian_lacks_then_tests_with_ci_set(stubs):
    code, calls = run_ci(stubs, 0)
    assert code == 0
    [install] = [c.split() for c in calls if c.startswith("apt-get install")]
    needed = {"make", "python3-venv", "openssl", "redis-server", "postgresql", "postfix"}
    assert needed | {"chromium"} <= set(install)
    assert calls[-1] == "make CI=true"  # the tests run last, with skips turned into failures


def test_ci_fails_when_the_tests_fail(stubs):
    code, calls = run_ci(stubs, 3)
    assert code != 0 and calls[-1] == "make CI=true"
