"""Helpers of the liked-papers tests: the local arXiv API's fixtures and the rows it fills."""

from __future__ import annotations

from collections.abc import Iterator

from newsletter import storage
from newsletter.config import Settings
from newsletter.db import Database
from newsletter.models import PaperFetch, PaperRow
from tests.support.arxiv_api import ArxivAPI


def api_server() -> Iterator[ArxivAPI]:
    """The body of an `api` fixture: the local arXiv API, running."""
    with ArxivAPI().running() as server:
        yield server


def settings_for(settings: Settings, api: ArxivAPI) -> Settings:
    """Settings pointing at the local API, without arXiv's 3 s spacing or client retries."""
    return settings.model_copy(
        update={
            "arxiv_api_url": api.url,
            "arxiv_min_interval": 0.0,
            "http_retries": 0,
            "http_timeout": 2.0,
        }
    )


def rows(db: Database) -> dict[str, PaperFetch]:
    """The liked papers waiting to be fetched (or missing), by id."""
    with db.session() as session:
        found = {row.paper_id: row for row in session.query(PaperFetch)}
        session.expunge_all()
        return found


def stored(db: Database) -> dict[str, PaperRow]:
    """The papers in the database, by id."""
    with db.session() as session:
        found = {row.id: row for row in session.query(PaperRow)}
        session.expunge_all()
        return found


def queue(db: Database, ids: list[str]) -> None:
    """Queue liked papers to fetch, as saving a profile does."""
    with db.session() as session:
        storage.queue_paper_fetches(session, ids, storage.utcnow())
