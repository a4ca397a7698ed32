"""A redis-server of the test's own, on a free loopback port."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

from .net import free_port, wait_for_port


class RedisServer:
    """A redis-server of our own on a free port, with an append-only file so it can restart."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        """Start the server (again, after stop(): it reloads its append-only file)."""
        self.process = subprocess.Popen(
            [
                "redis-server",
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--dir",
                str(self.directory),
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
                "--save",
                "",
                "--daemonize",
                "no",
                "--logfile",
                str(self.directory / "redis.log"),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_for_port(self.port)

    def stop(self) -> None:
        """A clean shutdown (SIGTERM): the append-only file keeps what was queued."""
        if self.process is not None:
            self.process.terminate()
            self.process.wait(timeout=20)
            self.process = None

    def client(self) -> Any:
        """A redis-py client on this server."""
        import redis

        return redis.Redis.from_url(self.url)
