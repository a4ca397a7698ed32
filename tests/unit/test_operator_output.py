"""What the operator reads: a broken install changes nothing, and no wrong words in the output."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

from typer.testing import CliRunner

import newsletter
from newsletter import resources
from newsletter.cli import app

runner = CliRunner()
PACKAGE = Path(newsletter.__file__).resolve().parent
ROOT = PACKAGE.parent


def test_the_install_check_lists_every_file_the_package_ships():
    shipped = {
        str(p.relative_to(PACKAGE))
        for folder in ("templates", "data")
        for p in (PACKAGE / folder).rglob("*")
        if p.is_file() and "__pycache__" not in p.parts
    }
    assert shipped <= set(resources.SHIPPED), shipped - set(resources.SHIPPED)
    assert resources.missing_files() == []


def test_the_templates_are_one_copy_at_the_top_shipped_through_the_package():
    # The top-level templates/ is the one copy; newsletter/templates links to it, so the
    # package data (and every install) holds exactly those files.
    link = PACKAGE / "templates"
    assert link.is_symlink() and link.resolve() == (ROOT / "templates").resolve()
    assert (ROOT / "templates" / "email").is_dir() and (ROOT / "templates" / "web").is_dir()


def test_demo_on_a_broken_install_says_what_is_missing_and_writes_nothing(tmp_path):
    broken = tmp_path / "site"
    shutil.copytree(PACKAGE, broken / "newsletter", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.rmtree(broken / "newsletter" / "templates" / "email")
    work = tmp_path / "empty"
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("NEWSLETTER_")}
    result = subprocess.run(
        [sys.executable, "-m", "newsletter", "demo"],
        cwd=work,
        env=env | {"PYTHONPATH": str(broken), "COLUMNS": "300"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2, result.stdout + result.stderr
    assert "templates/email/base.html" in result.stderr
    assert "incomplete" in result.stderr
    assert list(work.iterdir()) == []  # no var/, no database, no secret key


def _demo_env(monkeypatch, tmp_path, smtp_url: str) -> None:
    monkeypatch.setenv("NEWSLETTER_VAR_DIR", str(tmp_path / "var"))
    monkeypatch.setenv("NEWSLETTER_SECRET_KEY", "test-secret")
    monkeypatch.setenv("NEWSLETTER_SMTP_URL", smtp_url)


def test_demo_and_send_by_smtp_show_no_relay_reply_as_a_path(monkeypatch, tmp_path, smtp_server):
    _demo_env(monkeypatch, tmp_path, smtp_server.url)
    demo = runner.invoke(app, ["demo"])
    assert demo.exit_code == 0, demo.output
    assert "Demo digest sent by SMTP to demo@example.org." in demo.output
    runner.invoke(
        app,
        ["subscribe", "x@example.org", "--keywords", "agents", "--send-hour", "0"],
    )
    sent = runner.invoke(app, ["send"])
    assert sent.exit_code == 0, sent.output
    lines = [line.strip() for line in sent.output.splitlines() if line.strip()]
    assert lines[-1].startswith("planned 1,") and "sent 1" in lines[-1], sent.output
    assert "OK" not in sent.output  # the relay's "250 OK" is no file to show


def test_the_demo_log_of_run_by_smtp_says_sent_not_written_to(monkeypatch, tmp_path, smtp_server):
    import logging

    from newsletter import service
    from newsletter.config import load_settings
    from newsletter.db import Database

    _demo_env(monkeypatch, tmp_path, smtp_server.url)
    settings = load_settings()
    db = Database(settings)
    db.upgrade()
    records: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda record: records.append(record.getMessage())  # type: ignore[method-assign]
    logging.getLogger("newsletter.service").addHandler(handler)
    logging.getLogger("newsletter.service").setLevel(logging.INFO)
    try:
        # serve() logs the demo's outcome before it starts the server: stop it right there.
        monkeypatch.setattr(service, "RecentPapers", _Stop)
        with contextlib.suppress(_Stopped):
            service.serve(settings, demo=True)
    finally:
        logging.getLogger("newsletter.service").removeHandler(handler)
        db.dispose()
    assert "demo digest sent by SMTP to demo@example.org" in records, records
    assert not any("written to" in r for r in records), records


class _Stopped(Exception):
    pass


class _Stop:
    def __init__(self, *args, **kwargs) -> None:
        raise _Stopped()


def test_a_dry_run_never_says_planned(monkeypatch, tmp_path, caplog):
    import logging

    monkeypatch.setenv("NEWSLETTER_VAR_DIR", str(tmp_path / "var"))
    monkeypatch.setenv("NEWSLETTER_SECRET_KEY", "test-secret")
    assert runner.invoke(app, ["demo"]).exit_code == 0
    runner.invoke(app, ["subscribe", "x@example.org", "--keywords", "agents", "--send-hour", "0"])
    with caplog.at_level(logging.INFO, logger="newsletter.pipeline"):
        result = runner.invoke(app, ["send", "--dry-run"])
    assert result.exit_code == 0, result.output
    said = result.output + caplog.text
    assert "nothing stored" in caplog.text
    assert " planned" not in said.replace("would be planned", ""), said


def test_web_and_run_take_host_and_port():
    for command in ("web", "run"):
        result = runner.invoke(app, [command, "--help"], env={"COLUMNS": "200"})
        assert "--host" in result.output and "--port" in result.output
    result = runner.invoke(app, ["web", "--port", "70000"])
    assert result.exit_code == 2 and "65535" in result.output


def test_the_image_needs_no_pythonpath():
    dockerfile = (ROOT / "deploy" / "Dockerfile").read_text()
    assert "PYTHONPATH" not in dockerfile
    # The templates are copied before `pip install .`, which ships them as package data
    # through newsletter/templates.
    assert dockerfile.index("COPY templates") < dockerfile.index("RUN pip install .")
