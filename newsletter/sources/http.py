"""The polite HTTP client the sources share: retries, backoff, arXiv spacing, conditional GET."""

from __future__ import annotations

import logging
import math
import random
import re
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from types import TracebackType
from typing import Any, Protocol
from urllib.parse import urlsplit

import httpcore
import httpx

from newsletter.config import Settings
from newsletter.sources.base import SourceError

log = logging.getLogger(__name__)

RETRY_STATUSES = frozenset({408, 425, 429, 500, 502, 503, 504})
MAX_BODY_BYTES = 64 * 1024 * 1024  # a daily feed is a few MB at most; refuse anything absurd
MAX_RETRY_AFTER = 60.0  # a server asking for longer is waited on this long, then asked again
ARXIV_THROTTLE = "arxiv"
_PAST_DEADLINE = "no complete answer within"
_ASCII_DIGITS = re.compile(r"[0-9]+")  # str.isdigit() also accepts "²", which int() refuses
_LONG_NUMBER = 12  # digits; a header number longer than this is beyond any cap we apply
# How often a blocked socket read looks whether the fetch was cancelled: a stop then ends an
# in-flight request within this, not at its deadline.
CANCEL_POLL = 0.1

Sleep = Callable[[float], None]
Clock = Callable[[], float]


class ValidatorStore(Protocol):
    """Where the ETag and Last-Modified of each URL are kept between runs."""

    def get(self, url: str) -> tuple[str | None, str | None]:
        """(etag, last_modified) last seen for `url`, each None if unknown."""
        ...

    def put(self, url: str, etag: str | None, last_modified: str | None) -> None:
        """Remember the validators of the response just used for `url`."""
        ...


class MemoryValidatorStore:
    """A ValidatorStore in a dict, for tests and one-off runs."""

    def __init__(self) -> None:
        self._data: dict[str, tuple[str | None, str | None]] = {}
        self._lock = threading.Lock()

    def get(self, url: str) -> tuple[str | None, str | None]:
        with self._lock:
            return self._data.get(url, (None, None))

    def put(self, url: str, etag: str | None, last_modified: str | None) -> None:
        with self._lock:
            self._data[url] = (etag, last_modified)


class FetchCancelled(Exception):
    """The client was cancelled (the service is stopping): no request is finished or retried.

    Not a SourceError: the source did nothing wrong, and no error run is recorded for it.
    """

    def __init__(self) -> None:
        super().__init__("cancelled: the service is stopping")


class HTTPStatusError(SourceError):
    """The server answered with an error status that retrying did not (or cannot) fix."""

    def __init__(self, source: str, url: str, status_code: int, content: bytes) -> None:
        super().__init__(source, f"HTTP {status_code} from {url}")
        self.url = url
        self.status_code = status_code
        self.content = content


@dataclass(frozen=True)
class SourceResponse:
    """A finished response: the body is read and decoded (gzip, br), validators at hand."""

    url: str
    status_code: int
    content: bytes
    headers: Mapping[str, str] = field(default_factory=dict)

    @property
    def not_modified(self) -> bool:
        """True for a 304: the server has nothing new since the validators we sent."""
        return self.status_code == 304

    @property
    def etag(self) -> str | None:
        return self.headers.get("etag")

    @property
    def last_modified(self) -> str | None:
        return self.headers.get("last-modified")

    @property
    def text(self) -> str:
        return self.content.decode("utf-8", errors="replace")


class _Deadlines:
    """The deadline of the request this thread is making, on the real monotonic clock, and
    the client's cancellation, which ends every request at once whatever its deadline."""

    def __init__(self, cancelled: threading.Event) -> None:
        self._local = threading.local()
        self.cancelled = cancelled

    def check_cancelled(self) -> None:
        """Raise FetchCancelled once the client has been cancelled."""
        if self.cancelled.is_set():
            raise FetchCancelled()

    @contextmanager
    def until(self, deadline: float, seconds: float) -> Iterator[None]:
        self._local.current = (deadline, seconds)
        try:
            yield
        finally:
            self._local.current = None

    def bound(self, timeout: float | None, error: type[Exception]) -> float | None:
        """`timeout` shortened to what is left of the deadline; raise `error` if none is."""
        current = getattr(self._local, "current", None)
        if current is None:
            return timeout
        deadline, seconds = current
        left = deadline - time.monotonic()
        if left <= 0:
            raise error(deadline_message(seconds))
        return left if timeout is None else min(timeout, left)


def deadline_message(seconds: float) -> str:
    """How a request that outlived its deadline is described."""
    return f"{_PAST_DEADLINE} {seconds:g}s"


