"""deploy/ boots: its commands, run in its order, against a fresh PostgreSQL that comes up late.

No Docker and no systemd here: the test reads docker-compose.yml and the units, and starts
the very commands they name, in the order their dependencies give, with their environment
(container host names and paths mapped onto this machine). The PostgreSQL data directory
does not exist yet when the migration starts; it is made a few seconds later and goes
through the phases a fresh Docker volume does: a server on the Unix socket only (where the
image's entrypoint creates the database), then the real one on TCP.
"""

from __future__ import annotations

import configparser
import os
import shlex
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
BIN = Path(sys.executable).parent  # newsletter, celery, python: what the image has on PATH
LATE = 3.0  # seconds between the migration's start and the database's first start


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _pg_bin() -> Path:
    """Where initdb, pg_ctl and pg_isready are (resolving a symlink on PATH)."""
    found = shutil.which("initdb")
    if found:
        return Path(found).resolve().parent
    versions = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
    if not versions:
        pytest.skip(
            "missing system package: PostgreSQL is not installed (apt-get install postgresql)"
        )
    return versions[-1].parent


class LateCluster:
    """A PostgreSQL cluster made on demand, started like the postgres image on a new volume."""

    def __init__(self, root: Path, user: str, database: str) -> None:
        self.bin = _pg_bin()
        self.root = root
        self.data = root / "data"
        self.port = _free_port()
        self.user, self.database = user, database
        # initdb refuses root: as root, the cluster belongs to the postgres user.
        self.as_user = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        if self.as_user:
            shutil.chown(root, user="postgres")

    def _run(self, *args: str) -> None:
        subprocess.run(
            [*self.as_user, *args], check=True, cwd=self.root, capture_output=True, timeout=120
        )

    def _start(self, tcp: bool) -> None:
        listen = "127.0.0.1" if tcp else "''"
        options = (
            f"-p {self.port} -k {self.root} -c listen_addresses={listen} "
            "-c fsync=off -c synchronous_commit=off -c full_page_writes=off"
        )
        log = str(self.root / "postgres.log")
        self._run(
            str(self.bin / "pg_ctl"), "-D", str(self.data), "-l", log, "-o", options, "-w", "start"
        )

    def init_socket_only(self) -> None:
        """initdb, then a server on the Unix socket only that creates the database."""
        self._run(
            str(self.bin / "initdb"), "-D", str(self.data), "-U", self.user, "-A", "trust",
            "-E", "UTF8", "--no-locale",
        )  # fmt: skip
        self._start(tcp=False)
        self._run(
            str(self.bin / "psql"), "-h", str(self.root), "-p", str(self.port), "-U", self.user,
            "-d", "postgres", "-c", f"CREATE DATABASE {self.database}",
        )  # fmt: skip

    def restart_on_tcp(self) -> None:
        self._run(str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "stop")
        self._start(tcp=True)

    def stop(self) -> None:
        if (self.data / "postmaster.pid").exists():
            pg_ctl = str(self.bin / "pg_ctl")
            stop = [*self.as_user, pg_ctl, "-D", str(self.data), "-m", "immediate", "stop"]
            subprocess.run(stop, capture_output=True, timeout=60)
        shutil.rmtree(self.root, ignore_errors=True)

    def socket_env(self) -> dict[str, str]:
        """libpq's defaults as inside the container: its socket directory and port."""
        return {"PGHOST": str(self.root), "PGPORT": str(self.port)}


@pytest.fixture
def late_cluster() -> Iterator[LateCluster]:
    cluster = LateCluster(
        Path(tempfile.mkdtemp(prefix="newsletter-late-pg-")), "newsletter", "newsletter"
    )
    yield cluster
    cluster.stop()


class Processes:
    """Every process a test starts, each logging to its own file; all stopped at the end."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.started: list[tuple[str, subprocess.Popen[bytes]]] = []

    def start(
        self, name: str, argv: list[str], env: dict[str, str], cwd: Path
    ) -> subprocess.Popen[bytes]:
        log = open(self.directory / f"{name}.log", "wb")  # noqa: SIM115 - the child holds it
        process = subprocess.Popen(
            argv, env=env, cwd=cwd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        log.close()
        self.started.append((name, process))
        return process

    def log(self, name: str) -> str:
        return (self.directory / f"{name}.log").read_text(errors="replace")

    def stop_all(self) -> None:
        import signal

        for _name, process in reversed(self.started):
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
        for _name, process in self.started:
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=10)


@pytest.fixture
def processes(tmp_path: Path) -> Iterator[Processes]:
    started = Processes(tmp_path)
    yield started
    started.stop_all()


def _environment(values: dict[str, str]) -> dict[str, str]:
    """This machine's environment without NEWSLETTER_* (nor .env: cwd is empty), plus `values`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("NEWSLETTER_", "PG"))}
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    env.update(values)
    return env


