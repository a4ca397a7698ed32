"""The `newsletter` command: run the service, collect, send, manage subscribers, inspect."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import date, datetime
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from newsletter.config import ConfigError, Settings, load_settings
from newsletter.db import Database

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from newsletter.models import Subscriber
    from newsletter.paper import Paper
    from newsletter.planned import PlannedRow

app = typer.Typer(help=__doc__, no_args_is_help=True, add_completion=False)
db_app = typer.Typer(help="Database maintenance.", no_args_is_help=True)
app.add_typer(db_app, name="db")
subscribers_app = typer.Typer(
    help="The subscriber list as CSV, to move from or to another tool.", no_args_is_help=True
)
app.add_typer(subscribers_app, name="subscribers")
admin_app = typer.Typer(help="Operator accounts of the /admin dashboard.", no_args_is_help=True)
app.add_typer(admin_app, name="admin")
bounces_app = typer.Typer(
    help="Bounces and complaints reported after sending.", no_args_is_help=True
)
app.add_typer(bounces_app, name="bounces")
suppressions_app = typer.Typer(
    help="Addresses not mailed again without a fresh confirmation.", no_args_is_help=True
)
app.add_typer(suppressions_app, name="suppressions")
console = Console()
errors = Console(stderr=True)


class Format(StrEnum):
    table = "table"
    jsonl = "jsonl"


def fail(message: str, code: int = 2) -> typer.Exit:
    """Print a clear error and return the exit to raise; nothing has been changed."""
    errors.print(f"[bold red]error:[/] {message}")
    return typer.Exit(code)


def address_of(email: str) -> str:
    """The address in its stored form, or exit with the reason it is not an address."""
    from newsletter import subscriptions

    try:
        return subscriptions.normalize_email(email)
    except subscriptions.SubscriptionError as exc:
        raise fail(exc.message) from None


def subscriber_at(session: Session, address: str) -> Subscriber:
    """The subscriber of a (normalized) address, or exit saying there is none."""
    from newsletter import storage

    subscriber = storage.subscriber_by_email(session, address)
    if subscriber is None:
        raise fail(f"no subscriber {address}")
    return subscriber


def settings(**overrides: Any) -> Settings:
    from newsletter.files import secure_var_dir

    try:
        config = load_settings(**overrides)
    except ConfigError as exc:
        raise fail(f"bad configuration: {exc}") from None
    if config.var_dir.exists():  # tighten what an older version or a loose umask left
        secure_var_dir(config.var_dir)
    return config


@contextmanager
def database() -> Iterator[Database]:
    from sqlalchemy.exc import OperationalError

    db = Database(settings())
    try:
        db.upgrade()
    except OperationalError as exc:
        db.dispose()
        reason = str(exc.orig or exc).strip().splitlines()[0]
        raise fail(f"cannot open the database {_safe_url(db.settings.db_url)}: {reason}") from None
    try:
        yield db
    finally:
        db.dispose()


def _logging(verbose: bool = False) -> None:
    from newsletter import logs

    logs.configure(verbose)


@contextmanager
def progress_bar(label: str, total: int | None) -> Iterator[Callable[[int], None]]:
    """A rich progress bar on a terminal; silent when output is piped or logged."""
    if not sys.stdout.isatty():
        yield lambda _n: None
        return
    columns = (TextColumn(label), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=console, transient=False) as bar:
        task = bar.add_task(label, total=total)
        yield lambda n: bar.advance(task, n)


@app.callback()
def main(
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Debug logging.")] = False,
) -> None:
    from newsletter.files import private_process

    private_process()
    _logging(verbose)


HostOption = Annotated[
    str | None, typer.Option("--host", help="Address to listen on (default: NEWSLETTER_HOST).")
]
PortOption = Annotated[
    int | None,
    typer.Option("--port", min=1, max=65535, help="Port to listen on (default: NEWSLETTER_PORT)."),
]


def installed() -> None:
    """Stop with a clear error, before anything is written, if package files are missing."""
    from newsletter.resources import IncompleteInstall, check_installed

    try:
        check_installed()
    except IncompleteInstall as exc:
        raise fail(str(exc)) from None


def listen_settings(host: str | None, port: int | None) -> Settings:
    """The settings, with --host and --port in place of NEWSLETTER_HOST and NEWSLETTER_PORT."""
    overrides = {k: v for k, v in (("host", host), ("port", port)) if v is not None}
    return settings(**overrides)


@app.command()
def run(
    demo: Annotated[
        bool, typer.Option(help="Load the sample day and mail a demo digest first.")
    ] = False,
    host: HostOption = None,
    port: PortOption = None,
) -> None:
    """Run the whole service in one process: web app + scheduler (embedded mode)."""
    from newsletter.service import serve

    installed()
    config = listen_settings(host, port)
    if demo:
        from newsletter.files import private_dir

        private_dir(config.var_dir)
    serve(config, demo=demo)


@app.command()
def web(host: HostOption = None, port: PortOption = None) -> None:
    """Serve only the web pages (distributed mode runs workers and beat beside it)."""
    from newsletter.service import serve

    installed()
    serve(listen_settings(host, port), scheduler=False)


@app.command()
def demo() -> None:
    """Load the bundled sample day, add a demo subscriber and write their digest to the outbox."""
    from newsletter.service import DEMO_EMAIL, run_demo

    installed()  # a broken install must not leave a database with a half-made demo
    with database() as db:
        path = run_demo(db, db.settings)
    if path is None:
        console.print(f"Demo digest sent by SMTP to {DEMO_EMAIL}.")
    else:
        console.print(f"Demo digest for {DEMO_EMAIL}: [bold]{path}[/]")


@app.command()
def collect(
    day: Annotated[str | None, typer.Option("--date", help="Day to collect (YYYY-MM-DD).")] = None,
    source: Annotated[list[str] | None, typer.Option(help="Only this source (repeatable).")] = None,
    since: Annotated[
        str | None, typer.Option(help="Backfill arXiv from this day (YYYY-MM-DD).")
    ] = None,
) -> None:
    """Fetch new papers from the sources and store them."""
    from newsletter import pipeline

    config = settings()
    chosen = source or list(config.sources)
    unknown = [name for name in chosen if name not in ("hf_daily", "arxiv")]
    if unknown:
        raise fail(f"unknown source {unknown[0]!r}; choose from hf_daily, arxiv")
    when, start = _day(day), _day(since)
    if start is not None and start > (when or date.today()):
        raise fail(f"--since {start} is after the last day to collect")
    with database() as db, progress_bar("collect", len(chosen)) as advance:
        reports = pipeline.collect(
            db, config, day=when, since=start, sources=chosen, progress=advance
        )
    table = Table("source", "outcome", "new", "updated", "skipped", "seconds", "error")
    for r in reports:
        style = {"error": "red", "empty": "yellow"}.get(r.outcome, "green")
        table.add_row(
            r.source,
            f"[{style}]{r.outcome}[/]",
            str(r.new),
            str(r.updated),
            str(r.skipped),
            f"{r.seconds:.1f}",
            r.error or "",
        )
    console.print(table)
    if reports and all(r.outcome == "error" for r in reports):
        raise typer.Exit(1)


@app.command()
def papers(
    day: Annotated[
        str | None, typer.Option("--date", help="Day (YYYY-MM-DD); default: last day collected.")
    ] = None,
    fmt: Annotated[Format, typer.Option("--format", help="table or jsonl")] = Format.table,
) -> None:
    """List the papers of a day (JSONL is the input of `newsletter rank`)."""
    from newsletter import storage

    with database() as db, db.session() as session:
        when = _day(day)
        if when is None:
            counts = storage.paper_counts_by_day(session, days=1)
            when = counts[0][0] if counts else None
        found = storage.papers_on(session, when) if when else []
    if fmt is Format.jsonl:
        for paper in found:
            sys.stdout.write(paper.to_json() + "\n")
        return
    table = Table("id", "title", "upvotes", "source", title=f"{len(found)} papers on {when}")
    for paper in found:
        table.add_row(paper.id, paper.title, str(paper.upvotes), paper.source)
    console.print(table)


@app.command()
def send(
    day: Annotated[
        str | None, typer.Option("--date", help="Send this edition now to everyone who lacks it.")
    ] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Rank and render; send nothing.")
    ] = False,
) -> None:
    """Plan the editions that are due and deliver every digest that is ready."""
    from newsletter import pipeline, storage

    config = settings()
    edition = _day(day)
    with database() as db:
        plan = pipeline.plan(db, config, edition=edition, write=not dry_run)
        if dry_run:
            _dry_run_table(db, config, plan.rows)
            return
        with db.session() as session:
            due = len(storage.due_delivery_ids(session, storage.utcnow()))
        with progress_bar("send", due) as advance:
            report = pipeline.deliver(db, config, progress=advance)
    console.print(
        f"planned {plan.planned}, skipped {plan.skipped} (nothing matched); "
        f"sent {report.sent}, to retry {report.retry}, failed {report.failed}"
    )
    if plan.waiting:
        console.print(
            f"{plan.waiting} due subscribers wait: no paper source has answered yet "
            "(run `newsletter collect` first)"
        )
    for path in report.paths[:5]:
        console.print(f"  {path}")
    if report.retry or report.failed:
        raise typer.Exit(1)


def _dry_run_table(db: Database, config: Settings, rows: list[PlannedRow]) -> None:
    from newsletter import pipeline, storage

    planned = [row for row in rows if row.items or config.send_empty_note]
    messages = pipeline.render_planned(db, config, planned, now=storage.utcnow())
    table = Table("to", "edition", "papers", "top score", "subject", title="dry run: nothing sent")
    for row, message in zip(planned, messages, strict=True):
        top = "-" if row.top_score is None else f"{row.top_score:.0f}"
        table.add_row(message["To"], str(row.edition), str(len(row.items)), top, message["Subject"])
    console.print(table)
    console.print(f"{len(planned)} digests rendered, {len(rows) - len(planned)} with no match.")


@app.command()
def preview(
    email: str,
    output: Annotated[Path | None, typer.Option(help="HTML file to write.")] = None,
) -> None:
    """Write the digest EMAIL would get now to an HTML file and print its path."""
    from newsletter import pipeline
    from newsletter.subscriptions import SubscriptionError

    with database() as db:
        try:
            message = pipeline.preview(db, db.settings, email)
        except (LookupError, SubscriptionError) as exc:
            raise fail(str(exc)) from None
        path = output or db.settings.var_dir / "previews" / f"{message['To']}.html"
    html = message.get_body(("html",))
    assert html is not None
    # The page holds the subscriber's working links: private, like everything in var/.
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)  # a page written before, by an older version
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(html.get_content())
    console.print(str(path))


@app.command()
def subscribe(
    email: str,
    keywords: Annotated[
        str, typer.Option(help="Keyword profile, e.g. 'diffusion, \"label noise\"'.")
    ],
    timezone: Annotated[str | None, typer.Option(help="IANA time zone.")] = None,
    send_hour: Annotated[int | None, typer.Option(help="Local hour to send (0-23).")] = None,
    size: Annotated[int | None, typer.Option(help="Papers per digest.")] = None,
    frequency: Annotated[
        str | None, typer.Option(help="daily, weekdays or weekly (default: daily).")
    ] = None,
    weekday: Annotated[
        str | None, typer.Option(help="The day of a weekly digest: Monday ... Sunday.")
    ] = None,
) -> None:
    """Add (or update) a confirmed subscriber, as an operator."""
    from newsletter import storage, subscriptions
    from newsletter.editions import WEEKDAY_NAMES

    names = [name.lower() for name in WEEKDAY_NAMES]
    day: int | str | None = weekday
    if weekday is not None and weekday.strip().lower() in names:
        day = names.index(weekday.strip().lower())

    with database() as db:
        try:
            with db.session() as session:
                subscriber = subscriptions.subscribe(
                    session,
                    db.settings,
                    email=email,
                    keywords=keywords,
                    timezone=timezone,
                    send_hour=send_hour,
                    digest_size=size,
                    now=storage.utcnow(),
                    confirmed=True,
                    frequency=frequency,
                    send_weekday=day,
                )
                summary = f"{subscriber.email} is {subscriber.state}"
        except subscriptions.SubscriptionError as exc:
            raise fail(f"{exc.field}: {exc.message}") from None
    console.print(summary)


@app.command()
def unsubscribe(email: str) -> None:
    """Unsubscribe an address at once."""
    from newsletter import storage, subscriptions

    with database() as db:
        address = address_of(email)
        with db.session() as session:
            subscriber = subscriber_at(session, address)
            subscriptions.unsubscribe(session, subscriber, storage.utcnow())
    console.print(f"{address} is unsubscribed")


@app.command()
def delete(
    email: str,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
) -> None:
    """Delete a subscriber and their delivery history for good; their links stop working."""
    from newsletter import subscriptions

    with database() as db:
        address = address_of(email)
        with db.session() as session:
            subscriber_at(session, address)
        if not yes and not typer.confirm(f"Delete {address} and their delivery history?"):
            raise fail("nothing deleted", code=1)
        with db.session() as session:
            # Looked up again: the answer to the question may have taken a while.
            subscriber = subscriber_at(session, address)
            rows = subscriptions.delete(session, subscriber)
    console.print(f"{address} is deleted, with {rows} delivery record(s)")


@app.command()
def status(
    email: Annotated[
        str | None,
        typer.Option(
            "--email", metavar="ADDRESS", help="One subscriber: state, profile, last deliveries."
        ),
    ] = None,
) -> None:
    """What happened: subscribers, papers, deliveries and the last source runs."""
    from newsletter import storage

    if email is not None:
        _subscriber_status(email)
        return
    with database() as db, db.session() as session:
        subscribers = storage.subscriber_counts(session)
        paper_days = storage.paper_counts_by_day(session, days=7)
        deliveries = storage.delivery_counts(session, editions=5)
        runs = storage.last_source_runs(session, limit=10)
        mode = "distributed" if db.settings.distributed else "embedded"
        console.print(
            f"[bold]Paper newsletter[/] ({mode} mode, database {_safe_url(db.settings.db_url)})"
        )
        table = Table("state", "subscribers", title="Subscribers")
        for state in ("active", "pending", "paused", "bouncing", "unsubscribed"):
            table.add_row(state, str(subscribers.get(state, 0)))
        console.print(table)
        table = Table("day", "source", "papers", title="Papers (last 7 days with papers)")
        for day, source, count in paper_days:
            table.add_row(str(day), source, str(count))
        console.print(table)
        table = Table("edition", "state", "deliveries", title="Deliveries (recent editions)")
        for edition, state, count in deliveries:
            table.add_row(str(edition), state, str(count))
        console.print(table)
        table = Table(
            "started (UTC)",
            "source",
            "outcome",
            "new",
            "updated",
            "skipped",
            "error",
            title="Last source runs",
        )
        for r in runs:
            style = {"error": "red", "empty": "yellow"}.get(r.outcome, "green")
            table.add_row(
                r.started_at.strftime("%Y-%m-%d %H:%M"),
                r.source,
                f"[{style}]{r.outcome}[/]",
                str(r.papers_new),
                str(r.papers_updated),
                str(r.skipped),
                r.error or "",
            )
        console.print(table)
        _complaint_status(storage.complaints_and_sent_by_day(session, days=7))
        fetches = storage.paper_fetch_counts(session)
        if any(fetches.values()):
            console.print(
                f"Liked papers: {fetches['pending']} to fetch from arXiv, "
                f"{fetches['missing']} arXiv has no paper for"
            )
    if db.settings.distributed:
        _distributed_status(db.settings)


@app.command("fetch-liked")
def fetch_liked() -> None:
    """Fetch now the liked papers the database lacks (the service does it every 30 s)."""
    from newsletter.likes.fetching import fetch_liked_papers

    with database() as db:
        report = fetch_liked_papers(db, db.settings)
    console.print(
        f"{report.stored} stored, {report.missing} not on arXiv, {report.retry} to retry "
        f"({report.requests} requests)"
    )


# One subscriber (`status --email`) -------------------------------------------------------

RECENT_DELIVERIES = 10


def _when(value: datetime | None) -> str:
    return value.strftime("%Y-%m-%d %H:%M") if value else "-"


def _subscriber_status(email: str) -> None:
    """State, profile and last deliveries (with their errors) of one subscriber."""
    from rich.markup import escape

    from newsletter import storage
    from newsletter.editions import describe

    address = address_of(email)
    with database() as db, db.session() as session:
        subscriber = subscriber_at(session, address)
        deliveries = storage.recent_deliveries(session, subscriber.id, RECENT_DELIVERIES)
        request = storage.confirmation_request_for(session, address)
        table = Table("", "", title=f"Subscriber {escape(address)}", show_header=False)
        rows = [
            ("state", subscriber.state),
            ("keywords", subscriber.keywords),
            ("send", f"{subscriber.send_hour:02d}:00 {subscriber.timezone}"),
            ("how often", describe(subscriber.frequency, subscriber.send_weekday)),
            ("papers per digest", str(subscriber.digest_size)),
            ("trending", "yes" if subscriber.show_trending else "no"),
            ("signed up (UTC)", _when(subscriber.created_at)),
            ("confirmed (UTC)", _when(subscriber.confirmed_at)),
            ("unsubscribed (UTC)", _when(subscriber.unsubscribed_at)),
            ("refused in a row", str(subscriber.hard_failures)),
        ]
        if subscriber.pending_preferences:
            rows.append(("waiting for confirmation", str(subscriber.pending_preferences)))
        if request is not None:
            error = f": {request.error}" if request.error else ""
            rows.append(
                ("confirmation mail", f"{request.state}, {request.attempts} attempt(s){error}")
            )
        for label, value in rows:
            table.add_row(label, escape(value))
        console.print(table)
        table = Table(
            "edition",
            "state",
            "papers",
            "top score",
            "attempts",
            "sent / next try (UTC)",
            title=f"Last {RECENT_DELIVERIES} deliveries",
        )
        for d in deliveries:
            style = {"failed": "red", "retry": "yellow"}.get(d.state, "")
            top = f"{d.top_score:.0f}" if d.top_score is not None else "-"
            table.add_row(
                str(d.edition),
                f"[{style}]{d.state}[/]" if style else d.state,
                str(len(d.paper_ids or d.items or [])),
                top,
                str(d.attempts),
                _when(d.sent_at or d.next_attempt_at),
            )
        console.print(table if deliveries else "No deliveries yet.")
        # Each error whole, on one line of its own: a mail server's reply does not fit a cell.
        for d in deliveries:
            if d.error:
                console.print(f"{d.edition} {d.state}: {escape(d.error)}", soft_wrap=True)
        events = storage.bounce_events_for(session, subscriber.id)[:RECENT_DELIVERIES]
        if events:
            table = Table(
                "received (UTC)",
                "kind",
                "status",
                "source",
                "outcome",
                title="Bounces and complaints reported later",
            )
            for event in events:
                table.add_row(
                    _when(event.received_at),
                    event.kind,
                    escape(event.status),
                    escape(event.source),
                    event.outcome,
                )
            console.print(table)
            # The raw reason of each, whole: what the receiving server said.
            for event in events:
                if event.reason:
                    when = _when(event.received_at)
                    console.print(f"{when} {event.kind}: {escape(event.reason)}", soft_wrap=True)


# The subscriber list as CSV (`subscribers export`, `subscribers import`) --------------------


@subscribers_app.command("export")
def subscribers_export(
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="CSV file to write (default: stdout).")
    ] = None,
) -> None:
    """Write every subscriber as CSV: email, state, keywords, timezone, send_hour, digest_size.

    Unconfirmed sign-ups are left out. The file is what `subscribers import` reads back.
    """
    from newsletter import roster, storage

    with database() as db, db.session() as session:
        subscribers = storage.subscribers_for_export(session)
        if output is None:
            count = roster.write_roster(subscribers, sys.stdout)
        else:
            # Addresses are personal data: the file is private, like everything in var/.
            fd = os.open(output, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w", encoding="utf-8", newline="") as handle:
                count = roster.write_roster(subscribers, handle)
    errors.print(f"exported {count} subscriber(s)")


@subscribers_app.command("import")
def subscribers_import(
    file: Annotated[Path, typer.Argument(help="CSV file with a header row; - for stdin.")],
    state: Annotated[
        str | None,
        typer.Option(help="State of rows with none (a file without a state column needs it)."),
    ] = None,
    keywords: Annotated[
        str | None, typer.Option(help="Keywords of rows with none (e.g. a Mailchimp export).")
    ] = None,
    dry_run: Annotated[
        bool,
        typer.Option("--dry-run", help="Check every row, against the database too; write nothing."),
    ] = (False),
) -> None:
    """Add or update subscribers from CSV: every good row in one transaction.

    Each bad row is reported as `line N: reason` on stderr and skipped; the exit status is then
    1 (the good rows are imported). A file that cannot be read as a whole changes nothing and
    exits 2.
    """
    from newsletter import roster, storage, subscriptions

    config = settings()
    try:
        data = sys.stdin.buffer.read() if str(file) == "-" else file.read_bytes()
    except OSError as exc:
        raise fail(f"cannot read {file}: {exc.strerror}") from None
    try:
        found = roster.read_roster(roster.decode(data), config, state=state, keywords=keywords)
    except roster.RosterError as exc:
        _note(f"error: {file}: {exc}; nothing imported")
        raise typer.Exit(2) from None
    from sqlalchemy.exc import SQLAlchemyError

    refused: list[tuple[int, str]] = []
    added = updated = 0
    try:
        with database() as db, db.session() as session:
            now = storage.utcnow()
            known = storage.subscribers_by_email(session, (row.email for row in found.rows))
            for row in found.rows:
                existing = known.get(row.email)
                try:
                    subscriptions.import_subscriber(
                        session,
                        config,
                        existing=existing,
                        email=row.email,
                        state=row.state,
                        keywords=row.keywords,
                        timezone=row.timezone,
                        send_hour=row.send_hour,
                        digest_size=row.digest_size,
                        now=now,
                    )
                except subscriptions.SubscriptionError as exc:  # checked before any write
                    refused.append((row.line, f"{exc.field}: {exc.message}"))
                    continue
                added, updated = (added + 1, updated) if existing is None else (added, updated + 1)
            if dry_run:
                raise _RollBack
    except _RollBack:
        pass
    except SQLAlchemyError as exc:  # the transaction rolled back: not one row was written
        _note(f"error: the database refused the import ({_first_line(exc)}); nothing imported")
        raise typer.Exit(1) from None
    problems = sorted(found.problems + refused)
    for line, reason in problems:
        _note(f"line {line}: {reason}")
    verb = "would import" if dry_run else "imported"
    typer.echo(
        f"{verb} {added + updated} subscriber(s) ({added} new, {updated} updated); "
        f"{len(problems)} bad row(s)"
    )
    if problems:
        raise typer.Exit(1)


class _RollBack(Exception):
    """Raised inside the import's transaction by --dry-run, so that it rolls back."""


