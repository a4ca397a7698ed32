"""`make test` ends by listing the tests a missing system package skipped."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

TESTS = {
    "test_needs_redis.py": "def test_with_redis(redis_server):\n    assert redis_server.port\n",
    "test_plain.py": "def test_needs_nothing():\n    assert True\n",
}


def test_the_end_of_the_run_lists_what_a_missing_package_skipped(tmp_path):
    project = tmp_path / "project"
    project.mkdir()
    shutil.copy(ROOT / "tests" / "conftest.py", project / "conftest.py")
    for name, text in TESTS.items():
        (project / name).write_text(text)
    (tmp_path / "bin").mkdir()  # no redis-server on PATH
    env = {k: v for k, v in os.environ.items() if k not in ("CI", "PYTEST_ADDOPTS")}
    env |= {"PATH": str(tmp_path / "bin"), "PYTHONPATH": str(ROOT)}
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"]
        + ["-p", "tests.missing_packages"],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    start = next(
        i for i, line in enumerate(lines) if "skipped for a missing system package" in line
    )
    listed = lines[start:-1]  # everything between the heading and pytest's closing line
    assert "1 test(s) did not run" in listed[1]
    assert any("redis-server is not installed" in line for line in listed)
    assert "  test_needs_redis.py::test_with_redis" in listed
    assert not any("test_plain" in line for line in listed)
    assert "1 passed, 1 skipped" in lines[-1]


def test_make_test_loads_the_summary():
    assert "-p tests.missing_packages" in (ROOT / "Makefile").read_text()
