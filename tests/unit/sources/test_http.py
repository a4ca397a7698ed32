"""The shared HTTP client against a fake internet: retries, Retry-After, spacing, validators."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import brotli
import httpx
import pytest

from newsletter.config import Settings
from newsletter.sources import SourceError
from newsletter.sources import http as source_http
from newsletter.sources.http import (
    HTTPStatusError,
    MemoryValidatorStore,
    SourceClient,
    parse_retry_after,
)

HF = "https://hf.test/api/daily_papers"
RSS = "https://rss.arxiv.org/rss/cs.LG"
API = "https://export.arxiv.org/api/query"

Reply = httpx.Response | Exception


class FakeTime:
    """A clock that only moves when someone sleeps; records every sleep."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds

    def clock(self) -> float:
        return self.now


class FakeInternet:
    """Answers requests from a script of replies; the last reply repeats."""

    def __init__(self, *replies: Reply) -> None:
        self.replies = list(replies)
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        reply = self.replies.pop(0) if len(self.replies) > 1 else self.replies[0]
        if isinstance(reply, Exception):
            raise reply
        return reply


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(
        var_dir=tmp_path,
        secret_key="x",
        hf_base_url="https://hf.test",
        http_retries=3,
        arxiv_min_interval=3.0,
        contact_email="ops@example.org",
    )


@pytest.fixture
def fake_time() -> FakeTime:
    return FakeTime()


@pytest.fixture
def make_client(
    settings: Settings, fake_time: FakeTime
) -> Iterator[Callable[[FakeInternet], SourceClient]]:
    clients: list[SourceClient] = []

    def make(internet: FakeInternet) -> SourceClient:
        client = SourceClient(
            settings,
            validators=MemoryValidatorStore(),
            sleep=fake_time.sleep,
            transport=httpx.MockTransport(internet),
            clock=fake_time.clock,
        )
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.close()


Make = Callable[[FakeInternet], SourceClient]


def test_requests_say_who_we_are_and_accept_compression(make_client: Make) -> None:
    internet = FakeInternet(httpx.Response(200, content=b"[]"))
    make_client(internet).get(HF)
    headers = internet.requests[0].headers
    assert "mailto:ops@example.org" in headers["user-agent"]
    assert headers["user-agent"].startswith("paper-newsletter/")
    assert {"gzip", "br"} <= {e.strip() for e in headers["accept-encoding"].split(",")}


def test_a_brotli_body_is_decoded(make_client: Make) -> None:
    body = b'[{"paper": {}}]' * 50
    reply = httpx.Response(200, content=brotli.compress(body), headers={"content-encoding": "br"})
    assert make_client(FakeInternet(reply)).get(HF).content == body


def test_server_errors_are_retried_with_growing_jittered_backoff(
    make_client: Make, fake_time: FakeTime
) -> None:
    internet = FakeInternet(
        httpx.Response(503), httpx.Response(502), httpx.Response(200, content=b"ok")
    )
    response = make_client(internet).get(HF)

    assert response.content == b"ok" and response.status_code == 200
    assert len(internet.requests) == 3
    first, second = fake_time.sleeps
    assert 0.5 <= first <= 1.0
    assert 1.0 <= second <= 2.0


def test_after_the_last_retry_the_error_is_raised(make_client: Make, fake_time: FakeTime) -> None:
    internet = FakeInternet(httpx.Response(500, content=b"oops"))
    with pytest.raises(HTTPStatusError) as caught:
        make_client(internet).get(HF, source="hf_daily")

    assert len(internet.requests) == 4  # the first try and http_retries=3 more
    assert len(fake_time.sleeps) == 3
    error = caught.value
    assert (error.source, error.status_code, error.content) == ("hf_daily", 500, b"oops")
    assert str(error) == f"hf_daily: HTTP 500 from {HF}"


def test_retry_after_seconds_is_obeyed(make_client: Make, fake_time: FakeTime) -> None:
    internet = FakeInternet(
        httpx.Response(429, headers={"Retry-After": "7"}), httpx.Response(200, content=b"ok")
    )
    assert make_client(internet).get(HF).content == b"ok"
    assert fake_time.sleeps == [7.0]


def test_retry_after_is_capped(settings: Settings, fake_time: FakeTime) -> None:
    internet = FakeInternet(
        httpx.Response(503, headers={"Retry-After": "86400"}), httpx.Response(200)
    )
    with SourceClient(
        settings,
        sleep=fake_time.sleep,
        transport=httpx.MockTransport(internet),
        clock=fake_time.clock,
        max_retry_after=120.0,
    ) as client:
        client.get(HF)
    assert fake_time.sleeps == [120.0]


