"""Rate limiters: the same fixed-window behaviour in memory and in a real Redis."""

from __future__ import annotations

import pytest

from newsletter.web.ratelimit import MemoryRateLimiter, RedisRateLimiter, make_rate_limiter


class Clock:
    """A settable clock, passed in where the limiter reads the time."""

    def __init__(self, start: float = 1_000_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now


@pytest.fixture(params=["memory", "redis"])
def limiter_and_clock(request):
    clock = Clock()
    if request.param == "memory":
        yield MemoryRateLimiter(clock=clock), clock
        return
    import redis

    url = request.getfixturevalue("redis_url")  # a real redis-server, skipped if absent
    client = redis.Redis.from_url(url)
    yield RedisRateLimiter(client, clock=clock), clock
    client.close()


def test_allows_the_limit_then_refuses_until_the_window_ends(limiter_and_clock):
    limiter, clock = limiter_and_clock
    assert [limiter.hit("ip:1", 3, 60).allowed for _ in range(4)] == [True, True, True, False]
    refused = limiter.hit("ip:1", 3, 60)
    assert not refused.allowed and 0 < refused.retry_after <= 60
    assert clock.now + refused.retry_after >= (clock.now // 60 + 1) * 60
    clock.now += refused.retry_after
    assert limiter.hit("ip:1", 3, 60).allowed


def test_keys_and_windows_are_counted_apart(limiter_and_clock):
    limiter, _ = limiter_and_clock
    assert limiter.hit("ip:1", 1, 60).allowed
    assert not limiter.hit("ip:1", 1, 60).allowed
    assert limiter.hit("ip:2", 1, 60).allowed
    assert limiter.hit("ip:1", 1, 3600).allowed


def test_redis_counts_are_shared_between_processes(redis_url):
    import redis

    clock = Clock()
    first = RedisRateLimiter(redis.Redis.from_url(redis_url), clock=clock)
    second = RedisRateLimiter(redis.Redis.from_url(redis_url), clock=clock)
    assert first.hit("address:a@example.org", 2, 3600).allowed
    assert second.hit("address:a@example.org", 2, 3600).allowed
    assert not first.hit("address:a@example.org", 2, 3600).allowed
    keys = [key.decode() for key in redis.Redis.from_url(redis_url).keys("newsletter:rate:*")]
    assert keys and not any("example.org" in key for key in keys)  # addresses are hashed
    ttl = redis.Redis.from_url(redis_url).ttl(keys[0])
    assert 0 < ttl <= 3601


def test_an_unreachable_redis_does_not_take_the_page_down(caplog):
    import redis

    client = redis.Redis.from_url("redis://127.0.0.1:9/0", socket_connect_timeout=0.5)
    limiter = RedisRateLimiter(client)
    assert all(limiter.hit("ip:1", 1, 60).allowed for _ in range(3))
    assert "rate limit ip not checked" in caplog.text


def test_the_backend_follows_the_settings(settings):
    assert isinstance(make_rate_limiter(settings), MemoryRateLimiter)
    distributed = settings.model_copy(update={"redis_url": "redis://127.0.0.1:6379/0"})
    assert isinstance(make_rate_limiter(distributed), RedisRateLimiter)


def test_memory_stays_bounded():
    clock = Clock()
    limiter = MemoryRateLimiter(clock=clock, max_keys=100)
    for number in range(1000):
        limiter.hit(f"ip:{number}", 5, 60)
    assert len(limiter._counts) <= 100
    clock.now += 60
    limiter.hit("ip:new", 5, 60)
    for number in range(99):
        limiter.hit(f"ip:again{number}", 5, 60)
    assert len(limiter._counts) <= 100


def test_a_full_limiter_evicts_the_oldest_keys_only():
    clock = Clock()
    limiter = MemoryRateLimiter(clock=clock, max_keys=100)
    # An address at its limit, then a flood of new keys, all within the same live window.
    assert [limiter.hit("address:target", 2, 3600).allowed for _ in range(3)] == [
        True,
        True,
        False,
    ]
    for number in range(98):
        limiter.hit(f"ip:{number}", 5, 3600)
    limiter.hit("address:target", 2, 3600)  # still being hit: the most recent key
    for number in range(98, 400):
        limiter.hit(f"ip:{number}", 5, 3600)
        assert not limiter.hit("address:target", 2, 3600).allowed, number
    assert len(limiter._counts) <= 100
    # The keys that went were the least recently hit; the latest ones are all still counted.
    assert not limiter.hit("ip:399", 1, 3600).allowed
