"""The callback each step reports its finished items to (a progress bar, a chained task)."""

from __future__ import annotations

from collections.abc import Callable

Progress = Callable[[int], None]  # called with how many items were just finished
