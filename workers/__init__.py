"""Distributed mode: Celery workers and one beat on Redis, driving the same pipeline steps."""
