"""`make run` says what it is doing before the quiet pip install of the first run."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

# A python3 stand-in: `-m venv DIR` makes DIR/bin with a pip and a newsletter that only talk.
FAKE_PYTHON = """#!/bin/sh
mkdir -p "$3/bin"
printf '#!/bin/sh\\necho "pip $*"\\n' >"$3/bin/pip"
printf '#!/bin/sh\\necho "newsletter $*"\\n' >"$3/bin/newsletter"
chmod +x "$3/bin/pip" "$3/bin/newsletter"
"""


def test_make_run_says_it_is_installing_before_pip_runs(tmp_path):
    if shutil.which("make") is None:
        pytest.fail("make is not installed (apt-get install make)")
    fake = tmp_path / "python3"
    fake.write_text(FAKE_PYTHON)
    fake.chmod(0o755)
    result = subprocess.run(
        ["make", "-s", "-C", str(ROOT), "run", f"PYTHON={fake}", f"VENV={tmp_path / 'venv'}"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    said = next(i for i, line in enumerate(lines) if "installing the service" in line)
    pip = next(i for i, line in enumerate(lines) if line.startswith("pip install"))
    assert said < pip, lines
    assert "a minute or two" in lines[said]
    assert lines[-1] == "newsletter run --demo"