def _read_env_file(path: Path) -> dict[str, str]:
    """KEY=value lines, as docker compose's env_file and systemd's EnvironmentFile read them."""
    values = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#") and "=" in line:
            key, value = line.split("=", 1)
            values[key.strip()] = value.strip()
    return values


def _wait_until(check, timeout: float, what: str, log=lambda: "") -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} within {timeout:.0f} s\n{log()[-4000:]}")
        time.sleep(0.5)


def _passes(argv: list[str], env: dict[str, str], timeout: float = 30) -> bool:
    try:
        return subprocess.run(argv, env=env, capture_output=True, timeout=timeout).returncode == 0
    except subprocess.TimeoutExpired:
        return False


# --- docker compose --------------------------------------------------------------------------


def _compose() -> dict:
    yaml = pytest.importorskip(
        "yaml", reason="missing system package: PyYAML (make test installs the dev extras)"
    )
    return yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())


def _start_order(services: dict, roles: list[str]) -> list[str]:
    """`roles` sorted so that every service comes after what it depends_on."""
    order: list[str] = []

    def visit(name: str) -> None:
        for dependency in services[name].get("depends_on", {}):
            if dependency in roles and dependency not in order:
                visit(dependency)
        if name not in order:
            order.append(name)

    for role in roles:
        visit(role)
    return order


def _healthcheck_argv(test: list[str] | str) -> list[str]:
    """A compose healthcheck's `test` as a command line ($$ is compose's escaped $)."""
    if isinstance(test, str):
        return ["sh", "-c", test.replace("$$", "$")]
    kind, *rest = test
    if kind == "CMD-SHELL":
        return ["sh", "-c", rest[0].replace("$$", "$")]
    assert kind == "CMD", test
    return rest


def _on_this_machine(argv: list[str], ports: dict[str, str]) -> list[str]:
    """Container ports and host names mapped onto the processes of this test."""
    mapped = []
    for arg in argv:
        for old, new in ports.items():
            arg = arg.replace(old, new)
        mapped.append(arg)
    if mapped and mapped[0] == "python":
        mapped[0] = sys.executable
    return mapped


