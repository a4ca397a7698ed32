"""/healthz: the database holds readable tables at the current migration, and Redis answers."""

from __future__ import annotations

import logging
from contextlib import AbstractContextManager
from functools import cache
from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from newsletter import db as database
from newsletter import storage
from newsletter.config import Settings
from newsletter.web.context import Web, WebDep

log = logging.getLogger(__name__)
router = APIRouter()

REDIS_TIMEOUT = 2.0  # seconds: a health probe must answer before the prober gives up


@router.get("/healthz")
def healthz(web: WebDep) -> JSONResponse:
    """200 when every part is ok, else 503; the JSON says which part failed and why."""
    report: dict[str, Any] = {"status": "ok"}
    reasons = [
        reason for reason in (_check_database(web, report), _check_redis(web, report)) if reason
    ]
    if reasons:
        report = {"status": "error", **{k: v for k, v in report.items() if k != "status"}}
        report["reason"] = "; ".join(reasons)
        log.warning("health check failed: %s", report["reason"])
        return JSONResponse(report, status_code=503)
    return JSONResponse(report)


@cache
def _heads(settings: Settings) -> tuple[frozenset[str], frozenset[str]]:
    """The head revisions and every revision the migration scripts know.

    The scripts do not change while the process runs; reading them per probe would be waste.
    """
    from alembic.script import ScriptDirectory

    scripts = ScriptDirectory.from_config(database.alembic_config(settings))
    known = frozenset(script.revision for script in scripts.walk_revisions())
    return frozenset(scripts.get_heads()), known


@cache
def _unpooled(settings: Settings) -> Engine:
    # No pool, so nothing to dispose of; each probe's new connection reads the file itself.
    return database.make_engine(settings, unpooled=True)


def _probe_session(web: Web) -> AbstractContextManager[Session]:
    """A session for the probe: a new connection on SQLite (see db.sqlite_file), else pooled."""
    if database.sqlite_file(web.settings) is None:
        return web.db.session()
    return Session(_unpooled(web.settings))


def _check_database(web: Web, report: dict[str, Any]) -> str | None:
    """Read the core tables and the schema revision; returns why not, or None."""
    try:
        with _probe_session(web) as session:
            storage.core_tables_readable(session)
            current = database.schema_revisions(session.connection())
    except SQLAlchemyError as exc:
        report.update(database="unreachable", migrations="unknown")
        return f"database: {_first_line(exc)}"
    report["database"] = "ok"
    heads, known = _heads(web.settings)
    if current != heads:
        at = ", ".join(sorted(current)) or "no revision"
        if current - known:  # a newer version migrated it: this code must not write to it
            report["migrations"] = "ahead"
            return f"migrations: the database is at {at}, which this version does not know"
        report["migrations"] = "behind"
        return (
            f"migrations: the database is at {at}, this version needs "
            f"{', '.join(sorted(heads))} (run `newsletter db upgrade`)"
        )
    report["migrations"] = "ok"
    return None


def _check_redis(web: Web, report: dict[str, Any]) -> str | None:
    """PING the broker in distributed mode; returns why not, or None."""
    url = web.settings.redis_url
    if url is None:
        report["redis"] = "not used"
        return None
    import redis

    client = redis.Redis.from_url(
        url, socket_timeout=REDIS_TIMEOUT, socket_connect_timeout=REDIS_TIMEOUT
    )
    try:
        client.ping()
    except (redis.RedisError, OSError) as exc:
        report["redis"] = "unreachable"
        return f"redis: {exc.__class__.__name__}"
    finally:
        client.close()
    report["redis"] = "ok"
    return None


def _first_line(exc: SQLAlchemyError) -> str:
    # The driver's own message, without the SQL statement or parameters SQLAlchemy appends.
    original = getattr(exc, "orig", None) or exc
    return (
        str(original).strip().splitlines()[0][:200]
        if str(original).strip()
        else type(original).__name__
    )
