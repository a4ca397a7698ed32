"""The deployment files agree with the code: compose services, commands, units and variables."""

from __future__ import annotations

import configparser
import re
import shlex
from pathlib import Path

import pytest

from newsletter.config import ENV_PREFIX, Settings

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
WORKER = ["celery", "-A", "workers.celery_app", "worker", "-Q", "collect,plan,mail"]
BEAT = ["celery", "-A", "workers.celery_app", "beat", "-S", "redbeat.RedBeatScheduler"]


@pytest.fixture(scope="module")
def compose(python_module) -> dict:
    yaml = python_module("yaml")
    return yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())


def test_compose_runs_every_role_of_the_distributed_mode(compose):
    services = compose["services"]
    assert {"web", "worker", "beat", "redis", "postgres", "mailpit", "migrate"} <= set(services)
    assert services["worker"]["command"][: len(WORKER)] == WORKER
    assert services["beat"]["command"][: len(BEAT)] == BEAT
    assert services["web"]["command"] == ["newsletter", "web"]
    for role in ("web", "worker", "beat", "migrate"):
        service = services[role]
        assert service["build"]["dockerfile"] == "deploy/Dockerfile"
        env = service["environment"]
        assert env["NEWSLETTER_REDIS_URL"].startswith("redis://redis:")
        assert env["NEWSLETTER_DATABASE_URL"].startswith("postgresql+psycopg://")
        assert "@postgres:" in env["NEWSLETTER_DATABASE_URL"]
        assert env["NEWSLETTER_SMTP_URL"] == "smtp://mailpit:1025"
    for role in ("web", "worker", "beat"):
        assert services[role]["depends_on"]["migrate"]["condition"] == (
            "service_completed_successfully"
        )
    assert "--appendonly" in services["redis"]["command"]


def test_every_variable_in_the_example_is_a_setting():
    fields = {f"{ENV_PREFIX}{name.upper()}" for name in Settings.model_fields}
    names = re.findall(r"^#?\s*(NEWSLETTER_\w+)=", (DEPLOY / "env.example").read_text(), re.M)
    assert names and set(names) <= fields, set(names) - fields
    assert "NEWSLETTER_SECRET_KEY" in names and "NEWSLETTER_REDIS_URL" in names


@pytest.mark.parametrize(
    ("unit", "command"),
    [("worker", WORKER), ("beat", BEAT), ("web", ["newsletter", "web"])],
)
def test_systemd_units_run_the_same_commands(unit, command):
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment, method-assign]
    parser.read(DEPLOY / "systemd" / f"newsletter-{unit}.service")
    argv = shlex.split(parser["Service"]["ExecStart"])
    assert Path(argv[0]).name == command[0] and argv[1 : len(command)] == command[1:]
    assert parser["Service"]["Restart"] == "always"
    assert parser["Service"]["EnvironmentFile"] == "/etc/newsletter/env"
    assert "newsletter-migrate.service" in parser["Unit"]["Requires"]


def test_the_image_runs_as_a_user_not_root():
    dockerfile = (DEPLOY / "Dockerfile").read_text()
    assert dockerfile.startswith("#") and "FROM python:3.11-slim" in dockerfile
    users = re.findall(r"^USER (\S+)", dockerfile, re.M)
    assert users and users[-1] not in ("root", "0")
    assert "RUN pip install ." in dockerfile


def test_every_long_running_service_has_a_healthcheck(compose):
    services = compose["services"]
    for role in ("web", "worker", "beat", "postgres", "redis"):
        assert services[role]["healthcheck"]["test"], role
    # Over TCP: a socket-only check passes against the image's temporary init server.
    assert "-h" in services["postgres"]["healthcheck"]["test"]
    assert "--wait" in services["migrate"]["command"]


def test_the_example_secret_key_is_refused(tmp_path):
    from newsletter.config import ConfigError, load_settings

    example = re.search(r"^NEWSLETTER_SECRET_KEY=(.*)$", (DEPLOY / "env.example").read_text(), re.M)
    assert example is not None
    for value in (example.group(1), "change-me", "CHANGE_ME", "<your-secret-key>", "secret"):
        with pytest.raises(ConfigError, match="NEWSLETTER_SECRET_KEY: .* example value"):
            load_settings(var_dir=tmp_path, secret_key=value)
    assert load_settings(var_dir=tmp_path, secret_key="k7-generated-elsewhere").secret_key
