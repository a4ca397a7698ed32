"""SQLAlchemy tables: subscribers, papers, source runs, HTTP validators and the delivery ledger."""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    Date,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from newsletter.tokens import new_link_key


class Base(DeclarativeBase):
    pass


# Subscriber states. Only "active" subscribers are planned.
PENDING, ACTIVE, PAUSED, UNSUBSCRIBED, BOUNCING = (
    "pending",
    "active",
    "paused",
    "unsubscribed",
    "bouncing",
)
SUBSCRIBER_STATES = (PENDING, ACTIVE, PAUSED, UNSUBSCRIBED, BOUNCING)

# Delivery states: planned -> sending (leased) -> sent | retry | failed; skipped if nothing matched.
PLANNED, SENDING, SENT, RETRY, FAILED, SKIPPED = (
    "planned",
    "sending",
    "sent",
    "retry",
    "failed",
    "skipped",
)
DELIVERY_STATES = (PLANNED, SENDING, SENT, RETRY, FAILED, SKIPPED)


class Subscriber(Base):
    __tablename__ = "subscribers"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    email: Mapped[str] = mapped_column(String(320), unique=True)
    state: Mapped[str] = mapped_column(String(16), default=PENDING, index=True)
    keywords: Mapped[str] = mapped_column(Text)
    timezone: Mapped[str] = mapped_column(String(64), default="UTC")
    send_hour: Mapped[int] = mapped_column(Integer, default=7)
    digest_size: Mapped[int] = mapped_column(Integer, default=10)
    show_trending: Mapped[bool] = mapped_column(Boolean, default=True)
    # Carried in every signed link and compared with it: a new key (on unsubscribe and on
    # coming back) revokes every link issued before, and a deleted row's links die with it even
    # when SQLite gives its id to the next sign-up.
    link_key: Mapped[str] = mapped_column(String(32), unique=True, index=True, default=new_link_key)
    hard_failures: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(DateTime)
    confirmed_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    unsubscribed_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    confirm_sent_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    # What an unconfirmed sign-up of a known pending or unsubscribed address typed
    # ({"keywords", "timezone", "send_hour", "digest_size", "frequency", "send_weekday"}):
    # applied only when the owner confirms, so that nobody else can change the stored settings.
    pending_preferences: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    # How often (editions.FREQUENCIES) and, for weekly, on which local weekday (Monday = 0).
    frequency: Mapped[str] = mapped_column(String(16), default="daily", server_default="daily")
    send_weekday: Mapped[int] = mapped_column(Integer, default=0, server_default="0")


# Confirmation requests: queued by the sign-up page, sent in the background.
QUEUED = "queued"
CONFIRMATION_STATES = (QUEUED, SENDING, RETRY, FAILED)


class ConfirmationRequest(Base):
    """A sign-up waiting for its confirmation mail, one row per address (the latest wins).

    queued -> sending (claimed with a lease) -> deleted once handled | retry (next try) |
    failed (refused for good, or out of tries). A new sign-up of the address queues it again.
    """

    __tablename__ = "confirmation_requests"
    __table_args__ = (Index("ix_confirmation_requests_state_next", "state", "next_attempt_at"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    email: Mapped[str] = mapped_column(String(320), unique=True)
    keywords: Mapped[str] = mapped_column(Text)
    timezone: Mapped[str] = mapped_column(String(64))
    send_hour: Mapped[int] = mapped_column(Integer)
    digest_size: Mapped[int] = mapped_column(Integer)
    requested_at: Mapped[datetime] = mapped_column(DateTime)
    state: Mapped[str] = mapped_column(String(16), default=QUEUED)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    lease_until: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    frequency: Mapped[str] = mapped_column(String(16), default="daily", server_default="daily")
    send_weekday: Mapped[int] = mapped_column(Integer, default=0, server_default="0")


class PaperRow(Base):
    __tablename__ = "papers"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)  # arXiv id, no version
    title: Mapped[str] = mapped_column(Text)
    abstract: Mapped[str] = mapped_column(Text, default="")
    authors: Mapped[list[str]] = mapped_column(JSON, default=list)
    published: Mapped[date | None] = mapped_column(Date, nullable=True, index=True)
    url: Mapped[str] = mapped_column(Text, default="")
    upvotes: Mapped[int] = mapped_column(Integer, default=0)
    source: Mapped[str] = mapped_column(String(64), default="")
    categories: Mapped[list[str]] = mapped_column(JSON, default=list)
    keywords: Mapped[list[str]] = mapped_column(JSON, default=list)
    ai_summary: Mapped[str | None] = mapped_column(Text, nullable=True)
    comments: Mapped[int] = mapped_column(Integer, default=0)
    github_repo: Mapped[str | None] = mapped_column(Text, nullable=True)
    github_stars: Mapped[int | None] = mapped_column(Integer, nullable=True)
    project_page: Mapped[str | None] = mapped_column(Text, nullable=True)
    announce_type: Mapped[str | None] = mapped_column(String(32), nullable=True)
    first_seen_at: Mapped[datetime] = mapped_column(DateTime, index=True)
    updated_at: Mapped[datetime] = mapped_column(DateTime)


class SourceRun(Base):
    __tablename__ = "source_runs"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    source: Mapped[str] = mapped_column(String(32))
    url: Mapped[str] = mapped_column(Text, default="")
    day: Mapped[date | None] = mapped_column(Date, nullable=True)
    started_at: Mapped[datetime] = mapped_column(DateTime, index=True)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    outcome: Mapped[str] = mapped_column(String(16))  # ok, not_modified, empty, error
    papers_new: Mapped[int] = mapped_column(Integer, default=0)
    papers_updated: Mapped[int] = mapped_column(Integer, default=0)
    skipped: Mapped[int] = mapped_column(Integer, default=0)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)