def test_compose_boots_in_order_against_a_database_that_comes_up_late(
    tmp_path, late_cluster, redis_url, processes
):
    compose = _compose()
    services = compose["services"]
    order = _start_order(services, ["web", "worker", "beat", "migrate"])
    assert order[0] == "migrate", order
    web_port = str(_free_port())
    redis_host_port = redis_url.split("//", 1)[1].split("/", 1)[0]
    hosts = {
        "@postgres:5432/": f"@127.0.0.1:{late_cluster.port}/",
        "redis://redis:6379": f"redis://{redis_host_port}",
        "smtp://mailpit:1025": f"smtp://127.0.0.1:{_free_port()}",
    }
    ports = {"127.0.0.1:8000": f"127.0.0.1:{web_port}", "5432": str(late_cluster.port)}
    dockerfile_env = {
        "NEWSLETTER_VAR_DIR": str(tmp_path / "state"),
        "NEWSLETTER_HOST": "0.0.0.0",
        "NEWSLETTER_PORT": web_port,
    }
    # deploy/.env as the README says to make it: env.example with the secret key set.
    env_file = _read_env_file(DEPLOY / "env.example")
    env_file["NEWSLETTER_SECRET_KEY"] = "a-key-generated-for-this-test-" + os.urandom(8).hex()
    cwd = tmp_path / "app"
    cwd.mkdir()

    def service_env(name: str) -> dict[str, str]:
        values = {**dockerfile_env, **env_file}
        for key, value in services[name].get("environment", {}).items():
            for old, new in hosts.items():
                value = value.replace(old, new)
            values[key] = value
        # Docker sets HOSTNAME to the container's, which is what Celery names the worker by.
        return _environment({**values, "HOSTNAME": socket.gethostname()})

    # 1. The migration starts first, while there is no database at all.
    migrate = services["migrate"]
    assert "--wait" in migrate["command"], "the one-shot migration must wait for the database"
    started = time.monotonic()
    migration = processes.start(
        "migrate", _on_this_machine(migrate["command"], {}), service_env("migrate"), cwd
    )
    time.sleep(LATE)
    assert migration.poll() is None, f"the migration gave up at once:\n{processes.log('migrate')}"

    # 2. The volume's first start: a socket-only server, on which the database is created.
    #    The compose healthcheck must not pass yet; a check without -h would.
    late_cluster.init_socket_only()
    check = _on_this_machine(_healthcheck_argv(services["postgres"]["healthcheck"]["test"]), ports)
    check[0] = str(late_cluster.bin / check[0])
    container = _environment(late_cluster.socket_env())
    assert not _passes(check, container), "pg_isready passed against the temporary server"
    without_host = [
        a for i, a in enumerate(check) if a != "-h" and (i == 0 or check[i - 1] != "-h")
    ]
    assert _passes(without_host, container)  # why -h matters: the socket answers already
    time.sleep(1.0)
    assert migration.poll() is None, processes.log("migrate")

    # 3. The real server, on TCP: postgres healthy, and the migration finishes by itself.
    late_cluster.restart_on_tcp()
    _wait_until(lambda: _passes(check, container), 30, "postgres never became healthy")
    assert migration.wait(timeout=60) == 0, processes.log("migrate")
    log = processes.log("migrate")
    assert "not answering yet (attempt 1" in log and "is up to date" in log, log
    assert time.monotonic() - started > LATE

    # 4. web, worker and beat, as compose starts them; each one's healthcheck passes.
    for name in order[1:]:
        service = services[name]
        assert service["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
        processes.start(name, _on_this_machine(service["command"], {}), service_env(name), cwd)
    for name in order[1:]:
        argv = _on_this_machine(_healthcheck_argv(services[name]["healthcheck"]["test"]), ports)
        _wait_until(
            lambda argv=argv, name=name: _passes(argv, service_env(name)),
            90,
            f"the {name} healthcheck never passed",
            lambda name=name: processes.log(name),
        )
    assert not any(cwd.iterdir()), "a service wrote into its working directory"


def test_the_example_secret_key_stops_every_service(tmp_path):
    """deploy/.env copied from env.example and not edited: refused, naming the variable."""
    env = _environment(
        {**_read_env_file(DEPLOY / "env.example"), "NEWSLETTER_VAR_DIR": str(tmp_path / "state")}
    )
    for argv in (["newsletter", "db", "upgrade", "--wait", "5"], ["newsletter", "web"]):
        result = subprocess.run(
            argv, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60
        )
        assert result.returncode != 0
        assert "NEWSLETTER_SECRET_KEY" in result.stderr and "example value" in result.stderr
    assert not (tmp_path / "state").exists()


# --- systemd ---------------------------------------------------------------------------------

UNITS = DEPLOY / "systemd"


def _unit(name: str) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment, method-assign]
    parser.read(UNITS / f"newsletter-{name}.service")
    return parser


def _unit_order(names: list[str]) -> list[str]:
    """Units sorted so that each starts after the newsletter units it Requires= and is After=."""
    order: list[str] = []

    def visit(name: str) -> None:
        unit = _unit(name)["Unit"]
        after = unit.get("After", "").split()
        for required in unit.get("Requires", "").split():
            short = required.removeprefix("newsletter-").removesuffix(".service")
            assert required in after, f"{name} Requires= {required} without After= it"
            if short in names and short not in order:
                visit(short)
        if name not in order:
            order.append(name)

    for name in names:
        visit(name)
    return order


