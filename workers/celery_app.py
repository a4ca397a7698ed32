"""The Celery application of the distributed mode: broker, queues, routes, reliability, beat."""

from __future__ import annotations

from functools import cache
from typing import Any

from celery import Celery
from kombu import Queue

from newsletter.config import ConfigError, Settings, load_settings
from newsletter.queues import QUEUES
from workers.schedule import beat_schedule

ROUTES = {
    "workers.tasks.collect_source": {"queue": "collect"},
    "workers.tasks.plan_editions": {"queue": "plan"},
    "workers.tasks.plan_shard": {"queue": "plan"},
    "workers.tasks.sweep_leases": {"queue": "plan"},
    "workers.tasks.deliver_batch": {"queue": "mail"},
    "workers.tasks.send_confirmation": {"queue": "mail"},
    "workers.tasks.sweep_confirmations": {"queue": "plan"},
}
# The longest a task retry waits. Redis hands an unacknowledged message to another worker after
# the visibility timeout, so it must exceed every retry delay (and every task's run time).
RETRY_BACKOFF_MAX = 600
VISIBILITY_TIMEOUT = 3600


def celery_config(settings: Settings) -> dict[str, Any]:
    """Every Celery setting of this deployment, derived from the newsletter settings."""
    if not settings.redis_url:
        raise ConfigError(
            "NEWSLETTER_REDIS_URL: the workers and beat need Redis (redis://host:6379/0)"
        )
    return {
        "broker_url": settings.redis_url,
        "broker_transport_options": {
            "visibility_timeout": VISIBILITY_TIMEOUT,
            "socket_timeout": 10,
            "socket_connect_timeout": 5,
            "health_check_interval": 10,
        },
        "broker_connection_retry_on_startup": True,
        "broker_connection_max_retries": None,  # ride out a broker restart, however long
        # A task published while Redis restarts waits for it instead of being lost.
        "task_publish_retry_policy": {
            "max_retries": 20,
            "interval_start": 0.5,
            "interval_step": 1.0,
            "interval_max": 5.0,
        },
        "task_queues": [Queue(name) for name in QUEUES],
        "task_default_queue": "plan",
        "task_create_missing_queues": False,
        "task_routes": ROUTES,
        # Acknowledge after the task ran, and give a dead worker's task back to the queue; the
        # ledger's claims turn the resulting duplicate into a no-op.
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "worker_prefetch_multiplier": 1,
        "task_ignore_result": True,
        "task_serializer": "json",
        "accept_content": ["json"],
        "timezone": "UTC",
        "enable_utc": True,
        "worker_send_task_events": False,
        "worker_max_tasks_per_child": 1000,
        # A pool process that planned a big day holds its memory; replace it after that task.
        "worker_max_memory_per_child": 1_000_000,  # KiB
        # One beat at a time: RedBeat keeps the schedule in Redis behind a lock.
        "beat_scheduler": "redbeat.RedBeatScheduler",
        "beat_schedule": beat_schedule(settings),
        "beat_max_loop_interval": 5,
        "redbeat_redis_url": settings.redis_url,
        "redbeat_lock_timeout": 20,  # a standby beat takes over within 20 s
        "redbeat_redis_options": {"retry_period": 300},
    }


def make_app(settings: Settings) -> Celery:
    """A Celery app configured from `settings` (a client for tests, tools and the status)."""
    app = Celery("newsletter", include=["workers.tasks"], set_as_current=False)
    app.conf.update(celery_config(settings))
    return app


@cache
def worker_settings() -> Settings:
    """The settings of this worker or beat process, read from the environment once."""
    return load_settings()


def _configuration() -> dict[str, Any]:
    return celery_config(worker_settings())


# Configured on first use, not on import: importing this module needs no environment.
app = Celery("newsletter", include=["workers.tasks"])
app.add_defaults(_configuration)
