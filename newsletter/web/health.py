"""/healthz: the app answers and its database is reachable."""

from __future__ import annotations

import logging

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from sqlalchemy.exc import SQLAlchemyError

from newsletter import storage
from newsletter.web.context import WebDep

log = logging.getLogger(__name__)
router = APIRouter()


@router.get("/healthz")
def healthz(web: WebDep) -> JSONResponse:
    """200 {"status": "ok", "database": "ok"}, or 503 when the database does not answer."""
    try:
        with web.db.session() as session:
            storage.database_ok(session)
    except SQLAlchemyError as exc:
        log.warning("health check: database unreachable: %s", exc.__class__.__name__)
        return JSONResponse({"status": "error", "database": "unreachable"}, status_code=503)
    return JSONResponse({"status": "ok", "database": "ok"})
