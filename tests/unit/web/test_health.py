"""/healthz reads a real table, knows the migrations are current, and pings Redis when used."""

from __future__ import annotations

import pytest
from sqlalchemy import text

from newsletter.db import Database
from newsletter.web.app import create_app


def health(client):
    response = client.get("/healthz")
    return response.status_code, response.json()


def test_a_healthy_embedded_service(w):
    status, body = health(w.client)
    assert status == 200
    assert body == {"status": "ok", "database": "ok", "migrations": "ok", "redis": "not used"}


def test_a_database_file_overwritten_with_garbage_is_unhealthy(w, db, settings, web_papers):
    assert health(w.client)[0] == 200
    assert w.client.get("/preview?keywords=diffusion").status_code == 200
    # The pages move from the WAL into the file, as SQLite does by itself when the WAL grows
    # or the last connection closes; the pool still holds connections that have them cached.
    with db.engine.connect() as connection:
        connection.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
    path = settings.var_dir / "newsletter.db"
    size = path.stat().st_size
    with path.open("r+b") as handle:  # in place, as a stray `cp` or a full disk would
        handle.write(b"this is not a database " * (size // 23 + 1))
    status, body = health(w.client)
    assert status == 503
    assert body["status"] == "error" and body["database"] == "unreachable"
    assert body["reason"]


def test_a_dropped_table_is_unhealthy(w, db):
    with db.engine.begin() as connection:
        connection.execute(text("DROP TABLE deliveries"))
        connection.execute(text("DROP TABLE subscribers"))
    status, body = health(w.client)
    assert status == 503
    assert body["database"] == "unreachable" and "subscribers" in body["reason"]


def test_migrations_behind_are_unhealthy(w, settings):
    from alembic import command

    from newsletter.db import alembic_config

    command.downgrade(alembic_config(settings), "-1")
    status, body = health(w.client)
    assert status == 503
    assert body["database"] == "ok" and body["migrations"] == "behind"
    assert "alembic upgrade" in body["reason"] or "db upgrade" in body["reason"]


def test_redis_down_in_distributed_mode_is_unhealthy(w, settings, db, tmp_path, redis_server):
    redis = type(redis_server)(tmp_path)  # a redis-server of this test's own, to stop
    redis.start()
    distributed = settings.model_copy(update={"redis_url": redis.url})
    try:
        with type(w.client)(create_app(distributed, db)) as client:
            assert health(client) == (
                200,
                {"status": "ok", "database": "ok", "migrations": "ok", "redis": "ok"},
            )
            redis.stop()
            status, body = health(client)
    finally:
        redis.stop()
    assert status == 503
    assert body["redis"] == "unreachable" and body["database"] == "ok"


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_a_dropped_table_on_postgresql_is_unhealthy(backend_db, w):
    settings = backend_db.settings
    with type(w.client)(create_app(settings, backend_db)) as client:
        assert health(client)[0] == 200
        with backend_db.engine.begin() as connection:
            connection.execute(text("DROP TABLE subscribers CASCADE"))
        status, body = health(client)
    assert status == 503 and body["database"] == "unreachable"


def test_no_database_at_all_is_unhealthy(w, settings, tmp_path):
    broken = settings.model_copy(update={"database_url": f"sqlite:///{tmp_path}"})
    database = Database(broken)
    try:
        with type(w.client)(create_app(broken, database)) as client:
            status, body = health(client)
    finally:
        database.dispose()
    assert status == 503 and body["database"] == "unreachable"


def test_a_database_migrated_by_a_newer_version_is_unhealthy(w, db):
    with db.engine.begin() as connection:
        connection.execute(text("UPDATE alembic_version SET version_num = '9999'"))
    status, body = health(w.client)
    assert status == 503
    assert body["migrations"] == "ahead" and "9999" in body["reason"]
