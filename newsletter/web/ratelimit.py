"""Rate limits: fixed-window counters in memory (embedded mode) or in Redis (distributed)."""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from newsletter.config import Settings

log = logging.getLogger(__name__)

Clock = Callable[[], float]


@dataclass(frozen=True)
class Decision:
    """Whether a hit is allowed, and if not, how many seconds until the window resets."""

    allowed: bool
    retry_after: int = 0


class RateLimiter(Protocol):
    """Count one hit on `key`; at most `limit` hits are allowed per `window` seconds."""

    def hit(self, key: str, limit: int, window: int) -> Decision: ...


def _decide(count: int, limit: int, window: int, now: float) -> Decision:
    if count <= limit:
        return Decision(True)
    reset = (int(now // window) + 1) * window
    return Decision(False, max(1, int(reset - now + 0.999)))


class MemoryRateLimiter:
    """Counters in this process: right for the embedded mode's single process."""

    def __init__(self, clock: Clock = time.time, max_keys: int = 100_000) -> None:
        self._clock = clock
        self._max_keys = max_keys
        self._lock = threading.Lock()
        self._counts: dict[tuple[str, int], tuple[int, int]] = {}  # (key, window) -> (slot, n)

    def hit(self, key: str, limit: int, window: int) -> Decision:
        now = self._clock()
        slot = int(now // window)
        with self._lock:
            if len(self._counts) >= self._max_keys:
                self._prune(now)
            previous_slot, count = self._counts.get((key, window), (slot, 0))
            count = count + 1 if previous_slot == slot else 1
            self._counts[(key, window)] = (slot, count)
        return _decide(count, limit, window, now)

    def _prune(self, now: float) -> None:
        # Forget finished windows; if every key is live (an attack), forget everything rather
        # than grow without bound: a limiter that resets is better than one that eats memory.
        live = {k: v for k, v in self._counts.items() if v[0] == int(now // k[1])}
        self._counts = live if len(live) < self._max_keys else {}


class RedisRateLimiter:
    """Counters shared by every web process: INCR and EXPIRE of one key per window."""

    def __init__(self, client: Any, *, prefix: str = "newsletter:rate:", clock: Clock = time.time):
        self._client = client
        self._prefix = prefix
        self._clock = clock

    def hit(self, key: str, limit: int, window: int) -> Decision:
        import redis

        now = self._clock()
        # Hashed so that no e-mail address is stored in Redis in clear.
        digest = hashlib.sha256(key.encode()).hexdigest()[:32]
        name = f"{self._prefix}{digest}:{window}:{int(now // window)}"
        try:
            pipe = self._client.pipeline(transaction=True)
            pipe.incr(name)
            pipe.expire(name, window + 1)
            count, _ = pipe.execute()
        except redis.RedisError as exc:
            # Fail open: a sign-up page that works without its limiter beats one that is down.
            log.warning("rate limit %s not checked: %s", key.split(":", 1)[0], exc)
            return Decision(True)
        return _decide(int(count), limit, window, now)


def make_rate_limiter(settings: Settings) -> RateLimiter:
    """Redis counters when NEWSLETTER_REDIS_URL is set, else counters in memory."""
    if settings.redis_url:
        import redis

        client = redis.Redis.from_url(
            settings.redis_url, socket_timeout=1.0, socket_connect_timeout=1.0
        )
        return RedisRateLimiter(client)
    return MemoryRateLimiter()
