"""Shared test fixtures. Each area appends its own section below."""

from __future__ import annotations

import os

import pytest


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory):
    """Tests never see the developer's NEWSLETTER_* variables or .env file."""
    for name in list(os.environ):
        if name.startswith("NEWSLETTER_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path_factory.mktemp("cwd"))


# --- Core: settings and a migrated database --------------------------------------------------


@pytest.fixture
def settings(tmp_path):
    from newsletter.config import load_settings

    return load_settings(var_dir=tmp_path / "var", secret_key="test-secret", sources="hf_daily")


@pytest.fixture
def db(settings):
    from newsletter.db import Database

    database = Database(settings)
    database.upgrade()
    yield database
    database.dispose()
