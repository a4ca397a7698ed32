"""Cancelling the source client: a request to a silent server, and a retry wait, end at once."""

from __future__ import annotations

import socket
import threading
import time

import pytest

from newsletter.config import Settings
from newsletter.sources.http import FetchCancelled, SourceClient


@pytest.fixture
def silent_port():
    """A server that accepts connections and never answers."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    held: list[socket.socket] = []

    def accept() -> None:
        while True:
            try:
                held.append(server.accept()[0])
            except OSError:
                return

    threading.Thread(target=accept, daemon=True).start()
    yield server.getsockname()[1]
    for conn in held:
        conn.close()
    server.close()


def cancel_after(client: SourceClient, seconds: float) -> None:
    threading.Timer(seconds, client.cancel).start()


def test_a_request_to_a_silent_server_ends_at_once_when_cancelled(silent_port):
    settings = Settings(secret_key="x", http_timeout=20, http_retries=4)
    with SourceClient(settings) as client:
        cancel_after(client, 0.3)
        began = time.monotonic()
        with pytest.raises(FetchCancelled):
            client.get(f"http://127.0.0.1:{silent_port}/api/daily_papers")
        assert time.monotonic() - began < 1.0


def test_a_retry_wait_ends_at_once_when_cancelled():
    # Port 9 refuses at once: the client then waits its backoff before the next try.
    settings = Settings(secret_key="x", http_retries=4)
    with SourceClient(settings, backoff_base=30, backoff_cap=30) as client:
        cancel_after(client, 0.3)
        began = time.monotonic()
        with pytest.raises(FetchCancelled):
            client.get("http://127.0.0.1:9/api/daily_papers")
        assert time.monotonic() - began < 1.0


def test_a_cancelled_client_sends_nothing(silent_port):
    stop = threading.Event()
    stop.set()
    with (
        SourceClient(Settings(secret_key="x"), cancel=stop) as client,
        pytest.raises(FetchCancelled),
    ):
        client.get(f"http://127.0.0.1:{silent_port}/")


def test_a_slow_answer_still_arrives_in_pieces_across_the_polls():
    # Reads wait in short steps: an answer slower than one step is still read whole.
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)

    def answer() -> None:
        conn = server.accept()[0]
        conn.recv(65536)
        time.sleep(0.35)
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhe")
        time.sleep(0.35)
        conn.sendall(b"llo")
        time.sleep(0.2)
        conn.close()

    threading.Thread(target=answer, daemon=True).start()
    try:
        with SourceClient(Settings(secret_key="x", http_timeout=5)) as client:
            response = client.get(f"http://127.0.0.1:{server.getsockname()[1]}/")
        assert response.content == b"hello"
    finally:
        server.close()
