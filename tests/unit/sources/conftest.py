"""Shared fixtures of the source tests: the recorded responses in tests/fixtures/sources."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "sources"


@pytest.fixture(scope="session")
def recorded() -> Callable[[str], bytes]:
    """Read one recorded response by file name; the Atom 400 answer is unwrapped to its body."""

    def read(name: str) -> bytes:
        raw = (FIXTURES / name).read_bytes()
        if name == "arxiv_atom_error_400.golden.json":
            return json.loads(raw)["body"].encode("utf-8")
        return raw

    return read


@pytest.fixture
def hf_entries(recorded: Callable[[str], bytes]) -> list[dict[str, Any]]:
    """The recorded Hugging Face API entries, freshly decoded (safe to mutate)."""
    return json.loads(recorded("hf_daily_papers_2026-06-12.json"))