# Above 0.1% of the mail sent, mailbox providers start filtering a sender (Gmail's and
# Yahoo's bulk-sender rules ask to stay below 0.1% and never reach 0.3%).
COMPLAINT_RATE_WARNING = 0.001


def _complaint_status(days: list[tuple[date, int, int]]) -> None:
    """Complaints per day against the digests sent that day, warning above 0.1%."""
    table = Table("day (UTC)", "sent", "complaints", "rate", title="Complaints (last 7 days)")
    high = []
    for day, complaints, sent in days:
        rate = complaints / sent if sent else (1.0 if complaints else 0.0)
        shown = f"{rate:.2%}" if sent else ("-" if not complaints else "n/a")
        if complaints and rate > COMPLAINT_RATE_WARNING:
            high.append(str(day))
            shown = f"[bold red]{shown}[/]"
        table.add_row(str(day), str(sent), str(complaints), shown)
    console.print(table)
    if high:
        console.print(
            f"[bold red]warning:[/] complaint rate above 0.1% on {', '.join(high)}: "
            "mailbox providers filter senders past it"
        )


@bounces_app.command("fetch")
def bounces_fetch() -> None:
    """Read the bounce mailbox once: record bounces and complaints, delete what was recorded."""
    from newsletter.bounces import mailbox

    with database() as db:
        if not db.settings.bounce_mailbox_url:
            raise fail("no bounce mailbox: set NEWSLETTER_BOUNCE_MAILBOX_URL")
        try:
            report = mailbox.fetch(db, db.settings)
        except mailbox.MailboxError as exc:
            raise fail(str(exc), code=1) from None
    outcomes = ", ".join(f"{n} {name}" for name, n in sorted(report.outcomes.items()))
    console.print(
        f"{report.messages} message(s) read, {report.deleted} deleted; events: {outcomes or 'none'}"
    )
    for why in report.kept:
        errors.print(f"[yellow]kept:[/] {why}")