def test_retry_after_as_an_http_date() -> None:
    now = datetime(2026, 6, 12, 8, 0, 0, tzinfo=UTC)
    assert parse_retry_after("Fri, 12 Jun 2026 08:00:30 GMT", now) == 30.0
    assert parse_retry_after("Fri, 12 Jun 2026 07:00:00 GMT", now) == 0.0
    assert parse_retry_after("120", now) == 120.0
    assert parse_retry_after("soon", now) is None
    assert parse_retry_after(None, now) is None


def test_a_client_error_is_not_retried(make_client: Make, fake_time: FakeTime) -> None:
    internet = FakeInternet(httpx.Response(404, content=b"no such day"))
    with pytest.raises(HTTPStatusError) as caught:
        make_client(internet).get(HF)
    assert caught.value.status_code == 404
    assert len(internet.requests) == 1 and fake_time.sleeps == []


def test_connection_errors_are_retried(make_client: Make) -> None:
    internet = FakeInternet(
        httpx.ConnectError("refused"),
        httpx.RemoteProtocolError("peer closed connection"),
        httpx.Response(200, content=b"ok"),
    )
    assert make_client(internet).get(HF).content == b"ok"
    assert len(internet.requests) == 3


def test_endless_timeouts_end_in_a_source_error(make_client: Make) -> None:
    internet = FakeInternet(httpx.ReadTimeout("slow"))
    with pytest.raises(SourceError) as caught:
        make_client(internet).get(HF, source="hf_daily")
    assert caught.value.source == "hf_daily"
    assert caught.value.message == f"timed out (ReadTimeout) from {HF} after 4 attempts"