class _DeadlineStream(httpcore.NetworkStream):
    """A socket whose every read and write ends by the request's deadline.

    httpx's timeouts count per socket operation, so a server sending a byte a second never
    times out; bounding each operation by the time left makes the deadline one for the whole
    request, headers and body alike.
    """

    def __init__(self, stream: httpcore.NetworkStream, deadlines: _Deadlines) -> None:
        self._stream = stream
        self._deadlines = deadlines

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        # Waited for in short steps, so a cancellation ends a read from a silent server at
        # once. A plain or TLS socket read that timed out has consumed nothing: it is retried.
        limit = self._deadlines.bound(timeout, httpcore.ReadTimeout)
        ends = None if limit is None else time.monotonic() + limit
        while True:
            self._deadlines.check_cancelled()
            step = CANCEL_POLL if ends is None else min(CANCEL_POLL, ends - time.monotonic())
            if step <= 0:
                raise httpcore.ReadTimeout(deadline_message(limit or 0))
            try:
                return self._stream.read(max_bytes, step)
            except httpcore.ReadTimeout:
                if ends is not None and time.monotonic() >= ends:
                    raise

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self._stream.write(buffer, self._deadlines.bound(timeout, httpcore.WriteTimeout))

    def close(self) -> None:
        self._stream.close()

    def start_tls(
        self, ssl_context: Any, server_hostname: str | None = None, timeout: float | None = None
    ) -> httpcore.NetworkStream:
        bounded = self._deadlines.bound(timeout, httpcore.ConnectTimeout)
        return _DeadlineStream(
            self._stream.start_tls(ssl_context, server_hostname, bounded), self._deadlines
        )

    def get_extra_info(self, info: str) -> Any:
        return self._stream.get_extra_info(info)


class _DeadlineBackend(httpcore.NetworkBackend):
    """httpcore's network backend with every connection wrapped in a _DeadlineStream."""

    def __init__(self, backend: httpcore.NetworkBackend, deadlines: _Deadlines) -> None:
        self._backend = backend
        self._deadlines = deadlines

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.NetworkStream:
        bounded = self._deadlines.bound(timeout, httpcore.ConnectTimeout)
        stream = self._backend.connect_tcp(host, port, bounded, local_address, socket_options)
        return _DeadlineStream(stream, self._deadlines)

    def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.NetworkStream:
        bounded = self._deadlines.bound(timeout, httpcore.ConnectTimeout)
        stream = self._backend.connect_unix_socket(path, bounded, socket_options)
        return _DeadlineStream(stream, self._deadlines)

    def sleep(self, seconds: float) -> None:
        self._backend.sleep(seconds)


def _deadline_transport(deadlines: _Deadlines) -> httpx.BaseTransport:
    """httpx's own transport, its sockets bounded by the request deadline."""
    transport = httpx.HTTPTransport()
    # httpx has no public hook for httpcore's network backend; without the attribute (a
    # future httpx) the body loop in _send still enforces the deadline between chunks.
    pool = getattr(transport, "_pool", None)
    backend = getattr(pool, "_network_backend", None)
    if isinstance(backend, httpcore.NetworkBackend):
        pool._network_backend = _DeadlineBackend(backend, deadlines)  # type: ignore[union-attr]
    else:  # pragma: no cover - depends on the httpx version
        log.warning("httpx without a network backend to wrap: deadlines hold between reads")
    return transport


class _Spacing:
    """Per throttle key, across threads: each request starts `interval` s after the last ended.

    The key's lock is held for the whole request, so requests to arXiv also go one at a
    time, as arXiv asks ("one request every three seconds, over one connection").
    """

    def __init__(self, interval: float, clock: Clock, sleep: Sleep) -> None:
        self._interval = interval
        self._clock = clock
        self._sleep = sleep
        self._guard = threading.Lock()
        self._locks: dict[str, threading.Lock] = {}
        self._last: dict[str, float] = {}

    @contextmanager
    def slot(self, key: str | None) -> Iterator[None]:
        if key is None or self._interval <= 0:
            yield
            return
        with self._guard:
            lock = self._locks.setdefault(key, threading.Lock())
        with lock:
            last = self._last.get(key)
            if last is not None:
                wait = last + self._interval - self._clock()
                if wait > 0:
                    self._sleep(wait)
            try:
                yield
            finally:
                # Counted from the end of the request: arXiv then sees its requests at least
                # `interval` apart, however long the last one took to arrive.
                self._last[key] = self._clock()