@suppressions_app.command("list")
def suppressions_list() -> None:
    """The suppression list: address hashes (the addresses are not kept), reasons, dates."""
    from newsletter import storage

    with database() as db, db.session() as session:
        entries = storage.suppressions(session)
        table = Table("address hash", "reason", "detail", "since (UTC)", title="Suppressions")
        for entry in entries:
            table.add_row(
                entry.address_hash[:16],
                entry.reason,
                entry.detail,
                entry.created_at.strftime("%Y-%m-%d %H:%M"),
            )
    console.print(table)


@suppressions_app.command("remove")
def suppressions_remove(email: str) -> None:
    """Lift the suppression of an address (it still needs confirming or `subscribe`)."""
    from newsletter.bounces.events import lift

    with database() as db:
        address = address_of(email)
        with db.session() as session:
            if not lift(session, db.settings, address):
                raise fail(f"{address} is not suppressed", code=1)
    console.print(f"{address} is no longer suppressed")


def _distributed_status(config: Settings) -> None:
    """Queue lengths (Redis LLEN) and the Celery workers that answer a ping."""
    from kombu.exceptions import OperationalError
    from redis.exceptions import RedisError

    from newsletter.queues import queue_lengths, workers_seen

    try:
        lengths = queue_lengths(config)
        seen = workers_seen(config, timeout=1.0)
    except (RedisError, OperationalError, OSError) as exc:
        errors.print(f"[bold red]broker unreachable:[/] {exc}")
        return
    table = Table("queue", "waiting", title="Queues")
    for queue, length in lengths.items():
        table.add_row(queue, str(length))
    console.print(table)
    console.print(f"Workers seen: {', '.join(seen) if seen else '[red]none[/]'}")