def _unit_process(name: str, root: Path, env_file: Path) -> tuple[list[str], dict[str, str], Path]:
    """ExecStart, environment and working directory of a unit, with its paths under `root`."""
    service = _unit(name)["Service"]
    state = service.get("StateDirectory")
    values: dict[str, str] = {}
    for line in service.get("Environment", "").splitlines():
        key, value = line.split("=", 1)
        values[key] = value
    values.update(_read_env_file(env_file))  # EnvironmentFile= wins over Environment=
    var_dir = values.get("NEWSLETTER_VAR_DIR")
    assert state and var_dir == f"/var/lib/{state}", (
        f"{name}: NEWSLETTER_VAR_DIR must be the unit's StateDirectory (writable by its user)"
    )
    values["NEWSLETTER_VAR_DIR"] = str(root / "var/lib" / state)
    argv = shlex.split(service["ExecStart"])
    assert argv[0].startswith("/opt/newsletter/.venv/bin/")
    argv[0] = str(BIN / Path(argv[0]).name)
    workdir = root / service["WorkingDirectory"].lstrip("/")
    workdir.mkdir(parents=True, exist_ok=True)
    return argv, _environment({**values, "HOSTNAME": socket.gethostname()}), workdir


def _web_healthy(port: str) -> bool:
    import json
    import urllib.request

    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as response:
            return json.load(response)["migrations"] == "ok"
    except OSError:
        return False


def test_systemd_units_boot_in_order_against_a_database_that_comes_up_late(
    tmp_path, late_cluster, redis_url, processes
):
    order = _unit_order(["web", "worker", "beat", "migrate"])
    assert order[0] == "migrate", order
    migrate_unit = _unit("migrate")["Service"]
    assert migrate_unit.get("RemainAfterExit", "no") == "no", (
        "with RemainAfterExit a restart after an upgrade starts the new code on the old schema"
    )
    web_port = str(_free_port())
    env_file = tmp_path / "env"
    env_file.write_text(
        "NEWSLETTER_SECRET_KEY=a-key-generated-for-this-test\n"
        f"NEWSLETTER_DATABASE_URL=postgresql+psycopg://newsletter@127.0.0.1:{late_cluster.port}/newsletter\n"
        f"NEWSLETTER_REDIS_URL={redis_url}\n"
        f"NEWSLETTER_PORT={web_port}\n"
    )
    root = tmp_path / "root"
    argv, env, cwd = _unit_process("migrate", root, env_file)
    assert "--wait" in argv, "the migration must wait for a database still starting at boot"
    migration = processes.start("migrate", argv, env, cwd)
    time.sleep(LATE)
    assert migration.poll() is None, processes.log("migrate")
    late_cluster.init_socket_only()
    late_cluster.restart_on_tcp()
    assert migration.wait(timeout=60) == 0, processes.log("migrate")
    assert "not answering yet (attempt 1" in processes.log("migrate")

    compose_checks = _compose()["services"]
    for name in order[1:]:
        argv, env, cwd = _unit_process(name, root, env_file)
        processes.start(name, argv, env, cwd)
    _wait_until(
        lambda: _web_healthy(web_port), 60, "web never healthy", lambda: processes.log("web")
    )
    for name in ("worker", "beat"):  # the same checks as the compose file's
        check = _on_this_machine(_healthcheck_argv(compose_checks[name]["healthcheck"]["test"]), {})
        _wait_until(
            lambda check=check, name=name: _passes(check, _unit_process(name, root, env_file)[1]),
            90,
            f"{name} never healthy",
            lambda name=name: processes.log(name),
        )


def test_systemd_units_on_sqlite_share_one_writable_state_directory(tmp_path, processes):
    """An env file without a database URL: the migration and the web app use one SQLite file in
    the units' state directory, and nothing is written into /opt/newsletter."""
    web_port = str(_free_port())
    env_file = tmp_path / "env"
    env_file.write_text(
        f"NEWSLETTER_SECRET_KEY=a-key-generated-for-this-test\nNEWSLETTER_PORT={web_port}\n"
    )
    root = tmp_path / "root"
    argv, env, cwd = _unit_process("migrate", root, env_file)
    assert subprocess.run(argv, env=env, cwd=cwd, capture_output=True, timeout=120).returncode == 0
    database = root / "var/lib/newsletter/newsletter.db"
    assert database.exists()
    argv, env, cwd = _unit_process("web", root, env_file)
    processes.start("web", argv, env, cwd)
    _wait_until(
        lambda: _web_healthy(web_port), 60, "web never healthy", lambda: processes.log("web")
    )
    assert not any((root / "opt/newsletter").iterdir()), "a unit wrote into its WorkingDirectory"