class SourceClient:
    """One shared httpx.Client with the manners the paper sources expect.

    Every request has one deadline, `settings.http_timeout`, for all of it (connect, headers,
    body); inside `budget(seconds)` all requests and waits together also end by then.
    `cancel` (or `cancel()`) ends every request, retry wait and arXiv spacing wait at once
    with FetchCancelled: set by a service that is stopping.
    """

    def __init__(
        self,
        settings: Settings,
        validators: ValidatorStore | None = None,
        sleep: Sleep | None = None,
        *,
        cancel: threading.Event | None = None,
        transport: httpx.BaseTransport | None = None,
        clock: Clock = time.monotonic,
        rng: random.Random | None = None,
        backoff_base: float = 1.0,
        backoff_cap: float = 60.0,
        max_retry_after: float = MAX_RETRY_AFTER,
    ) -> None:
        self.settings = settings
        self.validators = validators if validators is not None else MemoryValidatorStore()
        self._cancel = cancel if cancel is not None else threading.Event()
        self._sleep = sleep or self._wait
        self._clock = clock
        self._rng = rng or random.Random()
        self._retries = settings.http_retries
        self._timeout = settings.http_timeout
        self._backoff_base = backoff_base
        self._backoff_cap = backoff_cap
        self._max_retry_after = max_retry_after
        self._spacing = _Spacing(settings.arxiv_min_interval, clock, self._pause)
        self._deadlines = _Deadlines(self._cancel)
        self._budget = threading.local()
        self._arxiv_hosts = {
            urlsplit(url).netloc.lower() for url in (settings.arxiv_rss_url, settings.arxiv_api_url)
        }
        timeout = httpx.Timeout(settings.http_timeout, connect=min(settings.http_timeout, 10.0))
        # httpx advertises "gzip, deflate, br" by itself once brotli is installed.
        self._client = httpx.Client(
            headers={"User-Agent": settings.user_agent},
            timeout=timeout,
            follow_redirects=True,
            transport=transport or _deadline_transport(self._deadlines),
        )

    # Context manager ----------------------------------------------------------------------
    def __enter__(self) -> SourceClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Close the connections."""
        self._client.close()

    def cancel(self) -> None:
        """End the requests in flight and refuse new ones (FetchCancelled), from any thread."""
        self._cancel.set()

    def _wait(self, seconds: float) -> None:
        # The default sleep: a wait that a cancellation cuts short.
        self._cancel.wait(seconds)

    def _pause(self, seconds: float) -> None:
        self._deadlines.check_cancelled()
        self._sleep(seconds)
        self._deadlines.check_cancelled()

    @contextmanager
    def budget(self, seconds: float) -> Iterator[None]:
        """Within the block, this thread's requests, retries and waits end `seconds` from now.

        A request gets what is left of the budget if that is less than its own deadline; a
        retry whose wait would pass the budget is not made.
        """
        self._budget.current = (self._clock() + seconds, seconds)
        try:
            yield
        finally:
            self._budget.current = None

    # Requests -----------------------------------------------------------------------------
    def get(
        self,
        url: str,
        *,
        params: Mapping[str, Any] | None = None,
        source: str | None = None,
        conditional: bool = True,
    ) -> SourceResponse:
        """GET `url`, retrying transient failures; a 304 comes back with `not_modified` True.

        Connection errors, timeouts, 408/425/429 and 5xx are retried `settings.http_retries`
        times with exponential backoff and jitter, or after the server's Retry-After (at most
        `max_retry_after` seconds), while the budget lasts. Other 4xx raise HTTPStatusError at
        once. The validators of a 200 are not stored here: call `remember(response)` once the
        body has been parsed, so a body we could not use is fetched again next time instead
        of answered by a 304.
        """
        full_url = str(httpx.URL(url, params=params)) if params else url
        name = source or urlsplit(full_url).netloc
        headers = self._conditional_headers(full_url) if conditional else {}
        attempts = self._retries + 1
        for attempt in range(1, attempts + 1):
            self._deadlines.check_cancelled()
            try:
                response = self._send(name, full_url, headers)
            except httpx.TransportError as exc:
                problem = f"{_describe(exc)} from {full_url}"
                if attempt == attempts:
                    raise SourceError(name, f"{problem} after {attempts} attempts") from exc
                delay = self._backoff(attempt)
            except httpx.RequestError as exc:  # undecodable body, redirect loop: not transient
                raise SourceError(name, f"{_describe(exc)} from {full_url}") from exc
            else:
                if response.status_code not in RETRY_STATUSES:
                    return self._finish(name, response)
                problem = f"HTTP {response.status_code} from {full_url}"
                if attempt == attempts:
                    raise HTTPStatusError(name, full_url, response.status_code, response.content)
                told = self._retry_after(response.headers)
                delay = self._backoff(attempt) if told is None else told
            self._check_budget(name, f"{problem}; not retried: a {delay:.0f}s wait", delay)
            # Info: a source that stays down is reported once, by collect(), as a warning.
            log.info("%s: %s; retry %d/%d in %.1fs", name, problem, attempt, attempts - 1, delay)
            self._pause(delay)
        raise AssertionError("unreachable")  # pragma: no cover

    def remember(self, response: SourceResponse) -> None:
        """Store the validators of a response whose body was used, for the next conditional GET."""
        if response.status_code == 200 and (response.etag or response.last_modified):
            self.validators.put(response.url, response.etag, response.last_modified)

    # Internals ----------------------------------------------------------------------------
    def _send(self, name: str, url: str, headers: Mapping[str, str]) -> SourceResponse:
        with self._spacing.slot(self._throttle_key(url)):
            # Measured after the arXiv spacing wait, so the wait never eats the request's time.
            seconds = min(self._timeout, self._check_budget(name, f"GET {url} not sent"))
            deadline = time.monotonic() + seconds
            try:
                return self._read(url, headers, deadline, seconds)
            except httpx.TimeoutException as exc:
                if time.monotonic() < deadline:
                    raise  # one step (connect, say) timed out on its own, earlier
                raise httpx.ReadTimeout(deadline_message(seconds)) from exc

    def _read(
        self, url: str, headers: Mapping[str, str], deadline: float, seconds: float
    ) -> SourceResponse:
        timeout = httpx.Timeout(seconds, connect=min(seconds, 10.0))
        with (
            self._deadlines.until(deadline, seconds),
            self._client.stream("GET", url, headers=headers, timeout=timeout) as response,
        ):
            _refuse_declared_size(response)
            body = bytearray()
            for chunk in response.iter_bytes():
                body += chunk
                if len(body) > MAX_BODY_BYTES:
                    raise httpx.DecodingError(f"body larger than {MAX_BODY_BYTES} bytes")
                # The sockets keep the deadline; this holds it for any other transport.
                self._deadlines.check_cancelled()
                if time.monotonic() > deadline:
                    raise httpx.ReadTimeout(deadline_message(seconds))
            return SourceResponse(url, response.status_code, bytes(body), response.headers)

    def _check_budget(self, name: str, problem: str, wait: float = 0.0) -> float:
        """Seconds left of this thread's budget; SourceError if waiting `wait` would pass it."""
        current = getattr(self._budget, "current", None)
        if current is None:
            return math.inf
        ends, seconds = current
        left = ends - self._clock()
        if wait >= left:
            raise SourceError(name, f"{problem}: past the {seconds:g}s budget of the source run")
        return left

    def _finish(self, name: str, response: SourceResponse) -> SourceResponse:
        if response.status_code == 304 or 200 <= response.status_code < 300:
            return response
        raise HTTPStatusError(name, response.url, response.status_code, response.content)

    def _throttle_key(self, url: str) -> str | None:
        # arXiv's limit covers its API, RSS and OAI hosts together, so they share one key.
        host = urlsplit(url).netloc.lower()
        hostname = host.split(":")[0]
        if host in self._arxiv_hosts or hostname == "arxiv.org" or hostname.endswith(".arxiv.org"):
            return ARXIV_THROTTLE
        return None

    def _conditional_headers(self, url: str) -> dict[str, str]:
        etag, last_modified = self.validators.get(url)
        headers = {}
        if etag:
            headers["If-None-Match"] = etag
        if last_modified:
            headers["If-Modified-Since"] = last_modified
        return headers

    def _backoff(self, attempt: int) -> float:
        # Exponential with jitter, so many clients failing together do not return together.
        ceiling = min(self._backoff_cap, self._backoff_base * 2 ** (attempt - 1))
        return ceiling / 2 + self._rng.uniform(0, ceiling / 2)

    def _retry_after(self, headers: Mapping[str, str]) -> float | None:
        seconds = parse_retry_after(headers.get("retry-after"))
        return None if seconds is None else min(seconds, self._max_retry_after)


