"""Test harnesses: the real servers and processes that tests/conftest.py's fixtures start."""

from pathlib import Path

# The checkout's root: where `celery -A workers.celery_app` finds the workers package.
ROOT = Path(__file__).resolve().parents[2]
