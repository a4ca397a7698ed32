"""Real Celery processes (`celery -A workers.celery_app` worker or beat), each with a log file."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from . import ROOT

BEAT_ARGS = ["beat", "-S", "redbeat.RedBeatScheduler", "--loglevel", "DEBUG"]


def worker_args(name: str, concurrency: int = 1) -> list[str]:
    """The worker command line, as deploy/ runs it (plus a name and the pool size)."""
    return [
        "worker",
        "-Q",
        "collect,plan,mail",
        "--concurrency",
        str(concurrency),
        "--without-mingle",
        "--without-gossip",
        "--loglevel",
        "INFO",
        "-n",
        f"{name}@%h",
    ]


def newsletter_env(**values: Any) -> dict[str, str]:
    """This environment without any NEWSLETTER_* variable, plus `values` as NEWSLETTER_*."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("NEWSLETTER_")}
    env.update({f"NEWSLETTER_{key.upper()}": str(value) for key, value in values.items()})
    return env


class CeleryProcess:
    """A `celery -A workers.celery_app ...` process (worker or beat) with its own log file."""

    def __init__(self, name: str, args: list[str], env: dict[str, str], log_dir: Path) -> None:
        self.name = name
        self.log_path = log_dir / f"{name}.log"
        celery = Path(sys.executable).parent / "celery"
        self._log = open(self.log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(
            [str(celery), "-A", "workers.celery_app", *args],
            env=env,
            cwd=ROOT,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    @property
    def pid(self) -> int:
        """The process id of the celery command (its group's leader)."""
        return self.process.pid

    def log(self) -> str:
        """Everything the process has logged so far."""
        return self.log_path.read_text(errors="replace")

    def wait_for(self, text: str, timeout: float = 30.0) -> None:
        """Return once `text` is in the log; fail if the process exits or `timeout` passes."""
        deadline = time.monotonic() + timeout
        while text not in self.log():
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.name} exited:\n{self.log()[-3000:]}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.name} never said {text!r}:\n{self.log()[-3000:]}")
            time.sleep(0.1)

    def kill(self) -> None:
        """SIGKILL to the whole process group: the worker and its pool, no goodbye."""
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)

    def stop(self) -> None:
        """SIGTERM to the process group (a warm shutdown), SIGKILL after 15 s; closes the log."""
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.kill()
        self._log.close()


class CeleryProcesses:
    """The Celery processes one test started, all stopped together at its end."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.started: list[CeleryProcess] = []

    def start(self, kind: str, name: str, values: dict, concurrency: int = 1) -> CeleryProcess:
        """Start a "worker" or a "beat" called `name` with `values` as its NEWSLETTER_*."""
        args = worker_args(name, concurrency) if kind == "worker" else BEAT_ARGS
        process = CeleryProcess(name, args, newsletter_env(**values), self.log_dir)
        self.started.append(process)
        return process

    def stop(self) -> None:
        """Stop every process started, in the order they were started."""
        for process in self.started:
            process.stop()
