"""Rate limits: fixed-window counters in memory (embedded mode) or in Redis (distributed)."""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from ipaddress import IPv4Network, IPv6Network, ip_address
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
    """Counters in this process: right for the embedded mode's single process.

    At most `max_keys` counters are kept. When full, finished windows go first, then the
    least recently hit keys: a flood of new keys pushes out old ones, never the counters
    being hit right now (forgetting everything would lift every limit at once).
    """

    def __init__(self, clock: Clock = time.time, max_keys: int = 100_000) -> None:
        self._clock = clock
        self._max_keys = max_keys
        self._lock = threading.Lock()
        # (key, window) -> (slot, n), least recently hit first
        self._counts: OrderedDict[tuple[str, int], tuple[int, int]] = OrderedDict()

    def hit(self, key: str, limit: int, window: int) -> Decision:
        now = self._clock()
        slot = int(now // window)
        with self._lock:
            entry = (key, window)
            previous_slot, count = self._counts.pop(entry, (slot, 0))
            if len(self._counts) >= self._max_keys:
                self._evict(now)
            count = count + 1 if previous_slot == slot else 1
            self._counts[entry] = (slot, count)
        return _decide(count, limit, window, now)

    def _evict(self, now: float) -> None:
        # Make room for a tenth of the capacity at once, so that a flood does not pay a full
        # scan on every hit; finished windows cost nothing to forget.
        target = self._max_keys - max(1, self._max_keys // 10)
        finished = [k for k, (slot, _) in self._counts.items() if slot != int(now // k[1])]
        for entry in finished:
            del self._counts[entry]
        while len(self._counts) > target:
            self._counts.popitem(last=False)


def client_address(
    peer: str, forwarded_for: str | None, trusted: Sequence[IPv4Network | IPv6Network]
) -> str:
    """The address a request comes from, for the rate limits.

    X-Forwarded-For is believed only from a trusted proxy. Each proxy appends the address it
    got the request from, so reading from the right, the first address that is not one of our
    proxies is the client; whatever the client wrote further left is ignored.
    """
    if not forwarded_for or not _trusted(peer, trusted):
        return peer
    hops = [hop.strip() for hop in forwarded_for.split(",") if hop.strip()]
    for hop in reversed(hops):
        if not _trusted(hop, trusted):
            return hop
    return hops[0] if hops else peer


def _trusted(address: str, trusted: Sequence[IPv4Network | IPv6Network]) -> bool:
    try:
        ip = ip_address(address)
    except ValueError:
        return False
    return any(ip in network for network in trusted)


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
