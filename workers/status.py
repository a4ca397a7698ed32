"""The distributed mode's status, for tools that look for it beside the workers."""

from __future__ import annotations

# It lives in the core, which `newsletter status` uses without importing the workers.
from newsletter.queues import queue_lengths, workers_seen

__all__ = ["queue_lengths", "workers_seen"]