def _refuse_declared_size(response: httpx.Response) -> None:
    # A body announced as too large is refused before a byte of it is read. (A compressed
    # body may still grow past the cap once decoded: the loop in _send counts decoded bytes.)
    declared = response.headers.get("content-length", "")
    if _ASCII_DIGITS.fullmatch(declared) and (
        len(declared) > _LONG_NUMBER or int(declared) > MAX_BODY_BYTES
    ):
        raise httpx.DecodingError(f"body larger than {MAX_BODY_BYTES} bytes ({declared} declared)")


def parse_retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or an HTTP date), or None."""
    if not value:
        return None
    value = value.strip()
    if _ASCII_DIGITS.fullmatch(value):
        # int() refuses 4,300 digits and float() makes inf of 400: long means "very long".
        return float(value) if len(value) <= _LONG_NUMBER else float(10**_LONG_NUMBER)
    try:
        when = parsedate_to_datetime(value)
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        seconds = (when - (now or datetime.now(UTC))).total_seconds()
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    return max(0.0, seconds) if math.isfinite(seconds) else None


def _describe(exc: httpx.RequestError) -> str:
    if str(exc).startswith(_PAST_DEADLINE):
        return f"timed out ({exc})"
    if isinstance(exc, httpx.TimeoutException):
        return f"timed out ({type(exc).__name__})"
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