def test_an_absurdly_large_body_is_refused_at_once(
    make_client: Make, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(source_http, "MAX_BODY_BYTES", 10)
    internet = FakeInternet(httpx.Response(200, content=b"x" * 100))
    with pytest.raises(SourceError, match="larger than 10 bytes"):
        make_client(internet).get(HF)
    assert len(internet.requests) == 1


def test_validators_are_sent_only_once_remembered(make_client: Make) -> None:
    validators = {"ETag": '"v1"', "Last-Modified": "Fri, 12 Jun 2026 08:00:00 GMT"}
    internet = FakeInternet(
        httpx.Response(200, content=b"[]", headers=validators),
        httpx.Response(200, content=b"[]", headers=validators),
        httpx.Response(304),
    )
    client = make_client(internet)

    first = client.get(HF, params={"date": "2026-06-12"})
    client.get(HF, params={"date": "2026-06-12"})  # body not used yet: ask unconditionally
    assert "if-none-match" not in internet.requests[1].headers

    client.remember(first)
    third = client.get(HF, params={"date": "2026-06-12"})
    sent = internet.requests[2].headers
    assert sent["if-none-match"] == '"v1"'
    assert sent["if-modified-since"] == "Fri, 12 Jun 2026 08:00:00 GMT"
    assert third.not_modified and third.content == b""
    assert first.url == f"{HF}?date=2026-06-12"


def test_validators_are_kept_per_url(make_client: Make) -> None:
    internet = FakeInternet(httpx.Response(200, headers={"ETag": '"a"'}), httpx.Response(200))
    client = make_client(internet)
    client.remember(client.get(HF, params={"date": "2026-06-12"}))
    client.get(HF, params={"date": "2026-06-13"})
    assert "if-none-match" not in internet.requests[1].headers


def test_a_conditional_get_can_be_turned_off(make_client: Make) -> None:
    internet = FakeInternet(httpx.Response(200, headers={"ETag": '"a"'}))
    client = make_client(internet)
    client.remember(client.get(API))
    client.get(API, conditional=False)
    assert "if-none-match" not in internet.requests[1].headers


def test_arxiv_hosts_share_one_spacing(make_client: Make, fake_time: FakeTime) -> None:
    client = make_client(FakeInternet(httpx.Response(200)))
    client.get(RSS)
    client.get(API)  # another arXiv host: arXiv's limit covers API and RSS together
    client.get(HF)
    client.get(HF)
    assert fake_time.sleeps == [3.0]


def test_arxiv_spacing_counts_from_the_last_request(make_client: Make, fake_time: FakeTime) -> None:
    client = make_client(FakeInternet(httpx.Response(200)))
    client.get(RSS)
    fake_time.now += 2.0
    client.get(RSS)
    assert fake_time.sleeps == [pytest.approx(1.0)]


def test_retries_to_arxiv_are_spaced_too(make_client: Make, fake_time: FakeTime) -> None:
    client = make_client(FakeInternet(httpx.Response(503), httpx.Response(200)))
    client.get(RSS)
    backoff, spacing = fake_time.sleeps
    assert 0.5 <= backoff <= 1.0 and backoff + spacing == pytest.approx(3.0)


def test_spacing_holds_across_threads(tmp_path: Path) -> None:
    settings = Settings(var_dir=tmp_path, secret_key="x", arxiv_min_interval=0.05)
    starts: list[float] = []

    def record(request: httpx.Request) -> httpx.Response:
        starts.append(time.monotonic())
        return httpx.Response(200)

    with SourceClient(settings, transport=httpx.MockTransport(record)) as client:
        threads = [threading.Thread(target=client.get, args=(RSS,)) for _ in range(6)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()

    gaps = [b - a for a, b in zip(sorted(starts), sorted(starts)[1:], strict=False)]
    assert len(starts) == 6
    assert min(gaps) >= 0.049


def test_the_client_closes_with_its_context(settings: Settings) -> None:
    with SourceClient(
        settings, transport=httpx.MockTransport(FakeInternet(httpx.Response(200)))
    ) as c:
        c.get(HF)
    assert c._client.is_closed


# Limits: one deadline per request, one budget per source run, numbers read strictly ------------


@pytest.mark.parametrize("value", ["\u00b2", "\u0663", "\uff11\uff12", "-5", "1.5", "12 s"])
def test_retry_after_takes_ascii_digits_only(value: str) -> None:
    # "²".isdigit() is True but float("²") raises: such a header means nothing, not a crash.
    assert parse_retry_after(value) is None


def test_retry_after_of_absurd_length_is_just_long() -> None:
    assert parse_retry_after("9" * 5000) == 1e12  # int() refuses 4,300 digits; we do not care
    assert parse_retry_after("Fri, 31 Dec 99999 23:59:59 GMT") is None


def test_retry_after_is_capped_at_a_minute_by_default(
    make_client: Make, fake_time: FakeTime
) -> None:
    internet = FakeInternet(
        httpx.Response(429, headers={"Retry-After": "300"}), httpx.Response(200)
    )
    make_client(internet).get(HF)
    assert fake_time.sleeps == [60.0]


def test_a_wait_past_the_budget_is_not_made(make_client: Make, fake_time: FakeTime) -> None:
    internet = FakeInternet(httpx.Response(503, headers={"Retry-After": "40"}))
    client = make_client(internet)
    with client.budget(100.0), pytest.raises(SourceError) as caught:
        client.get(HF, source="hf_daily")
    # Two 40 s waits fit in 100 s; a third would end after it, so it is not made.
    assert fake_time.sleeps == [40.0, 40.0] and len(internet.requests) == 3
    assert "past the 100s budget of the source run" in caught.value.message
    assert fake_time.now - 1000.0 <= 100.0


def test_a_request_gets_no_more_than_the_budget_left(
    make_client: Make, fake_time: FakeTime
) -> None:
    seen: list[dict[str, float | None]] = []

    def record(request: httpx.Request) -> httpx.Response:
        seen.append(request.extensions["timeout"])
        fake_time.now += 15.0  # each answer takes 15 s of the budget
        return httpx.Response(503, headers={"Retry-After": "1"})

    client = make_client(record)  # type: ignore[arg-type]
    with client.budget(32.0), pytest.raises(SourceError, match="budget"):
        client.get(HF)
    # 20 s each (NEWSLETTER_HTTP_TIMEOUT) while the budget allows, then what is left of it.
    assert [t["read"] for t in seen] == [20.0, pytest.approx(16.0)]


def test_outside_a_budget_retries_are_as_many_as_configured(
    make_client: Make, fake_time: FakeTime
) -> None:
    internet = FakeInternet(httpx.Response(503, headers={"Retry-After": "60"}))
    with pytest.raises(HTTPStatusError):
        make_client(internet).get(HF)
    assert fake_time.sleeps == [60.0, 60.0, 60.0]


def test_a_body_declared_too_large_is_refused_before_reading(
    make_client: Make, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(source_http, "MAX_BODY_BYTES", 10)

    def never_read() -> Iterator[bytes]:
        raise AssertionError("the body was read")
        yield b""  # pragma: no cover

    reply = httpx.Response(200, headers={"Content-Length": "1073741824"}, content=never_read())
    with pytest.raises(SourceError, match=r"larger than 10 bytes \(1073741824 declared\)"):
        make_client(FakeInternet(reply)).get(HF)
