"""The distributed mode's queues: their names, the messages waiting, the workers that answer."""

from __future__ import annotations

from newsletter.config import Settings

# One queue per pipeline step; workers/celery_app.py routes the tasks to them.
QUEUES = ("collect", "plan", "mail")

# kombu keeps a queue's prioritised messages in sibling lists: "mail", "mail\x06\x163", ...
PRIORITY_SEPARATOR = "\x06\x16"
PRIORITY_STEPS = (0, 3, 6, 9)


def queue_lengths(settings: Settings) -> dict[str, int]:
    """Messages waiting in each queue (Redis LLEN, priorities summed); unacked ones excluded."""
    import redis

    assert settings.redis_url is not None
    client = redis.Redis.from_url(settings.redis_url, socket_timeout=3, socket_connect_timeout=3)
    try:
        lengths = {}
        for queue in QUEUES:
            keys = [
                queue if step == 0 else f"{queue}{PRIORITY_SEPARATOR}{step}"
                for step in PRIORITY_STEPS
            ]
            pipe = client.pipeline(transaction=False)
            for key in keys:
                pipe.llen(key)
            lengths[queue] = sum(int(n) for n in pipe.execute())
        return lengths
    finally:
        client.close()


def workers_seen(settings: Settings, timeout: float = 1.0) -> list[str]:
    """Names of the workers that answered a ping within `timeout` seconds, sorted.

    A bare Celery client on the broker is enough: the ping goes to every worker through the
    broker's control exchange, whatever tasks they run.
    """
    from celery import Celery
    from kombu.exceptions import OperationalError
    from redis.exceptions import ConnectionError as RedisConnectionError

    assert settings.redis_url is not None
    for attempt in (1, 2):
        app = Celery("newsletter", broker=settings.redis_url, set_as_current=False)
        app.conf.broker_transport_options = {"socket_timeout": 10, "socket_connect_timeout": 5}
        try:
            replies = app.control.ping(timeout=timeout) or []
        except (RedisConnectionError, OperationalError, ConnectionError):
            # A connection kept from before a broker restart is closed by the server on first
            # use; one more try on a new connection tells a restart from an outage.
            if attempt == 2:
                raise
            continue
        finally:
            app.close()
        return sorted(name for reply in replies for name in reply)
    raise AssertionError("unreachable")