@db_app.command("upgrade")
def db_upgrade(
    wait: Annotated[
        float,
        typer.Option(
            "--wait",
            min=0,
            metavar="SECONDS",
            help="Until the database answers, try again for up to this long (a server that "
            "is starting, a container not up yet); each failed attempt says why.",
        ),
    ] = 0,
) -> None:
    """Apply pending database migrations."""
    if wait:
        _wait_for_database(settings(), wait)
    with database() as db:
        typer.echo(f"database at {_safe_url(db.settings.db_url)} is up to date")


# How long one connection attempt may take, and the pause between two: a server that drops
# packets must not hold an attempt for the kernel's two minutes.
CONNECT_TIMEOUT = 5
RETRY_PAUSE = 1.0


def _wait_for_database(config: Settings, seconds: float) -> None:
    """Return once the database answers a query; fail (exit 1) when `seconds` have passed.

    Only reaching the database is retried: the migrations themselves run once, after it
    answers, so a broken migration fails at once instead of being tried again and again.
    """
    import time

    from sqlalchemy.exc import OperationalError

    from newsletter import storage

    shown = _safe_url(config.db_url)
    deadline = time.monotonic() + seconds
    attempt = 0
    db = Database(config, connect_timeout=CONNECT_TIMEOUT)
    try:
        while True:
            attempt += 1
            try:
                with db.session() as session:
                    storage.database_ok(session)
                if attempt > 1:
                    _note(f"database at {shown} answers (attempt {attempt})")
                return
            except OperationalError as exc:
                reason = _first_line(exc)
            left = deadline - time.monotonic()
            if left <= 0:
                raise fail(
                    f"database at {shown} did not answer within {seconds:g} s "
                    f"({attempt} attempts): {reason}",
                    code=1,
                )
            _note(
                f"database at {shown} not answering yet (attempt {attempt}: {reason}); "
                f"trying again, {left:.0f} s left"
            )
            time.sleep(min(RETRY_PAUSE, left))
    finally:
        db.dispose()