class HttpValidator(Base):
    """ETag / Last-Modified per URL, so an unchanged feed costs a 304."""

    __tablename__ = "http_validators"

    url: Mapped[str] = mapped_column(String(2048), primary_key=True)
    etag: Mapped[str | None] = mapped_column(Text, nullable=True)
    last_modified: Mapped[str | None] = mapped_column(Text, nullable=True)
    updated_at: Mapped[datetime] = mapped_column(DateTime)


class Delivery(Base):
    """The ledger: one row per (subscriber, edition); an edition is the subscriber's period.

    A local date for daily and weekday digests, the date of the ISO week's Monday for weekly
    ones (newsletter.editions), so the unique key holds "one per period" for both.
    """

    __tablename__ = "deliveries"
    __table_args__ = (
        UniqueConstraint("subscriber_id", "edition", name="uq_delivery_subscriber_edition"),
        Index("ix_deliveries_state_next", "state", "next_attempt_at"),
        Index("ix_deliveries_edition", "edition"),
        # The recent rows of a subscriber: the papers they were sent lately.
        Index("ix_deliveries_subscriber_created", "subscriber_id", "created_at"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    subscriber_id: Mapped[int] = mapped_column(ForeignKey("subscribers.id", ondelete="CASCADE"))
    edition: Mapped[date] = mapped_column(Date)
    state: Mapped[str] = mapped_column(String(16), default=PLANNED)
    # [{"id", "score", "matched": [...], "snippet_html"}], best first (the text excerpt is
    # derived from the HTML one: ranking.snippet_text)
    items: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    # The ids of `items`, reserved for this subscriber: never planned for them again.
    paper_ids: Mapped[list[str] | None] = mapped_column(JSON, nullable=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    lease_until: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    # Who holds the claim: a random token set by each claim. Every mark, renewal and release
    # names it, so a sender whose lease was taken over can no longer write the row.
    claim_token: Mapped[str | None] = mapped_column(String(32), nullable=True)
    message_id: Mapped[str | None] = mapped_column(String(255), nullable=True)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    top_score: Mapped[float | None] = mapped_column(Float, nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime)
    sent_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)


# Ratings: +1 "more like this", -1 "less like this"; where each came from.
LIKE, DISLIKE = 1, -1
RATING_ORIGINS = ("email", "web", "import")


class Rating(Base):
    """A subscriber's rating of one paper: the latest wins, clearing deletes it.

    `edition` is the digest it was rated from (null for a rating given elsewhere). Ratings
    are the subscriber's: they go with them when the subscriber is deleted.
    """

    __tablename__ = "ratings"

    subscriber_id: Mapped[int] = mapped_column(
        ForeignKey("subscribers.id", ondelete="CASCADE"), primary_key=True
    )
    paper_id: Mapped[str] = mapped_column(String(64), primary_key=True)  # arXiv id, no version
    value: Mapped[int] = mapped_column(Integer)  # LIKE or DISLIKE
    origin: Mapped[str] = mapped_column(String(16), default="web")
    edition: Mapped[date | None] = mapped_column(Date, nullable=True)
    rated_at: Mapped[datetime] = mapped_column(DateTime, index=True)


# Liked papers not in `papers` yet, to fetch from the arXiv API: a row is deleted once its
# paper is stored; "missing" when arXiv says there is no such paper (kept, to tell the reader).
FETCH_PENDING, FETCH_MISSING = "pending", "missing"


class PaperFetch(Base):
    """A liked paper waiting to be fetched: tried with a lease, retried with a backoff."""

    __tablename__ = "paper_fetches"
    __table_args__ = (Index("ix_paper_fetches_state_next", "state", "next_attempt_at"),)

    paper_id: Mapped[str] = mapped_column(String(64), primary_key=True)  # arXiv id, no version
    state: Mapped[str] = mapped_column(String(16), default=FETCH_PENDING)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    lease_until: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    claim_token: Mapped[str | None] = mapped_column(String(32), nullable=True)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    requested_at: Mapped[datetime] = mapped_column(DateTime)


class Operator(Base):
    """Someone who may open the admin dashboard; the dashboard is off while there is none."""

    __tablename__ = "operators"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    username: Mapped[str] = mapped_column(String(64), unique=True)
    password_hash: Mapped[str] = mapped_column(String(255))  # argon2id, with its parameters
    created_at: Mapped[datetime] = mapped_column(DateTime)
    last_login_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)


class DeliveryResend(Base):
    """An operator's explicit resend of a digest: the one exception to "nothing sent twice".

    The ledger row of the edition is planned again under a new id (so a new Message-ID);
    what it was before is kept here. `request_key` is the form's one-time key: a click sent
    twice resends once.
    """

    __tablename__ = "delivery_resends"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    request_key: Mapped[str] = mapped_column(String(64), unique=True)
    subscriber_id: Mapped[int] = mapped_column(
        ForeignKey("subscribers.id", ondelete="CASCADE"), index=True
    )
    edition: Mapped[date] = mapped_column(Date)
    operator: Mapped[str] = mapped_column(String(64))
    previous_delivery_id: Mapped[int] = mapped_column(Integer)
    previous_state: Mapped[str] = mapped_column(String(16))
    previous_message_id: Mapped[str | None] = mapped_column(String(255), nullable=True)
    previous_sent_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    delivery_id: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(DateTime)


# Bounce and complaint events, as reported after the message left (DSNs, feedback loops).
# A delay ("still retrying", Action: delayed) is kept but counts as nothing.
HARD, SOFT, COMPLAINT, DELAYED = "hard", "soft", "complaint", "delayed"
BOUNCE_KINDS = (HARD, SOFT, COMPLAINT, DELAYED)


class BounceEvent(Base):
    """One reported bounce or complaint, kept with its raw reason whatever it changed.

    `subscriber_id` is null when the subscriber was deleted since (the event stays) or when
    the report named nobody we know.
    """

    __tablename__ = "bounce_events"
    __table_args__ = (Index("ix_bounce_events_subscriber_at", "subscriber_id", "received_at"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    subscriber_id: Mapped[int | None] = mapped_column(
        ForeignKey("subscribers.id", ondelete="SET NULL"), nullable=True
    )
    delivery_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    kind: Mapped[str] = mapped_column(String(16))
    status: Mapped[str] = mapped_column(String(32), default="")  # e.g. 5.1.1, or abuse
    recipient: Mapped[str] = mapped_column(String(320), default="")  # the subscriber's, if known
    reported_recipient: Mapped[str] = mapped_column(String(320), default="")  # as the report says
    reason: Mapped[str] = mapped_column(Text, default="")  # the raw diagnostic, as reported
    source: Mapped[str] = mapped_column(String(32), default="")  # dsn, arf, webhook:<name>, ...
    # What it did: suppressed, counted, unsubscribed, ignored (already so), unknown.
    outcome: Mapped[str] = mapped_column(String(16))
    # The report's identity (a mailbox message's SHA-256, a webhook's event id).
    report_key: Mapped[str | None] = mapped_column(String(128), nullable=True, index=True)
    received_at: Mapped[datetime] = mapped_column(DateTime, index=True)


class Suppression(Base):
    """An address that must not be mailed again without a fresh confirmation.

    Keyed by an HMAC of the canonical address, not the address: it survives deleting the
    subscriber without keeping who they were.
    """

    __tablename__ = "suppressions"

    address_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    reason: Mapped[str] = mapped_column(String(16))  # hard, soft, complaint
    detail: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = mapped_column(DateTime)


class WebhookToken(Base):
    """A signed webhook's one-time token (provider-prefixed), kept for the max age."""

    __tablename__ = "webhook_tokens"
    __table_args__ = (Index("ix_webhook_tokens_seen_at", "seen_at"),)

    token: Mapped[str] = mapped_column(String(160), primary_key=True)
    seen_at: Mapped[datetime] = mapped_column(DateTime)
