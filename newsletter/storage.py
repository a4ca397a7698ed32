"""All SQL lives here: subscribers, papers, source runs, HTTP validators and the delivery ledger."""

from __future__ import annotations

import json
import logging
import secrets
from collections import defaultdict
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import (
    Connection,
    DateTime,
    Text,
    and_,
    bindparam,
    case,
    cast,
    delete,
    exists,
    func,
    or_,
    select,
    text,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from newsletter import editions
from newsletter.editions import DAILY
from newsletter.models import (
    ACTIVE,
    BOUNCING,
    FAILED,
    FETCH_MISSING,
    FETCH_PENDING,
    PENDING,
    PLANNED,
    QUEUED,
    RETRY,
    SENDING,
    SENT,
    SKIPPED,
    BounceEvent,
    ConfirmationRequest,
    Delivery,
    DeliveryResend,
    HttpValidator,
    Operator,
    PaperFetch,
    PaperRow,
    Rating,
    SourceRun,
    Subscriber,
    Suppression,
    WebhookToken,
)
from newsletter.paper import Paper
from newsletter.planned import PlannedItem, PlannedRow, read_items

PAPER_FIELDS = (
    "title",
    "abstract",
    "authors",
    "published",
    "url",
    "upvotes",
    "source",
    "categories",
    "keywords",
    "ai_summary",
    "comments",
    "github_repo",
    "github_stars",
    "project_page",
    "announce_type",
)

log = logging.getLogger(__name__)


def utcnow() -> datetime:
    """The current time as the naive UTC datetime every table stores."""
    return datetime.now(UTC).replace(tzinfo=None)


def _insert(session: Session, table: Any) -> Any:
    """An INSERT that knows ON CONFLICT on both SQLite and PostgreSQL."""
    dialect = session.get_bind().dialect.name
    return (postgresql if dialect == "postgresql" else sqlite).insert(table)


# Papers ------------------------------------------------------------------------------------


def row_to_paper(row: PaperRow) -> Paper:
    return Paper(id=row.id, **{name: getattr(row, name) for name in PAPER_FIELDS})


# The day arXiv opened: when a paper fetched for its own sake was "first seen" if it has no date.
ARCHIVE_EPOCH = datetime(1991, 8, 14)


def upsert_papers(
    session: Session, papers: Iterable[Paper], now: datetime, *, archive: bool = False
) -> tuple[int, int]:
    """Store papers, merging with what is already known; returns (new, updated).

    `archive` papers were fetched for their own sake (a reader's liked papers), not as news:
    a new one is dated first seen on its publication day, so an old paper never joins the
    recent papers the digests are planned from.
    """
    incoming: dict[str, Paper] = {}
    for paper in papers:
        incoming[paper.id] = incoming[paper.id].merge(paper) if paper.id in incoming else paper
    if not incoming:
        return 0, 0
    existing: dict[str, PaperRow] = {}
    ids = list(incoming)
    for start in range(0, len(ids), 500):
        chunk = ids[start : start + 500]
        existing.update(
            {row.id: row for row in session.scalars(select(PaperRow).where(PaperRow.id.in_(chunk)))}
        )
    new = updated = 0
    for paper_id, paper in incoming.items():
        row = existing.get(paper_id)
        if row is None:
            values = {name: getattr(paper, name) for name in PAPER_FIELDS}
            seen = _archive_seen(paper, now) if archive else now
            session.add(PaperRow(id=paper_id, first_seen_at=seen, updated_at=now, **values))
            new += 1
            continue
        merged = row_to_paper(row).merge(paper)
        changed = False
        for name in PAPER_FIELDS:
            if getattr(row, name) != getattr(merged, name):
                setattr(row, name, getattr(merged, name))
                changed = True
        if changed:
            row.updated_at = now
            updated += 1
    session.flush()
    return new, updated


def recent_papers(session: Session, days: float = 1, now: datetime | None = None) -> list[Paper]:
    """Papers first collected within the last `days` days, most recent first."""
    since = (now or utcnow()) - timedelta(days=days)
    rows = session.scalars(
        select(PaperRow).where(PaperRow.first_seen_at >= since).order_by(PaperRow.id)
    )
    return [row_to_paper(row) for row in rows]


def recent_paper_versions(
    session: Session, days: float = 1, now: datetime | None = None
) -> tuple[tuple[str, datetime], ...]:
    """(id, updated_at) of the papers recent_papers() would return: what tells them apart."""
    since = (now or utcnow()) - timedelta(days=days)
    rows = session.execute(
        select(PaperRow.id, PaperRow.updated_at)
        .where(PaperRow.first_seen_at >= since)
        .order_by(PaperRow.id)
    )
    return tuple((paper_id, updated_at) for paper_id, updated_at in rows)


def trending_papers(
    session: Session, days: float, limit: int, now: datetime | None = None
) -> list[Paper]:
    """The most upvoted Hugging Face papers collected in the last `days` days."""
    since = (now or utcnow()) - timedelta(days=days)
    rows = session.scalars(
        select(PaperRow)
        .where(
            PaperRow.first_seen_at >= since,
            PaperRow.source.contains("hf_daily"),
            PaperRow.upvotes > 0,
        )
        .order_by(PaperRow.upvotes.desc(), PaperRow.id)
        .limit(limit)
    )
    return [row_to_paper(row) for row in rows]


def papers_on(session: Session, day: date) -> list[Paper]:
    """Papers announced or featured on `day`."""
    rows = session.scalars(select(PaperRow).where(PaperRow.published == day).order_by(PaperRow.id))
    return [row_to_paper(row) for row in rows]


def papers_by_id(session: Session, ids: Iterable[str]) -> dict[str, Paper]:
    wanted = list(dict.fromkeys(ids))
    found: dict[str, Paper] = {}
    for start in range(0, len(wanted), 500):
        chunk = wanted[start : start + 500]
        for row in session.scalars(select(PaperRow).where(PaperRow.id.in_(chunk))):
            found[row.id] = row_to_paper(row)
    return found


def _archive_seen(paper: Paper, now: datetime) -> datetime:
    day = datetime.combine(paper.published, time()) if paper.published else ARCHIVE_EPOCH
    return min(day, now)


# Liked papers to fetch from arXiv (newsletter.likes.fetching) -------------------------------


_FETCH_IDS_PER_QUERY = 500  # ids per IN list: well under SQLite's limit on bound parameters


@dataclass(frozen=True)
class PaperFetchClaim:
    """Liked papers one fetcher now holds, with the attempts made before this one."""

    token: str
    attempts: dict[str, int]


def queue_paper_fetches(session: Session, paper_ids: Iterable[str], now: datetime) -> int:
    """Queue the liked papers neither stored nor queued yet; returns how many were queued."""
    wanted = list(dict.fromkeys(paper_ids))
    known: set[str] = set()
    for start in range(0, len(wanted), _FETCH_IDS_PER_QUERY):
        chunk = wanted[start : start + _FETCH_IDS_PER_QUERY]
        known.update(session.scalars(select(PaperRow.id).where(PaperRow.id.in_(chunk))))
        known.update(
            session.scalars(select(PaperFetch.paper_id).where(PaperFetch.paper_id.in_(chunk)))
        )
    fresh = [paper for paper in wanted if paper not in known]
    for paper in fresh:
        session.add(PaperFetch(paper_id=paper, state=FETCH_PENDING, attempts=0, requested_at=now))
    session.flush()
    return len(fresh)


def _fetch_due(now: datetime) -> Any:
    return and_(
        PaperFetch.state == FETCH_PENDING,
        or_(PaperFetch.next_attempt_at.is_(None), PaperFetch.next_attempt_at <= now),
        or_(PaperFetch.lease_until.is_(None), PaperFetch.lease_until <= now),
    )


def claim_paper_fetches(
    session: Session, now: datetime, lease: timedelta, limit: int
) -> PaperFetchClaim:
    """Claim up to `limit` due papers, oldest request first, with one conditional UPDATE.

    Of two fetchers, one gets each paper; a fetcher that died leaves its lease to expire.
    """
    due = list(
        session.scalars(
            select(PaperFetch.paper_id)
            .where(_fetch_due(now))
            .order_by(PaperFetch.requested_at, PaperFetch.paper_id)
            .limit(limit)
        )
    )
    token = secrets.token_hex(16)
    if not due:
        return PaperFetchClaim(token, {})
    rows = session.execute(
        update(PaperFetch)
        .where(PaperFetch.paper_id.in_(due), _fetch_due(now))
        .values(lease_until=now + lease, claim_token=token)
        .returning(PaperFetch.paper_id, PaperFetch.attempts),
        execution_options={"synchronize_session": False},
    )
    return PaperFetchClaim(token, {row.paper_id: row.attempts for row in rows})


def _claimed(claim: PaperFetchClaim, paper_ids: Iterable[str]) -> Any:
    return and_(PaperFetch.paper_id.in_(list(paper_ids)), PaperFetch.claim_token == claim.token)


def finish_paper_fetches(
    session: Session, claim: PaperFetchClaim, paper_ids: Iterable[str]
) -> None:
    """These claimed papers are stored now: their rows go."""
    session.execute(
        delete(PaperFetch).where(_claimed(claim, paper_ids)),
        execution_options={"synchronize_session": False},
    )


def mark_papers_missing(
    session: Session, claim: PaperFetchClaim, paper_ids: Iterable[str], reason: str
) -> None:
    """arXiv says these claimed papers do not exist: kept to tell the readers, never retried."""
    session.execute(
        update(PaperFetch)
        .where(_claimed(claim, paper_ids))
        .values(state=FETCH_MISSING, error=reason[:500], lease_until=None, claim_token=None),
        execution_options={"synchronize_session": False},
    )


def retry_paper_fetches(
    session: Session,
    claim: PaperFetchClaim,
    paper_ids: Iterable[str],
    *,
    error: str | None,
    next_attempt_at: datetime | None,
    count_attempt: bool = True,
) -> None:
    """Give claimed papers back, to try again at `next_attempt_at` (None: at once)."""
    session.execute(
        update(PaperFetch)
        .where(_claimed(claim, paper_ids))
        .values(
            attempts=PaperFetch.attempts + (1 if count_attempt else 0),
            next_attempt_at=next_attempt_at,
            error=None if error is None else error[:500],
            lease_until=None,
            claim_token=None,
        ),
        execution_options={"synchronize_session": False},
    )


def paper_fetches_for(session: Session, paper_ids: Iterable[str]) -> dict[str, PaperFetch]:
    """The fetch rows of these papers (pending or missing), by paper id."""
    wanted = list(dict.fromkeys(paper_ids))
    found: dict[str, PaperFetch] = {}
    for start in range(0, len(wanted), _FETCH_IDS_PER_QUERY):
        chunk = wanted[start : start + _FETCH_IDS_PER_QUERY]
        for row in session.scalars(select(PaperFetch).where(PaperFetch.paper_id.in_(chunk))):
            found[row.paper_id] = row
    return found


def paper_fetch_counts(session: Session) -> dict[str, int]:
    """How many liked papers wait to be fetched ("pending") and arXiv has not ("missing")."""
    rows = session.execute(select(PaperFetch.state, func.count()).group_by(PaperFetch.state))
    counts = {FETCH_PENDING: 0, FETCH_MISSING: 0}
    counts.update({state: count for state, count in rows})
    return counts


def _counts_for_latest(key: Any, kind: Any, latest: int) -> Any:
    """(key, kind, count) rows for the `latest` most recent values of `key`, newest first."""
    recent = select(key).where(key.is_not(None)).group_by(key).order_by(key.desc()).limit(latest)
    return (
        select(key, kind, func.count())
        .where(key.in_(recent))
        .group_by(key, kind)
        .order_by(key.desc(), kind)
    )


def paper_counts_by_day(session: Session, days: int = 7) -> list[tuple[date | None, str, int]]:
    """(day, source, count) for the most recent `days` days that have papers."""
    rows = session.execute(_counts_for_latest(PaperRow.published, PaperRow.source, days))
    return [(day, source, count) for day, source, count in rows]


# Source runs and HTTP validators -----------------------------------------------------------


def record_source_run(session: Session, **values: Any) -> SourceRun:
    run = SourceRun(**values)
    session.add(run)
    session.flush()
    return run


def collected_since(session: Session, since: datetime) -> bool:
    """Whether any source answered (with papers or without) in a run finished since `since`."""
    query = select(SourceRun.id).where(SourceRun.finished_at >= since, SourceRun.outcome != "error")
    return session.scalar(query.limit(1)) is not None


def last_source_runs(session: Session, limit: int = 10) -> list[SourceRun]:
    return list(
        session.scalars(select(SourceRun).order_by(SourceRun.started_at.desc()).limit(limit))
    )


def get_validators(session: Session, url: str) -> tuple[str | None, str | None]:
    row = session.get(HttpValidator, url)
    return (row.etag, row.last_modified) if row else (None, None)


def put_validators(
    session: Session, url: str, etag: str | None, last_modified: str | None, now: datetime
) -> None:
    statement = _insert(session, HttpValidator).values(
        url=url, etag=etag, last_modified=last_modified, updated_at=now
    )
    session.execute(
        statement.on_conflict_do_update(
            index_elements=["url"],
            set_={"etag": etag, "last_modified": last_modified, "updated_at": now},
        )
    )


# Subscribers -------------------------------------------------------------------------------


def subscriber_by_email(session: Session, email: str) -> Subscriber | None:
    return session.scalar(select(Subscriber).where(Subscriber.email == email))


def add_subscriber(session: Session, **values: Any) -> Subscriber:
    subscriber = Subscriber(**values)
    session.add(subscriber)
    session.flush()
    return subscriber


def subscriber_counts(session: Session) -> dict[str, int]:
    rows = session.execute(select(Subscriber.state, func.count()).group_by(Subscriber.state))
    return {state: count for state, count in rows}


def record_send_outcome(
    session: Session | Connection, subscriber_id: int, *, hard_failure: bool, threshold: int
) -> bool:
    """Count consecutive hard failures; past the threshold the subscriber is bouncing.

    True when this failure is the one that made the subscriber bouncing.
    """
    if not hard_failure:
        session.execute(
            update(Subscriber)
            .where(Subscriber.id == subscriber_id, Subscriber.hard_failures != 0)
            .values(hard_failures=0)
        )
        return False
    session.execute(
        update(Subscriber)
        .where(Subscriber.id == subscriber_id)
        .values(hard_failures=Subscriber.hard_failures + 1)
    )
    became = session.execute(
        update(Subscriber)
        .where(
            Subscriber.id == subscriber_id,
            Subscriber.hard_failures >= threshold,
            Subscriber.state == ACTIVE,
        )
        .values(state=BOUNCING)
    )
    return bool(became.rowcount)  # type: ignore[attr-defined]


# Planning ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DueSubscriber:
    id: int
    keywords: str
    digest_size: int
    edition: date
    # The local dates of the edition's papers: one day, or the week a weekly edition covers.
    window_days: int = 1


def due_subscribers(
    session: Session,
    now: datetime,
    edition: date | None = None,
    ids: tuple[int, int] | None = None,
) -> list[DueSubscriber]:
    """Active subscribers whose edition is due now (editions.edition_for) and not planned yet.

    A period has one digest whatever the frequency was when it went out: a weekly edition is
    not due while any row of that week exists (someone who was daily until Wednesday), and a
    daily or weekday one not while this week's weekly row was made that local day (someone
    who was weekly until their weekly digest this morning). With `edition`, every active
    subscriber who has not had that edition is due, whatever the hour and the frequency (an
    operator sending a day by hand). With `ids` (first, last), only the subscribers whose id
    is in that range (a shard of the plan).
    """
    columns = (Subscriber.id, Subscriber.keywords, Subscriber.digest_size)
    return [
        DueSubscriber(id, keywords, size, first, days)
        for (id, keywords, size), first, days in _due(session, now, edition, ids, columns)
    ]


def due_subscriber_ids(session: Session, now: datetime, edition: date | None = None) -> list[int]:
    """The ids of the subscribers due_subscribers() would return, in order: cheap to list."""
    return sorted(row[0] for row, _, _ in _due(session, now, edition, None, (Subscriber.id,)))


def _due(
    session: Session,
    now: datetime,
    edition: date | None,
    ids: tuple[int, int] | None,
    columns: tuple[Any, ...],
) -> Iterator[tuple[Any, date, int]]:
    """(the `columns` of a due subscriber, the first day of their edition, its days)."""
    aware = now.replace(tzinfo=UTC)
    scope = [Subscriber.id.between(*ids)] if ids is not None else []
    zones = session.scalars(
        select(Subscriber.timezone).where(Subscriber.state == ACTIVE, *scope).distinct()
    ).all()
    for zone in zones:
        local = aware.astimezone(ZoneInfo(zone))
        if edition is not None:
            yield from _due_in(session, zone, scope, columns, edition, edition, None, 1)
            continue
        # This week's weekly row, if it was made today (a daily row of a past day is not).
        weekly_today = and_(
            Delivery.edition == editions.period(editions.WEEKLY, local.date()).key,
            Delivery.created_at >= _utc_naive(datetime.combine(local.date(), time(), local.tzinfo)),
        )
        for frequency in editions.FREQUENCIES:
            if not editions.sends_on(frequency, local.weekday(), local.date()):
                continue
            period = editions.period(frequency, local.date())
            conditions = [
                *scope,
                Subscriber.frequency == frequency,
                Subscriber.send_hour <= local.hour,
            ]
            if frequency == editions.WEEKLY:
                conditions.append(Subscriber.send_weekday == local.weekday())
                days, also = editions.WEEK_DAYS, None
            else:
                days, also = 1, weekly_today
            yield from _due_in(
                session, zone, conditions, columns, period.first, period.last, also, days
            )


def _due_in(
    session: Session,
    zone: str,
    conditions: list[Any],
    columns: tuple[Any, ...],
    first: date,
    last: date,
    also: Any,
    days: int,
) -> Iterator[tuple[Any, date, int]]:
    """Active subscribers of `zone` matching `conditions` with no row for [first, last] (nor
    one matching `also`): their `columns`, the edition's first day and its days."""
    had = [Delivery.edition.between(first, last)]
    if also is not None:
        had.append(also)
    planned = exists().where(Delivery.subscriber_id == Subscriber.id, or_(*had))
    rows = session.execute(
        select(*columns).where(
            Subscriber.state == ACTIVE, Subscriber.timezone == zone, ~planned, *conditions
        )
    )
    for row in rows:
        yield tuple(row), first, days


def _utc_naive(moment: datetime) -> datetime:
    return moment.astimezone(UTC).replace(tzinfo=None)


def reserved_paper_ids(
    session: Session, subscriber_ids: Sequence[int], since: datetime
) -> dict[int, set[str]]:
    """For each subscriber, the papers their ledger rows created since `since` reserved.

    A paper can only have been planned after it was first collected, so for papers collected
    since `since` this is every earlier digest that held them: the window bounds the read.
    """
    found: dict[int, set[str]] = defaultdict(set)
    for start in range(0, len(subscriber_ids), 5000):
        chunk = list(subscriber_ids[start : start + 5000])
        rows = session.execute(
            select(Delivery.subscriber_id, Delivery.paper_ids).where(
                Delivery.subscriber_id.in_(chunk),
                Delivery.created_at >= since,
                Delivery.paper_ids.is_not(None),
            )
        )
        for subscriber_id, paper_ids in rows:
            found[subscriber_id].update(paper_ids or ())
    return found


def held_items(session: Session, subscriber_id: int, since: datetime) -> list[PlannedItem]:
    """The items of the subscriber's digests created since `since`, newest digest first, as
    they were planned (score, reasons, excerpt); a row whose items can't be read is left out."""
    rows = session.execute(
        select(Delivery.id, Delivery.items)
        .where(
            Delivery.subscriber_id == subscriber_id,
            Delivery.created_at >= since,
            Delivery.paper_ids.is_not(None),
        )
        .order_by(Delivery.created_at.desc(), Delivery.id.desc())
    )
    held: list[PlannedItem] = []
    for delivery_id, stored in rows:
        try:
            held.extend(planned_items(stored))
        except MalformedItems as exc:
            log.warning("delivery %s: its items can't be read (%s)", delivery_id, exc)
    return held


# One statement inserts a whole chunk of the plan on PostgreSQL: the rows travel as one JSON
# document (no per-value escaping on either side), and a row that already exists (a concurrent
# planner's) is skipped.
_PLAN_ROWS_POSTGRES = text(
    """
    INSERT INTO deliveries
        (subscriber_id, edition, state, items, paper_ids, top_score, attempts, created_at)
    SELECT r.subscriber_id, r.edition, r.state, r.items, r.paper_ids, r.top_score, 0, :now
    FROM json_to_recordset(CAST(:rows AS json)) AS r(
        subscriber_id integer, edition date, state text, items json, paper_ids json,
        top_score float8
    )
    ON CONFLICT (subscriber_id, edition) DO NOTHING
    RETURNING id, state
    """
).bindparams(bindparam("now", type_=DateTime()))


def create_deliveries(session: Session, rows: Sequence[PlannedRow], now: datetime) -> int:
    """Insert planned/skipped ledger rows; a row that already exists is left alone.

    A new row reserves its papers (paper_ids), so no later edition picks them again.
    Returns how many rows were created.
    """
    return len(insert_deliveries(session, rows, now))


def insert_deliveries(
    session: Session, rows: Sequence[PlannedRow], now: datetime
) -> list[tuple[int, str]]:
    """create_deliveries(), returning the (id, state) of each row it created, in no order.

    The rows another planner wrote first (a shard that overlaps, or runs twice) are not
    among them, so whoever queues what it created queues each row once.
    """
    if not rows:
        return []
    # The item dicts are written inline, not by a function per item: a big plan has a million.
    values = [
        {
            "subscriber_id": row.subscriber_id,
            "edition": row.edition,
            "state": row.state,
            "items": [
                {
                    "id": item.paper_id,
                    "score": item.score,
                    "matched": item.matched,  # a tuple: JSON writes it as an array
                    "snippet_html": item.snippet_html,
                    # Where each entry matched, for the email to explain like the web page.
                    "where": item.where,  # tuples: JSON writes them as arrays
                    # Written even when empty: a row without it predates the ranker saying so.
                    **({} if item.apart is None else {"apart": item.apart}),
                    # [id, title] of the liked paper it is like; rows planned before: absent.
                    **({"liked": item.liked} if item.liked else {}),
                }
                for item in row.items
            ],
            "paper_ids": [item.paper_id for item in row.items],
            "top_score": row.items[0].score if row.items else None,
        }
        for row in rows
    ]
    if session.get_bind().dialect.name == "postgresql":
        document = json.dumps(values, default=date.isoformat)  # editions are the only dates
        result = session.execute(_PLAN_ROWS_POSTGRES, {"now": now, "rows": document})
        return [(id, state) for id, state in result]
    for value in values:
        value.update(attempts=0, created_at=now)
    statement = (
        _insert(session, Delivery)
        .on_conflict_do_nothing(index_elements=["subscriber_id", "edition"])
        .returning(Delivery.id, Delivery.state)
    )
    return [(id, state) for id, state in session.connection().execute(statement, values)]


class MalformedItems(ValueError):
    """A ledger row's stored items are not a list of items this version can read."""


def planned_items(stored: Any) -> tuple[PlannedItem, ...]:
    """The typed items of a ledger row's stored JSON; raises MalformedItems naming the fault.

    Reads every shape the ledger has held: older rows also kept a `snippet_text` (derived from
    the HTML one, so it is ignored); rows written by hand or by old tests may lack `matched`
    or `snippet_html`.
    """
    if not isinstance(stored, list):
        raise MalformedItems(f"items are a {type(stored).__name__}, not a list")
    items = []
    for position, item in enumerate(stored):
        # The planner's own shape, checked at a glance: ~12 items a row, and the web pages
        # read every recent row of a subscriber (a claimed row in this shape never gets here:
        # read_items() decodes and checks it in one pass).
        typed = _plain_item(item) if type(item) is dict else None
        items.append(typed or _planned_item(position, item))
    return tuple(items)


def _plain_item(item: dict[str, Any]) -> PlannedItem | None:
    """The item as the planner writes it, read with few checks; None for any other shape
    (_planned_item then reads it, or says what is wrong)."""
    get = item.get
    paper_id, matched, where, apart = get("id"), get("matched"), get("where"), get("apart")
    if not (
        type(paper_id) is str
        and paper_id
        and type(get("score")) is float
        and type(get("snippet_html")) is str
        and _strings(matched)
        and type(where) is dict
        and set(map(type, where)) <= _ONLY_STR
        and all(map(_strings, where.values()))
        and (apart is None or _strings(apart))
        and get("liked") is None
    ):
        return None
    return PlannedItem(
        paper_id,
        item["score"],
        tuple(matched or ()),
        item["snippet_html"],
        {entry: tuple(fields) for entry, fields in where.items()},
        None if apart is None else tuple(apart),
        None,
    )


_ONLY_STR = frozenset({str})


def _strings(values: Any) -> bool:
    """Whether `values` is a list of strings (JSON gives exact types; set(map(type)) runs in C)."""
    return type(values) is list and set(map(type, values)) <= _ONLY_STR


def _planned_item(position: int, item: Any) -> PlannedItem:
    # Read once per item of every claimed row: checks that run in C, not a genexpr per value
    # (which cost more than decoding the JSON). Benchmark: tests/perf/bench_delivery.py,
    # "claim, lease, papers".
    if not isinstance(item, dict):
        raise MalformedItems(f"item {position} is a {type(item).__name__}, not an object")
    paper_id, score = item.get("id"), item.get("score")
    matched, snippet = item.get("matched", []), item.get("snippet_html", "")
    if not isinstance(paper_id, str) or not paper_id:
        raise MalformedItems(f"item {position} has no paper id")
    if isinstance(score, bool) or not isinstance(score, (int, float)):
        raise MalformedItems(f"item {position} ({paper_id}) has no numeric score")
    if not _strings(matched):
        raise MalformedItems(f"item {position} ({paper_id}): matched is not a list of terms")
    if not isinstance(snippet, str):
        raise MalformedItems(f"item {position} ({paper_id}): snippet_html is not text")
    where = item.get("where") or {}  # rows planned before the fields were kept have none
    if not (
        isinstance(where, dict)
        and set(map(type, where)) <= _ONLY_STR
        and all(map(_strings, where.values()))
    ):
        raise MalformedItems(f"item {position} ({paper_id}): where is not fields by entry")
    apart = item.get("apart")  # None: planned before the ranker recorded it
    if apart is not None and not _strings(apart):
        raise MalformedItems(f"item {position} ({paper_id}): apart is not a list of entries")
    liked = item.get("liked")  # rows planned before ratings were learned from have none
    if liked is not None and not (
        isinstance(liked, list) and len(liked) == 2 and all(isinstance(x, str) for x in liked)
    ):
        raise MalformedItems(f"item {position} ({paper_id}): liked is not [id, title]")
    return PlannedItem(
        paper_id,
        float(score),
        tuple(matched),
        snippet,
        dict(zip(where, map(tuple, where.values()), strict=True)),
        None if apart is None else tuple(apart),
        (liked[0], liked[1]) if liked else None,
    )


# Delivering --------------------------------------------------------------------------------


def _claimable(now: datetime) -> Any:
    due = or_(Delivery.next_attempt_at.is_(None), Delivery.next_attempt_at <= now)
    return or_(
        and_(Delivery.state.in_((PLANNED, RETRY)), due),
        and_(Delivery.state == SENDING, Delivery.lease_until < now),  # a crashed sender's lease
    )


def due_delivery_ids(
    session: Session, now: datetime, limit: int | None = None, after: int = 0
) -> list[int]:
    """Ledger rows ready to be sent now: planned, retry that is due, or an expired lease.

    `after` skips the ids up to it (rows already handed out), using the primary key.
    """
    query = select(Delivery.id).where(_claimable(now), Delivery.id > after).order_by(Delivery.id)
    if limit:
        query = query.limit(limit)
    return list(session.scalars(query))


def stale_delivery_ids(session: Session, now: datetime, limit: int | None = None) -> list[int]:
    """Rows no queued task will send: a lost sender's expired lease, or a retry now due."""
    query = (
        select(Delivery.id)
        .where(
            or_(
                and_(Delivery.state == SENDING, Delivery.lease_until < now),
                and_(Delivery.state == RETRY, Delivery.next_attempt_at <= now),
            )
        )
        .order_by(Delivery.id)
    )
    if limit:
        query = query.limit(limit)
    return list(session.scalars(query))


def new_claim_token() -> str:
    """A random holder token for one claim: only its holder can mark, renew or release it."""
    return secrets.token_hex(16)


def claim_deliveries(
    session: Session,
    ids: Sequence[int],
    now: datetime,
    lease_seconds: float,
    holder: str | None = None,
) -> list[int]:
    """Claim rows with one conditional UPDATE; returns only the ids this caller now owns.

    `now` is the moment of the claim: the lease runs `lease_seconds` from it. The rows get
    `holder` (a new_claim_token(); a fresh one if left out) as their claim token, which every
    later write of this claim must name.
    """
    if not ids:
        return []
    statement = (
        update(Delivery)
        .where(Delivery.id.in_(list(ids)), _claimable(now))
        .values(
            state=SENDING,
            lease_until=now + timedelta(seconds=lease_seconds),
            claim_token=holder or new_claim_token(),
            attempts=Delivery.attempts + 1,
        )
        .returning(Delivery.id)
    )
    return sorted(session.scalars(statement, execution_options={"synchronize_session": False}))


@dataclass(frozen=True, slots=True)
class ClaimedDelivery:
    """A claimed ledger row with what rendering its digest needs, its items read once."""

    id: int
    edition: date
    items: tuple[PlannedItem, ...]
    attempts: int
    subscriber_id: int
    email: str
    keywords: str
    show_trending: bool
    link_key: str
    hard_failures: int = 0
    claim_token: str = ""  # the holder token its marks must name
    # Why the stored items could not be read: this row then fails alone, at rendering.
    malformed: str | None = None
    weekly: bool = False  # a weekly subscriber's: `edition` is the week's Monday

    @property
    def period(self) -> tuple[date, bool]:
        """(edition, weekly): what the digests of one edition share, words included."""
        return (self.edition, self.weekly)


def load_claimed(session: Session, ids: Sequence[int], holder: str) -> list[ClaimedDelivery]:
    """The rows of `ids` that `holder` holds, with what rendering their digests needs."""
    rows = session.execute(
        select(
            Delivery.id,
            Delivery.edition,
            # The JSON as stored: read_items() decodes and checks it in one pass.
            cast(Delivery.items, Text),
            Delivery.attempts,
            Subscriber.id,
            Subscriber.email,
            Subscriber.keywords,
            Subscriber.show_trending,
            Subscriber.link_key,
            Subscriber.hard_failures,
            Delivery.claim_token,
            Subscriber.frequency,
        )
        .join(Subscriber, Subscriber.id == Delivery.subscriber_id)
        .where(_held(Delivery.id.in_(list(ids)), holder))
        .order_by(Delivery.id)
    )
    claimed = []
    for row in rows:
        items, malformed = _claimed_items(row[2])
        claimed.append(
            ClaimedDelivery(
                id=row[0],
                edition=row[1],
                items=items,
                attempts=row[3],
                subscriber_id=row[4],
                email=row[5],
                keywords=row[6],
                show_trending=row[7],
                link_key=row[8],
                hard_failures=row[9],
                claim_token=row[10],
                malformed=malformed,
                weekly=row[11] == editions.WEEKLY,
            )
        )
    return claimed


def _claimed_items(stored: str | None) -> tuple[tuple[PlannedItem, ...], str | None]:
    """A claimed row's items from their stored JSON, and why they can't be read (or None).

    The planner's shape is read in one pass; any other (older rows, rows written by hand) goes
    through planned_items(), which reads every shape the ledger has held or names the fault.
    """
    items = read_items(stored) if stored is not None else None
    if items is not None:
        return items, None
    try:
        return planned_items(None if stored is None else json.loads(stored)), None
    except (MalformedItems, ValueError) as exc:  # ValueError: not JSON at all
        return (), str(exc)


def _held(rows: Any, holder: str) -> Any:
    """`rows` that are still in the claim `holder` made (not expired and taken over since)."""
    return and_(rows, Delivery.state == SENDING, Delivery.claim_token == holder)


# Built once: marking a row sent runs once per message, so it skips the ORM and the statement's
# construction, and the compiled form comes from SQLAlchemy's cache.
_MARK_SENT = (
    update(Delivery)
    .where(
        Delivery.id == bindparam("row"),
        Delivery.state == SENDING,
        Delivery.claim_token == bindparam("holder"),
    )
    .values(
        state=SENT,
        sent_at=bindparam("at"),
        message_id=bindparam("mid"),
        lease_until=None,
        error=None,
    )
)


def mark_sent(
    connection: Session | Connection,
    delivery_id: int,
    message_id: str,
    now: datetime,
    holder: str,
) -> bool:
    """Record an accepted message; False if `holder` no longer holds the row's claim.

    Pass a Connection in autocommit mode (Database.quick_commits) to make it one round trip.
    """
    params = {"row": delivery_id, "at": now, "mid": message_id, "holder": holder}
    if isinstance(connection, Session):
        connection = connection.connection()
    result = connection.execute(_MARK_SENT, params)
    return bool(result.rowcount)


class SentMarks:
    """mark_sent() on a connection of Database.quick_commits(), straight through its driver.

    The statement is compiled once for the connection's dialect, and each mark is one
    execute on the DBAPI cursor: SQLAlchemy's execute of even a cached statement cost four
    times the database's own work. The values go in as SQLAlchemy's types would write them
    (a datetime through the column type's bind processor), so the row reads the same.
    """

    # Benchmark: tests/perf/bench_delivery.py, "sent mark".

    def __init__(self, connection: Connection) -> None:
        driver: Any = connection.connection.dbapi_connection
        # Each mark commits on its own only on an autocommitting driver connection (psycopg in
        # autocommit, sqlite3 without isolation level), as quick_commits() gives.
        autocommit = getattr(driver, "autocommit", None)
        if type(autocommit) is not bool:  # sqlite3 (3.12 has an int there: legacy control)
            autocommit = getattr(driver, "isolation_level", "") is None
        if not autocommit:
            raise ValueError("SentMarks needs a connection of Database.quick_commits()")
        dialect = connection.dialect
        compiled = _MARK_SENT.compile(dialect=dialect)
        self._sql = compiled.string
        blank = {"row": 0, "at": None, "mid": "", "holder": ""}
        values = compiled.construct_params(blank)
        for bind, name in compiled.bind_names.items():
            # Only the constants (the states; None) are written here: per-mark values below.
            process = bind.type.dialect_impl(dialect).bind_processor(dialect)
            if process is not None and name not in blank:
                values[name] = process(values[name])
        at = Delivery.__table__.c.sent_at.type.dialect_impl(dialect)
        self._at = at.bind_processor(dialect) or (lambda value: value)
        self._values = values
        self._order = tuple(compiled.positiontup or ()) if dialect.positional else None
        self._cursor = driver.cursor()

    def __call__(self, delivery_id: int, message_id: str, now: datetime, holder: str) -> bool:
        """As mark_sent(): record an accepted message; False if `holder` lost the claim."""
        values = self._values
        values["row"], values["at"], values["mid"], values["holder"] = (
            delivery_id,
            self._at(now),
            message_id,
            holder,
        )
        params: Any = values if self._order is None else [values[k] for k in self._order]
        self._cursor.execute(self._sql, params)
        return bool(self._cursor.rowcount)


def mark_retry(
    session: Session | Connection,
    delivery_id: int,
    error: str,
    next_attempt_at: datetime,
    holder: str,
) -> bool:
    """Put a held row back for a later try; False if `holder` no longer holds it."""
    result = session.execute(
        update(Delivery)
        .where(_held(Delivery.id == delivery_id, holder))
        .values(state=RETRY, error=error, next_attempt_at=next_attempt_at, lease_until=None)
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


def mark_failed(session: Session | Connection, delivery_id: int, error: str, holder: str) -> bool:
    """Give up on a held row for good; False if `holder` no longer holds it."""
    result = session.execute(
        update(Delivery)
        .where(_held(Delivery.id == delivery_id, holder))
        .values(state=FAILED, error=error, lease_until=None)
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


def renew_leases(
    connection: Session | Connection, ids: Sequence[int], holder: str, lease_until: datetime
) -> set[int]:
    """Extend the lease of the rows of `ids` that `holder` still holds; returns those ids.

    One UPDATE: a row another sender has taken over since is neither extended nor returned.
    """
    if not ids:
        return set()
    statement = (
        update(Delivery)
        .where(_held(Delivery.id.in_(list(ids)), holder))
        .values(lease_until=lease_until)
        .returning(Delivery.id)
    )
    return set(connection.scalars(statement, execution_options={"synchronize_session": False}))


def release_deliveries(session: Session | Connection, ids: Sequence[int], holder: str) -> int:
    """Hand held rows back untouched (a clean shutdown): they are sent on the next run.

    Rows `holder` no longer holds are left to their new holder. Returns how many went back.
    """
    if not ids:
        return 0
    result = session.execute(
        update(Delivery)
        .where(_held(Delivery.id.in_(list(ids)), holder))
        .values(state=PLANNED, lease_until=None, claim_token=None, attempts=Delivery.attempts - 1)
    )
    return int(result.rowcount)  # type: ignore[attr-defined]


def cancel_for_subscriber(session: Session, subscriber_id: int) -> None:
    """An unsubscribed subscriber gets nothing already planned."""
    session.execute(
        delete(Delivery).where(
            Delivery.subscriber_id == subscriber_id, Delivery.state.in_((PLANNED, RETRY))
        )
    )


def delete_subscriber(session: Session, subscriber_id: int) -> int:
    """Remove a subscriber and every ledger row of theirs; returns how many rows went with them.

    The ledger rows are deleted first and explicitly: the foreign key's cascade is not relied
    on (SQLite enforces it only where the connection turned foreign keys on).
    """
    ledger = session.execute(delete(Delivery).where(Delivery.subscriber_id == subscriber_id))
    clear_ratings(session, subscriber_id)
    forget_bounce_events(session, subscriber_id)
    session.execute(delete(Subscriber).where(Subscriber.id == subscriber_id))
    return int(getattr(ledger, "rowcount", 0) or 0)


def delivery_counts(session: Session, editions: int = 5) -> list[tuple[date, str, int]]:
    """(edition, state, count) for the most recent editions."""
    rows = session.execute(_counts_for_latest(Delivery.edition, Delivery.state, editions))
    return [(edition, state, count) for edition, state, count in rows]


def subscribers_by_id(session: Session, ids: Iterable[int]) -> dict[int, Subscriber]:
    wanted = list(dict.fromkeys(ids))
    found: dict[int, Subscriber] = {}
    for start in range(0, len(wanted), 5000):
        chunk = wanted[start : start + 5000]
        found.update(
            {s.id: s for s in session.scalars(select(Subscriber).where(Subscriber.id.in_(chunk)))}
        )
    return found


def delivery_ids_for(session: Session, subscriber_id: int, edition: date) -> list[int]:
    return list(
        session.scalars(
            select(Delivery.id).where(
                Delivery.subscriber_id == subscriber_id, Delivery.edition == edition
            )
        )
    )


# Web ---------------------------------------------------------------------------------------


def subscriber_by_id(session: Session, subscriber_id: int) -> Subscriber | None:
    return session.get(Subscriber, subscriber_id)


def delete_expired_pending(session: Session, now: datetime, hours: float) -> int:
    """Delete the sign-ups never confirmed whose last confirmation link expired `hours` ago.

    Only pending rows: an unsubscribed address that signed up again keeps its history, and
    active ones are never touched. The clock starts at the last confirmation mail, so someone
    who asked for a new link keeps the full window. Returns how many rows were deleted.
    """
    last_link = func.coalesce(Subscriber.confirm_sent_at, Subscriber.created_at)
    result = session.execute(
        delete(Subscriber)
        .where(Subscriber.state == PENDING, last_link < now - timedelta(hours=hours))
        .execution_options(synchronize_session=False)
    )
    return int(result.rowcount)  # type: ignore[attr-defined]


# Confirmation requests ---------------------------------------------------------------------


def queue_confirmation(
    session: Session,
    *,
    email: str,
    keywords: str,
    timezone: str,
    send_hour: int,
    digest_size: int,
    now: datetime,
    frequency: str = DAILY,
    send_weekday: int = 0,
) -> int:
    """Queue the confirmation mail of a sign-up; returns the request's id.

    One statement, the same whatever is known of the address: a new row, or the address's
    row queued again with what was typed last (also while a sender holds it: its claim then
    ends without removing the row, and the row is handled once more).
    """
    values = {
        "keywords": keywords,
        "timezone": timezone,
        "send_hour": send_hour,
        "digest_size": digest_size,
        "frequency": frequency,
        "send_weekday": send_weekday,
        "requested_at": now,
        "state": QUEUED,
        "attempts": 0,
        "next_attempt_at": None,
        "error": None,
    }
    statement = (
        _insert(session, ConfirmationRequest)
        .values(email=email, **values)
        .on_conflict_do_update(index_elements=["email"], set_=values)
        .returning(ConfirmationRequest.id)
    )
    return int(session.execute(statement).scalar_one())


def _confirmation_claimable(now: datetime) -> Any:
    request = ConfirmationRequest
    free = or_(request.lease_until.is_(None), request.lease_until < now)
    due = or_(request.next_attempt_at.is_(None), request.next_attempt_at <= now)
    # A row left `sending` by a sender that died is claimable once its lease is over.
    return and_(free, or_(and_(request.state.in_((QUEUED, RETRY)), due), request.state == SENDING))


def due_confirmation_ids(session: Session, now: datetime, limit: int = 1000) -> list[int]:
    """Requests a sender may claim now: queued, a retry that is due, or a lapsed lease."""
    query = (
        select(ConfirmationRequest.id)
        .where(_confirmation_claimable(now))
        .order_by(ConfirmationRequest.id)
        .limit(limit)
    )
    return list(session.scalars(query))


@dataclass(frozen=True, slots=True)
class ConfirmationClaim:
    """A request this sender holds until `lease_until`, with what was typed."""

    id: int
    lease_until: datetime
    email: str
    keywords: str
    timezone: str
    send_hour: int
    digest_size: int
    attempts: int
    frequency: str = DAILY
    send_weekday: int = 0


def claim_confirmations(
    session: Session,
    now: datetime,
    lease: timedelta,
    *,
    ids: Sequence[int] | None = None,
    limit: int = 100,
) -> list[ConfirmationClaim]:
    """Claim due requests (all of them, or only `ids`) with one conditional UPDATE.

    Returns only what this caller now holds: of two senders, one gets each row.
    """
    wanted = list(ids) if ids is not None else due_confirmation_ids(session, now, limit)
    if not wanted:
        return []
    until = now + lease
    request = ConfirmationRequest
    rows = session.execute(
        update(request)
        .where(request.id.in_(wanted), _confirmation_claimable(now))
        .values(state=SENDING, lease_until=until, attempts=request.attempts + 1)
        .returning(
            request.id,
            request.email,
            request.keywords,
            request.timezone,
            request.send_hour,
            request.digest_size,
            request.attempts,
            request.frequency,
            request.send_weekday,
        ),
        execution_options={"synchronize_session": False},
    )
    claims = [
        ConfirmationClaim(
            row.id,
            until,
            row.email,
            row.keywords,
            row.timezone,
            row.send_hour,
            row.digest_size,
            row.attempts,
            row.frequency,
            row.send_weekday,
        )
        for row in rows
    ]
    return sorted(claims, key=lambda claim: claim.id)


def _confirmation_held(claim: ConfirmationClaim) -> Any:
    return and_(
        ConfirmationRequest.id == claim.id, ConfirmationRequest.lease_until == claim.lease_until
    )


def finish_confirmation(session: Session, claim: ConfirmationClaim) -> None:
    """The request is handled: remove it, unless a sign-up queued it again meanwhile."""
    session.execute(
        delete(ConfirmationRequest).where(
            _confirmation_held(claim), ConfirmationRequest.state == SENDING
        )
    )
    session.execute(
        update(ConfirmationRequest).where(_confirmation_held(claim)).values(lease_until=None)
    )


def mark_confirmation_sent(
    session: Session, claim: ConfirmationClaim, subscriber_id: int, now: datetime
) -> None:
    """The relay accepted the mail: stamp the subscriber and finish the request."""
    session.execute(
        update(Subscriber).where(Subscriber.id == subscriber_id).values(confirm_sent_at=now)
    )
    finish_confirmation(session, claim)


def retry_confirmation(
    session: Session,
    claim: ConfirmationClaim,
    *,
    state: str,
    next_attempt_at: datetime | None,
    error: str | None,
    attempts: int | None = None,
) -> None:
    """Give the request back: to try again at `next_attempt_at` (RETRY or QUEUED), or FAILED."""
    values: dict[str, Any] = {"lease_until": None, "next_attempt_at": next_attempt_at}
    if error is not None:
        values["error"] = error
    if attempts is not None:
        values["attempts"] = attempts
    request = ConfirmationRequest
    # A sign-up that queued the row again meanwhile wins: it keeps its state and its values.
    session.execute(
        update(request)
        .where(_confirmation_held(claim), request.state == SENDING)
        .values(state=state, **values)
    )
    session.execute(update(request).where(_confirmation_held(claim)).values(lease_until=None))


def confirmation_requests(session: Session) -> list[ConfirmationRequest]:
    """Every queued, held, retrying or failed request, oldest first (status and tests)."""
    return list(session.scalars(select(ConfirmationRequest).order_by(ConfirmationRequest.id)))


def database_ok(session: Session) -> bool:
    """A round trip to the database (raises if it is unreachable)."""
    return session.scalar(select(1)) == 1


def core_tables_readable(session: Session) -> None:
    """Read a row of each core table: raises if a table is gone or the file is not a database.

    `SELECT 1` never touches the file, so it answers even when the data is lost.
    """
    for table in (Subscriber, Delivery, PaperRow):
        session.execute(select(table.__table__.c.id).limit(1)).all()


# Metrics: the ledger read at scrape time ----------------------------------------------------


def _editions(query: Any, since: date | None, before: date | None) -> Any:
    """`query` narrowed to the editions in [since, before) (ix_deliveries_edition serves it)."""
    if since is not None:
        query = query.where(Delivery.edition >= since)
    if before is not None:
        query = query.where(Delivery.edition < before)
    return query


def delivery_state_counts(
    session: Session, *, since: date | None = None, before: date | None = None
) -> dict[str, int]:
    """Rows of the ledger in each state, of the editions in [since, before) (default: all)."""
    query = _editions(select(Delivery.state, func.count()), since, before)
    rows = session.execute(query.group_by(Delivery.state))
    return {state: count for state, count in rows}


def source_run_counts(session: Session) -> dict[tuple[str, str], int]:
    """Runs recorded in source_runs per (source, outcome)."""
    query = select(SourceRun.source, SourceRun.outcome, func.count()).group_by(
        SourceRun.source, SourceRun.outcome
    )
    return {(source, outcome): count for source, outcome, count in session.execute(query)}


@dataclass(frozen=True)
class LatencyHistogram:
    """Sent digests by seconds from planned (created_at) to accepted by the relay (sent_at)."""

    bounds: tuple[float, ...]
    cumulative: tuple[int, ...]  # digests at or under each bound, one per bound
    count: int
    total_seconds: float

    def __add__(self, other: LatencyHistogram) -> LatencyHistogram:
        assert self.bounds == other.bounds
        return LatencyHistogram(
            bounds=self.bounds,
            cumulative=tuple(a + b for a, b in zip(self.cumulative, other.cumulative, strict=True)),
            count=self.count + other.count,
            total_seconds=self.total_seconds + other.total_seconds,
        )


def _seconds_between(session: Session, start: Any, end: Any) -> Any:
    """`end - start` in seconds, as each dialect computes it from two DateTime columns."""
    if session.get_bind().dialect.name == "postgresql":
        return func.extract("epoch", end - start)
    return (func.julianday(end) - func.julianday(start)) * 86400.0


def delivery_latency(
    session: Session,
    bounds: Sequence[float],
    *,
    since: date | None = None,
    before: date | None = None,
) -> LatencyHistogram:
    """The latency of the sent digests of the editions in [since, before), bucketed by the
    database in one pass over their rows."""
    seconds = _seconds_between(session, Delivery.created_at, Delivery.sent_at)
    columns = [func.count(), func.coalesce(func.sum(seconds), 0.0)] + [
        func.coalesce(func.sum(case((seconds <= bound, 1), else_=0)), 0) for bound in bounds
    ]
    query = select(*columns).where(Delivery.state == SENT, Delivery.sent_at.is_not(None))
    count, total, *cumulative = session.execute(_editions(query, since, before)).one()
    return LatencyHistogram(
        bounds=tuple(bounds),
        cumulative=tuple(int(n) for n in cumulative),
        count=int(count),
        total_seconds=float(total),
    )


# Operator: one subscriber's record, and the subscriber list in and out (CSV) ---------------


def recent_deliveries(session: Session, subscriber_id: int, limit: int = 10) -> list[Delivery]:
    """A subscriber's latest ledger rows, newest edition first (`newsletter status --email`)."""
    return list(
        session.scalars(
            select(Delivery)
            .where(Delivery.subscriber_id == subscriber_id)
            .order_by(Delivery.edition.desc(), Delivery.id.desc())
            .limit(limit)
        )
    )


def confirmation_request_for(session: Session, email: str) -> ConfirmationRequest | None:
    """The confirmation mail queued for an address, if one is waiting, retrying or failed."""
    return session.scalar(select(ConfirmationRequest).where(ConfirmationRequest.email == email))


def subscribers_for_export(session: Session, batch: int = 1000) -> Iterable[Subscriber]:
    """Every subscriber but the unconfirmed sign-ups, in id order, read `batch` rows at a time."""
    last = 0
    while True:
        rows = list(
            session.scalars(
                select(Subscriber)
                .where(Subscriber.state != PENDING, Subscriber.id > last)
                .order_by(Subscriber.id)
                .limit(batch)
            )
        )
        yield from rows
        if len(rows) < batch:
            return
        last = rows[-1].id


def subscribers_by_email(session: Session, emails: Iterable[str]) -> dict[str, Subscriber]:
    """The subscribers with these (normalized) addresses, by address."""
    wanted = list(dict.fromkeys(emails))
    found: dict[str, Subscriber] = {}
    for start in range(0, len(wanted), 1000):
        chunk = wanted[start : start + 1000]
        query = select(Subscriber).where(Subscriber.email.in_(chunk))
        found.update({s.email: s for s in session.scalars(query)})
    return found


# Admin dashboard: operators, searches, the ledger by day, chart data, resends ------------


def operator_count(session: Session) -> int:
    """How many operator accounts exist: with none, the dashboard answers 404."""
    return int(session.scalar(select(func.count()).select_from(Operator)) or 0)


def operator_by_username(session: Session, username: str) -> Operator | None:
    return session.scalar(select(Operator).where(Operator.username == username))


def operators(session: Session) -> list[Operator]:
    """Every operator account, by name."""
    return list(session.scalars(select(Operator).order_by(Operator.username)))


def add_operator(session: Session, username: str, password_hash: str, now: datetime) -> Operator:
    """Add an account, or give an existing one this password (a password reset)."""
    operator = operator_by_username(session, username)
    if operator is None:
        operator = Operator(username=username, password_hash=password_hash, created_at=now)
        session.add(operator)
    else:
        operator.password_hash = password_hash
    session.flush()
    return operator


def remove_operator(session: Session, username: str) -> bool:
    """Delete an account (its sessions stop working); False if there was none."""
    result = session.execute(delete(Operator).where(Operator.username == username))
    return bool(result.rowcount)  # type: ignore[attr-defined]


def record_operator_login(session: Session, operator_id: int, now: datetime) -> None:
    session.execute(update(Operator).where(Operator.id == operator_id).values(last_login_at=now))


def search_subscribers(
    session: Session,
    *,
    address: str = "",
    state: str = "",
    keyword: str = "",
    limit: int = 50,
) -> list[Subscriber]:
    """Subscribers whose address and keywords contain the given text (any case), in `state`
    if given; newest first. The text is matched literally (% and _ are not wildcards)."""
    query = select(Subscriber)
    if address:
        query = query.where(func.lower(Subscriber.email).contains(address.lower(), autoescape=True))
    if keyword:
        query = query.where(
            func.lower(Subscriber.keywords).contains(keyword.lower(), autoescape=True)
        )
    if state:
        query = query.where(Subscriber.state == state)
    return list(session.scalars(query.order_by(Subscriber.id.desc()).limit(limit)))


def subscriber_deliveries(session: Session, subscriber_id: int, limit: int = 30) -> list[Delivery]:
    """A subscriber's ledger rows, the latest edition first."""
    return list(
        session.scalars(
            select(Delivery)
            .where(Delivery.subscriber_id == subscriber_id)
            .order_by(Delivery.edition.desc(), Delivery.id.desc())
            .limit(limit)
        )
    )


def subscriber_resends(session: Session, subscriber_id: int) -> list[DeliveryResend]:
    """The digests operators sent this subscriber again, the latest first."""
    return list(
        session.scalars(
            select(DeliveryResend)
            .where(DeliveryResend.subscriber_id == subscriber_id)
            .order_by(DeliveryResend.id.desc())
        )
    )


def edition_errors(session: Session, editions: Sequence[date]) -> list[tuple[date, str, str, int]]:
    """(edition, state, error, count) of the failed and retrying rows of `editions`."""
    if not editions:
        return []
    rows = session.execute(
        select(Delivery.edition, Delivery.state, Delivery.error, func.count())
        .where(Delivery.edition.in_(list(editions)), Delivery.state.in_((FAILED, RETRY)))
        .group_by(Delivery.edition, Delivery.state, Delivery.error)
        .order_by(Delivery.edition.desc(), func.count().desc())
    )
    return [(edition, state, error or "", count) for edition, state, error, count in rows]


def subscriber_history(
    session: Session,
) -> list[tuple[str, Any, Any, Any, int]]:
    """(state, created day, confirmed day, unsubscribed day, count), days as dates or ISO text
    (SQLite): what the chart of subscribers over time is computed from, grouped to stay small."""
    created, confirmed, left = (
        func.date(Subscriber.created_at),
        func.date(Subscriber.confirmed_at),
        func.date(Subscriber.unsubscribed_at),
    )
    rows = session.execute(
        select(Subscriber.state, created, confirmed, left, func.count()).group_by(
            Subscriber.state, created, confirmed, left
        )
    )
    return [(state, a, b, c, count) for state, a, b, c, count in rows]


@dataclass(frozen=True, slots=True)
class ResendOutcome:
    """What an operator's resend did: `resent` the first time, else why nothing changed."""

    status: str  # resent; repeated (this click was handled already), inactive, missing, busy, empty
    delivery_id: int | None = None


def resend_delivery(
    session: Session,
    *,
    subscriber_id: int,
    edition: date,
    operator: str,
    request_key: str,
    now: datetime,
) -> ResendOutcome:
    """Send an edition's digest to its subscriber again, on an operator's word.

    The sent or failed row is replaced by a planned copy under a new id: the sender then
    mails it with a new Message-ID (one derived from the old id would be taken for a
    duplicate by mail clients and by the outbox). The copy keeps the items and the papers
    they reserve; what the row was is recorded in delivery_resends. `request_key` makes the
    resend idempotent: the same click handled twice resends once.
    """
    if session.scalar(select(DeliveryResend.id).where(DeliveryResend.request_key == request_key)):
        return ResendOutcome("repeated")
    # Only to an active subscriber: a paused, bouncing or unsubscribed one gets no mail at all.
    state = session.scalar(select(Subscriber.state).where(Subscriber.id == subscriber_id))
    if state != ACTIVE:
        return ResendOutcome("inactive")
    row = session.scalar(
        select(Delivery).where(Delivery.subscriber_id == subscriber_id, Delivery.edition == edition)
    )
    if row is None:
        return ResendOutcome("missing")
    if row.state == SKIPPED or not row.items:
        return ResendOutcome("empty")
    if row.state not in (SENT, FAILED):
        return ResendOutcome("busy", row.id)  # still on its way: nothing to send again
    old = (row.id, row.state, row.message_id, row.sent_at, row.items, row.paper_ids)
    values = {"items": row.items, "paper_ids": row.paper_ids, "top_score": row.top_score}
    if session.get_bind().dialect.name == "sqlite":
        # SQLite gives a new row the highest id + 1: deleting the highest row would hand its
        # id, and so its Message-ID, to the copy. Past the highest, as SQLite itself counts.
        values["id"] = int(session.scalar(select(func.max(Delivery.id))) or 0) + 1
    session.expunge(row)
    # The row must still be sent or failed as read: a concurrent resend loses here.
    gone = session.execute(
        delete(Delivery).where(Delivery.id == old[0], Delivery.state.in_((SENT, FAILED)))
    )
    if not gone.rowcount:  # type: ignore[attr-defined]
        return ResendOutcome("busy")
    copy = Delivery(
        subscriber_id=subscriber_id,
        edition=edition,
        state=PLANNED,
        attempts=0,
        created_at=now,
        **values,
    )
    session.add(copy)
    session.flush()
    session.add(
        DeliveryResend(
            request_key=request_key,
            subscriber_id=subscriber_id,
            edition=edition,
            operator=operator,
            previous_delivery_id=old[0],
            previous_state=old[1],
            previous_message_id=old[2],
            previous_sent_at=old[3],
            delivery_id=copy.id,
            created_at=now,
        )
    )
    session.flush()
    return ResendOutcome("resent", copy.id)


# Bounces, complaints and the suppression list -----------------------------------------------


def subscriber_of_delivery(
    session: Session, delivery_id: int, *, sent_only: bool = False
) -> Subscriber | None:
    """The subscriber a ledger row was for (only if it was sent, with `sent_only`)."""
    query = select(Subscriber).join(Delivery, Delivery.subscriber_id == Subscriber.id)
    query = query.where(Delivery.id == delivery_id)
    if sent_only:
        query = query.where(Delivery.state == SENT)
    return session.scalar(query)


def recently_sent_subscriber(session: Session, email: str, since: datetime) -> Subscriber | None:
    """The subscriber with this address if a digest was sent to them since `since`."""
    sent = exists().where(
        Delivery.subscriber_id == Subscriber.id, Delivery.state == SENT, Delivery.sent_at >= since
    )
    return session.scalar(select(Subscriber).where(func.lower(Subscriber.email) == email, sent))


def add_bounce_event(session: Session, **values: Any) -> BounceEvent:
    """Keep one bounce or complaint event."""
    event = BounceEvent(**values)
    session.add(event)
    session.flush()
    return event


def bounce_event_seen(session: Session, report_key: str, recipient: str, kind: str) -> bool:
    """Whether this report's event for this recipient was recorded already."""
    return (
        session.scalar(
            select(BounceEvent.id).where(
                BounceEvent.report_key == report_key,
                BounceEvent.reported_recipient == recipient[:320],
                BounceEvent.kind == kind,
            )
        )
        is not None
    )


def count_bounce_events(session: Session, subscriber_id: int, kind: str, since: datetime) -> int:
    """How many events of a kind the subscriber had since `since`."""
    return int(
        session.scalar(
            select(func.count()).where(
                BounceEvent.subscriber_id == subscriber_id,
                BounceEvent.kind == kind,
                BounceEvent.received_at >= since,
            )
        )
        or 0
    )


def bounce_events_for(session: Session, subscriber_id: int) -> list[BounceEvent]:
    """A subscriber's bounce and complaint events, newest first."""
    return list(
        session.scalars(
            select(BounceEvent)
            .where(BounceEvent.subscriber_id == subscriber_id)
            .order_by(BounceEvent.received_at.desc(), BounceEvent.id.desc())
        )
    )


def forget_bounce_events(session: Session, subscriber_id: int) -> None:
    """Detach a deleted subscriber's events and blank their address; the counts stay."""
    session.execute(
        update(BounceEvent)
        .where(BounceEvent.subscriber_id == subscriber_id)
        .values(subscriber_id=None, recipient="", reported_recipient="", reason="")
    )


def mark_bouncing(session: Session, subscriber: Subscriber) -> None:
    """Stop all mail to a subscriber whose address bounces; their old links die with it."""
    from newsletter.tokens import new_link_key

    subscriber.state = BOUNCING
    # A new key: no link mailed before (a manage page's "resume", an old confirmation)
    # brings the address back; only a confirmation mailed from now on does.
    subscriber.link_key = new_link_key()
    cancel_for_subscriber(session, subscriber.id)
    session.flush()


def complaints_and_sent_by_day(session: Session, days: int = 7) -> list[tuple[date, int, int]]:
    """(day, complaints, digests sent) for the last `days` days (UTC), oldest first."""
    first = utcnow().date() - timedelta(days=days - 1)
    since = datetime.combine(first, datetime.min.time())

    def per_day(column: Any, *where: Any) -> dict[date, int]:
        # date() is a function of both SQLite (text) and PostgreSQL (a date): read either.
        day = func.date(column)
        rows = session.execute(
            select(day, func.count()).where(column >= since, *where).group_by(day)
        )
        return {date.fromisoformat(str(value)[:10]): count for value, count in rows}

    complaints = per_day(BounceEvent.received_at, BounceEvent.kind == "complaint")
    sent = per_day(Delivery.sent_at, Delivery.state == SENT)
    return [
        (day, complaints.get(day, 0), sent.get(day, 0))
        for day in (first + timedelta(days=n) for n in range(days))
    ]


def add_suppression(
    session: Session, address_hash: str, reason: str, detail: str, now: datetime
) -> None:
    """Suppress an address hash; an existing entry keeps its first reason."""
    statement = _insert(session, Suppression).values(
        address_hash=address_hash, reason=reason, detail=detail, created_at=now
    )
    session.execute(statement.on_conflict_do_nothing(index_elements=["address_hash"]))


def claim_webhook_token(session: Session, token: str, now: datetime, since: datetime) -> bool:
    """True if `token` was not seen since `since` (and is now recorded), False on reuse."""
    session.execute(delete(WebhookToken).where(WebhookToken.seen_at < since))
    statement = _insert(session, WebhookToken).values(token=token[:160], seen_at=now)
    result = session.execute(statement.on_conflict_do_nothing(index_elements=["token"]))
    return bool(getattr(result, "rowcount", 0))


def suppression(session: Session, address_hash: str) -> Suppression | None:
    return session.get(Suppression, address_hash)


def suppressions(session: Session) -> list[Suppression]:
    """The whole suppression list, newest first."""
    return list(session.scalars(select(Suppression).order_by(Suppression.created_at.desc())))


def remove_suppression(session: Session, address_hash: str) -> bool:
    """Lift a suppression; False if there was none."""
    result = session.execute(delete(Suppression).where(Suppression.address_hash == address_hash))
    return bool(getattr(result, "rowcount", 0))


# The reader's archive and feed: the digests they were sent ------------------------------------


def delivery_of_subscriber(
    session: Session, delivery_id: int, subscriber_id: int
) -> Delivery | None:
    """One ledger row, if it is this subscriber's (a view link names both).

    A resend replaces the row under a new id: the first mail's link then finds the new row.
    """
    for _ in range(10):  # each resend of the edition moved the row once more
        row = session.scalar(
            select(Delivery).where(
                Delivery.id == delivery_id, Delivery.subscriber_id == subscriber_id
            )
        )
        if row is not None:
            return row
        moved = session.scalar(
            select(DeliveryResend.delivery_id).where(
                DeliveryResend.previous_delivery_id == delivery_id,
                DeliveryResend.subscriber_id == subscriber_id,
            )
        )
        if moved is None:
            return None
        delivery_id = moved
    return None


def delivery_for_edition(session: Session, subscriber_id: int, edition: date) -> Delivery | None:
    """A subscriber's ledger row of one edition (a rating link names the edition: a resend's
    new row is still that edition's)."""
    return session.scalar(
        select(Delivery).where(Delivery.subscriber_id == subscriber_id, Delivery.edition == edition)
    )


def sent_deliveries(session: Session, subscriber_id: int, limit: int = 30) -> list[Delivery]:
    """A subscriber's sent digests, the latest sent first (archive and feed)."""
    return list(
        session.scalars(
            select(Delivery)
            .where(Delivery.subscriber_id == subscriber_id, Delivery.state == SENT)
            .order_by(Delivery.sent_at.desc(), Delivery.id.desc())
            .limit(limit)
        )
    )


# Ratings -----------------------------------------------------------------------------------

# Ids per IN list: well under SQLite's limit on bound parameters.
_IN_CHUNK = 900


def set_rating(
    session: Session,
    subscriber_id: int,
    paper_id: str,
    value: int,
    *,
    origin: str,
    now: datetime,
    edition: date | None = None,
) -> None:
    """Store a subscriber's rating of a paper (1 or -1), replacing the one they gave before."""
    if value not in (1, -1):
        raise ValueError(f"a rating is 1 or -1, not {value!r}")
    values = {"value": value, "origin": origin, "edition": edition, "rated_at": now}
    statement = _insert(session, Rating).values(
        subscriber_id=subscriber_id, paper_id=paper_id, **values
    )
    session.execute(
        statement.on_conflict_do_update(index_elements=["subscriber_id", "paper_id"], set_=values)
    )


def clear_rating(session: Session, subscriber_id: int, paper_id: str) -> bool:
    """Forget one rating; False if there was none."""
    result = session.execute(
        delete(Rating).where(Rating.subscriber_id == subscriber_id, Rating.paper_id == paper_id)
    )
    return bool(getattr(result, "rowcount", 0))


def clear_ratings(session: Session, subscriber_id: int) -> int:
    """Forget every rating of a subscriber; returns how many there were."""
    result = session.execute(delete(Rating).where(Rating.subscriber_id == subscriber_id))
    return int(getattr(result, "rowcount", 0) or 0)


def subscriber_ratings(session: Session, subscriber_id: int) -> list[Rating]:
    """A subscriber's ratings, the latest first."""
    query = (
        select(Rating)
        .where(Rating.subscriber_id == subscriber_id)
        .order_by(Rating.rated_at.desc(), Rating.paper_id)
    )
    return list(session.scalars(query))


def ratings_by_subscriber(
    session: Session, subscriber_ids: Iterable[int]
) -> dict[int, dict[str, int]]:
    """{subscriber id: {paper id: 1 or -1}} for those of `subscriber_ids` who rated anything."""
    found: dict[int, dict[str, int]] = {}
    ids = sorted(set(subscriber_ids))
    for start in range(0, len(ids), _IN_CHUNK):
        query = select(Rating.subscriber_id, Rating.paper_id, Rating.value).where(
            Rating.subscriber_id.in_(ids[start : start + _IN_CHUNK])
        )
        for subscriber_id, paper_id, value in session.execute(query):
            found.setdefault(subscriber_id, {})[paper_id] = value
    return found
