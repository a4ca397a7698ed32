"""Engine, sessions and migrations (Alembic scripts live in newsletter/migrations)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import NullPool

from newsletter.config import Settings
from newsletter.files import private_dir

MIGRATIONS = Path(__file__).parent / "migrations"


def make_engine(
    settings: Settings,
    *,
    quick_commits: bool = False,
    unpooled: bool = False,
    connect_timeout: int | None = None,
) -> Engine:
    """Create the engine; SQLite gets WAL, a busy timeout and foreign keys.

    `quick_commits` makes a PostgreSQL engine whose statements each commit on their own
    (autocommit) without waiting for the disk (synchronous_commit=off). `unpooled` opens a
    new connection each time (see `sqlite_file`). `connect_timeout` (seconds) bounds each
    PostgreSQL connection attempt.
    """
    url = settings.db_url
    if url.startswith("sqlite"):
        path = sqlite_file(settings)
        if path is not None:
            if path.parent == settings.var_dir:
                private_dir(path.parent)
            else:  # the operator's own directory: create it private, but leave it as it is
                path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            if path.exists():  # SQLite gives -wal and -shm the mode of the database file
                path.chmod(0o600)
        engine = create_engine(
            url,
            connect_args={"timeout": 30, "check_same_thread": False},
            **({"poolclass": NullPool} if unpooled else {}),
        )
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    if quick_commits:
        return create_engine(
            url,
            pool_pre_ping=True,
            pool_size=2,
            isolation_level="AUTOCOMMIT",
            connect_args={"options": "-c synchronous_commit=off"},
        )
    timeout = {"connect_args": {"connect_timeout": connect_timeout}} if connect_timeout else {}
    return create_engine(url, pool_pre_ping=True, pool_size=5, max_overflow=10, **timeout)


def sqlite_file(settings: Settings) -> Path | None:
    """The SQLite database file, or None for PostgreSQL and in-memory databases.

    A pooled SQLite connection trusts its page cache while the WAL index is unchanged, so it
    goes on answering from memory after the file was overwritten; only a new connection reads
    the file again.
    """
    url = settings.db_url
    if url.startswith("sqlite:///") and ":memory:" not in url:
        return Path(url.removeprefix("sqlite:///").split("?", 1)[0])
    return None


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()


class Database:
    """One engine and its session factory, built from the settings."""

    def __init__(self, settings: Settings, *, connect_timeout: int | None = None) -> None:
        self.settings = settings
        self.engine = make_engine(settings, connect_timeout=connect_timeout)
        self._quick: Engine | None = None
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A session whose transaction commits on success and rolls back on error."""
        with self._sessions() as session, session.begin():
            yield session

    @contextmanager
    def quick_commits(self) -> Iterator[Connection]:
        """A connection whose every statement commits on its own, without waiting for the disk.

        For records that are written once per message and may be lost in a database crash
        without harm: one round trip each, and on PostgreSQL an asynchronous commit (flushed
        within ~0.6 s; a crash of the server, not of the client, can lose that much).
        """
        if self.engine.dialect.name == "sqlite":  # one engine: ":memory:" is per engine
            with self.engine.connect() as connection:
                yield connection.execution_options(isolation_level="AUTOCOMMIT")
            return
        if self._quick is None:
            self._quick = make_engine(self.settings, quick_commits=True)
        with self._quick.connect() as connection:
            yield connection

    def upgrade(self) -> None:
        """Apply every pending migration."""
        upgrade(self.settings, self.engine)

    def dispose(self) -> None:
        self.engine.dispose()
        if self._quick is not None:
            self._quick.dispose()


def alembic_config(settings: Settings) -> Any:
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.set_main_option("sqlalchemy.url", settings.db_url.replace("%", "%%"))
    return config


def schema_revisions(connection: Connection) -> set[str]:
    """The revisions the database is at (empty when it was never migrated)."""
    from alembic.runtime.migration import MigrationContext

    return set(MigrationContext.configure(connection).get_current_heads())


def current_revision(engine: Engine) -> str | None:
    """The migration the database is at; None for a database no migration has touched."""
    from alembic.migration import MigrationContext

    with engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()


def migrate(config: Any, engine: Engine, revision: str, *, downgrade: bool = False) -> None:
    """Upgrade (or downgrade) the database to `revision`, in one transaction.

    On SQLite, foreign keys are off while the scripts run: batch mode alters a table by
    copying it and dropping the original, and with them on, that drop would cascade to every
    row referring to it (rebuilding `subscribers` would delete every delivery). The keys are
    checked before the commit instead.
    """
    from alembic import command

    run = command.downgrade if downgrade else command.upgrade
    with engine.connect() as connection:
        sqlite = connection.dialect.name == "sqlite"
        if sqlite:  # a no-op inside a transaction: set before it begins
            connection.exec_driver_sql("PRAGMA foreign_keys=OFF")
            connection.commit()
        try:
            with connection.begin():
                config.attributes["connection"] = connection
                run(config, revision)
                if sqlite:
                    _check_foreign_keys(connection)
        finally:
            if sqlite:
                connection.exec_driver_sql("PRAGMA foreign_keys=ON")
                connection.commit()


def _check_foreign_keys(connection: Connection) -> None:
    broken = connection.exec_driver_sql("PRAGMA foreign_key_check").all()
    if broken:
        table, row, parent, _ = broken[0]
        raise RuntimeError(
            f"the migration leaves {len(broken)} row(s) referring to nothing, "
            f"first {table} rowid {row} -> {parent}"
        )


def upgrade(settings: Settings, engine: Engine | None = None) -> None:
    """Run `alembic upgrade head` on the configured database."""
    from alembic import command

    config = alembic_config(settings)
    if engine is not None:
        migrate(config, engine, "head")
    else:
        command.upgrade(config, "head")