def _note(message: str) -> None:
    """One line on stderr, unwrapped and uncoloured: it goes to `docker logs` and the journal."""
    typer.echo(message, err=True)


def _first_line(exc: Exception) -> str:
    """The driver's own message, one line, without the SQL SQLAlchemy appends."""
    original = getattr(exc, "orig", None) or exc
    lines = str(original).strip().splitlines()
    return lines[0][:200] if lines else type(original).__name__


@db_app.command("revision")
def db_revision(message: Annotated[str, typer.Option("--message", "-m")]) -> None:
    """Write a new migration from the difference between models.py and the database."""
    from alembic import command

    from newsletter.db import alembic_config

    with database() as db:
        command.revision(alembic_config(db.settings), message=message, autogenerate=True)


def _safe_url(url: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)


def _day(value: str | None) -> date | None:
    if value is None:
        return None
    try:
        return datetime.strptime(value, "%Y-%m-%d").date()
    except ValueError:
        raise fail(f"{value!r} is not a date like 2026-06-12") from None


@app.command()
def rank(
    keywords: Annotated[
        str | None,
        typer.Option("--keywords", "-k", help="Keyword profile, e.g. 'diffusion, -medical'."),
    ] = None,
    papers_file: Annotated[
        Path | None,
        typer.Option(
            "--papers",
            help="Paper JSONL to rank; default: the collected papers a digest planned now ranks.",
        ),
    ] = None,
    top: Annotated[
        int | None,
        typer.Option("--top", min=1, help="How many papers to show; default: the digest size."),
    ] = None,
    fmt: Annotated[
        str | None,
        typer.Option("--format", help="table or json (default: json unless on a terminal)."),
    ] = None,
    history_file: Annotated[
        Path | None,
        typer.Option("--history", help="Paper JSONL of earlier papers the rated ids may name."),
    ] = None,
    like: Annotated[
        str | None, typer.Option("--like", help="Liked paper ids, comma-separated.")
    ] = None,
    dislike: Annotated[
        str | None, typer.Option("--dislike", help="Disliked paper ids, comma-separated.")
    ] = None,
) -> None:
    """Rank papers for one keyword profile as the digests do, and show why each one matched.

    The settings apply as they do to the digests: NEWSLETTER_MIN_SCORE,
    NEWSLETTER_POPULARITY_WEIGHT, NEWSLETTER_DIGEST_SIZE and NEWSLETTER_PAPER_WINDOW_DAYS.
    With --like/--dislike the ranking learns from those papers as a digest learns from a
    subscriber's ratings (their text from --papers or --history); rated papers are never
    listed, and --keywords may be left out.
    """
    import json

    from rich.markup import escape
    from rich.text import Text

    from newsletter import storage
    from newsletter.profile import Profile, ProfileError, parse_profile
    from newsletter.ranker import PaperWindow, RankingPolicy, RecentPapers, rank_profile
    from newsletter.ranking import format_rank_json, marked_parts

    output = fmt or ("table" if sys.stdout.isatty() else "json")
    if output not in ("table", "json"):
        raise fail(f"--format must be table or json, not {output!r}")
    ratings = _cli_ratings(like, dislike)
    if keywords is None and not ratings:
        raise fail("give --keywords, or liked papers with --like")
    try:
        profile = parse_profile(keywords) if keywords is not None else Profile(())
    except ProfileError as exc:
        raise fail(f"bad keywords: {exc}") from None
    config = settings()
    now = storage.utcnow()
    history = {p.id: p for p in _read_papers(history_file)} if history_file else {}
    if papers_file is None:
        with database() as db:
            window = RecentPapers(db, config).exact(now)
            if ratings:  # rated ids also resolve in the database, as for a subscriber
                with db.session() as session:
                    missing = [i for i in ratings if i not in window.papers and i not in history]
                    history.update(storage.papers_by_id(session, missing))
    else:
        window = PaperWindow.of(RankingPolicy.from_settings(config), _read_papers(papers_file), now)
    unknown = [i for i in ratings if i not in window.papers and i not in history]
    if unknown:
        errors.print(
            f"note: not in --papers nor --history, nothing learned from: {', '.join(unknown)}"
        )
    matches = rank_profile(window, profile, top_k=top, ratings=ratings, papers=history)
    by_id = window.papers
    if output == "json":
        sys.stdout.write(json.dumps(format_rank_json(by_id, matches), ensure_ascii=False) + "\n")
        return
    table = Table("score", "paper", "why", title=f"{len(matches)} of {len(window)} papers")
    for m in matches:
        why = ", ".join(f"{label} ({'/'.join(m.where[label])})" for label in m.matched)
        if m.liked is not None:
            why = ", ".join(filter(None, [why, f"like {m.liked[1]}"]))
        parts = marked_parts(m.snippet_html)
        excerpt = Text.assemble(*[(p, "bold yellow") if mark else p for p, mark in parts])
        title = f"[bold]{escape(by_id[m.paper_id].title)}[/]\n{m.paper_id}"
        table.add_row(f"{m.score:.0f}", title, Text.assemble(why, "\n", excerpt))
    console.print(table)


def _cli_ratings(like: str | None, dislike: str | None) -> dict[str, int]:
    """{paper id: 1 or -1} from --like and --dislike (ids as written, versions dropped); a
    paper both liked and disliked is an error."""
    from newsletter.paper import strip_version

    def ids(text: str | None) -> list[str]:
        return [strip_version(i) for i in (text or "").split(",") if i.strip()]

    liked, disliked = ids(like), ids(dislike)
    both = sorted(set(liked) & set(disliked))
    if both:
        raise fail(f"both liked and disliked: {', '.join(both)}")
    return {i: 1 for i in liked} | {i: -1 for i in disliked}


def _read_papers(path: Path) -> list[Paper]:
    """The papers of a JSONL file, or a clear error naming it."""
    from newsletter.paper import read_jsonl

    try:
        return read_jsonl(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise fail(f"cannot read {path}: {exc.strerror}") from None
    except ValueError as exc:
        raise fail(f"bad paper JSONL in {path}: {exc}") from None


# Operator accounts of the admin dashboard --------------------------------------------------


def _new_password(from_stdin: bool) -> str:
    """The password from the first line of stdin, or typed twice without echo."""
    if from_stdin:
        return sys.stdin.readline().rstrip("\r\n")
    import getpass

    first = getpass.getpass("Password: ")
    if getpass.getpass("Password again: ") != first:
        raise fail("the two passwords differ; nothing was changed")
    return first


@admin_app.command("add-user")
def admin_add_user(
    name: str,
    password_stdin: Annotated[
        bool, typer.Option("--password-stdin", help="Read the password from standard input.")
    ] = False,
) -> None:
    """Add an operator (or set a new password for one): the dashboard at /admin turns on."""
    from newsletter import storage
    from newsletter.web.admin import accounts

    try:
        accounts.check_username(name)
        password = accounts.check_password(_new_password(password_stdin))
    except accounts.AccountError as exc:
        raise fail(f"{exc}; nothing was changed") from None
    with database() as db, db.session() as session:
        known = storage.operator_by_username(session, name) is not None
        accounts.add_operator(session, name, password, storage.utcnow())
    console.print(f"operator {name} {'has a new password' if known else 'added'}")


@admin_app.command("remove-user")
def admin_remove_user(name: str) -> None:
    """Remove an operator; their sessions end. Without operators the dashboard is off."""
    from newsletter import storage

    with database() as db, db.session() as session:
        if not storage.remove_operator(session, name):
            raise fail(f"no operator {name}")
    console.print(f"operator {name} removed")


@admin_app.command("list")
def admin_list() -> None:
    """The operator accounts and when each last signed in."""
    from newsletter import storage

    with database() as db, db.session() as session:
        rows = [
            (o.username, f"{o.created_at:%Y-%m-%d %H:%M}", o.last_login_at)
            for o in storage.operators(session)
        ]
    if not rows:
        console.print("no operators: the dashboard at /admin is off")
        return
    table = Table("operator", "added (UTC)", "last sign-in (UTC)")
    for username, added, last in rows:
        table.add_row(username, added, f"{last:%Y-%m-%d %H:%M}" if last else "never")
    console.print(table)
