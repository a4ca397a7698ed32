"""Property tests: whatever is sent to the forms and endpoints, the app never answers 5xx."""

from __future__ import annotations

import itertools
from urllib.parse import quote

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from newsletter.web.ratelimit import MemoryRateLimiter

FUZZ = settings(
    max_examples=120,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

# Text that looks like what people and robots type, plus the odd control character.
field_text = st.one_of(
    st.text(max_size=60),
    st.sampled_from(
        [
            "",
            " ",
            "7",
            "-1",
            "99999999999999999999",
            "UTC",
            "Europe/Paris",
            "../../etc/passwd",
            "ada@example.org",
            "a@b",
            '"label noise", -medical, author:Hinton, cat:cs.LG, transformer^2',
            "cat:",
            "author:",
            "^2",
            "-",
            '"',
            "x^1000",
            "\x00",
            "<script>alert(1)</script>",
            "é" * 300,
        ]
    ),
)
# Each field is sometimes valid, so that the deeper paths (storing, mailing) run too.
VALID = {
    "email": st.emails(),
    "keywords": st.sampled_from(["diffusion", '"label noise", -medical', "cat:cs.LG"]),
    "send_hour": st.integers(0, 23).map(str),
    "timezone": st.sampled_from(["UTC", "Asia/Tokyo"]),
    "digest_size": st.integers(1, 50).map(str),
    "show_trending": st.just("on"),
    "other": st.just("x"),
}
forms = st.fixed_dictionaries(
    {}, optional={name: st.one_of(valid, field_text) for name, valid in VALID.items()}
)
tokens_text = st.one_of(
    st.text(max_size=80),
    st.just("WzEsMV0.aaaa.bbbb"),
)


@pytest.fixture
def fuzz(w):
    # The real limiter, its clock an hour further at every hit: nothing is ever limited.
    hours = itertools.count()
    w.web.limiter = MemoryRateLimiter(clock=lambda: next(hours) * 3600.0)
    w.subscriber_id = w.add()
    w.token_value = w.csrf_token(w.client.get("/").text)
    return w


def _check(response) -> None:
    assert response.status_code < 500, response.text[:500]


@FUZZ
@given(form=forms)
def test_sign_up_form(fuzz, form):
    _check(fuzz.client.post("/", data={"csrf_token": fuzz.token_value, **form}))


@FUZZ
@given(form=forms, action=st.sampled_from(["", "/pause", "/resume"]))
def test_manage_forms(fuzz, form, action):
    path = fuzz.path("manage", fuzz.subscriber_id) + action
    _check(fuzz.client.post(path, data={"csrf_token": fuzz.token_value, **form}))


@FUZZ
@given(
    keywords=st.one_of(field_text, st.text(max_size=400)),
    path=st.sampled_from(["/preview", "/preview/results"]),
)
def test_preview(fuzz, keywords, path):
    _check(fuzz.client.get(path, params={"keywords": keywords}))


@FUZZ
@given(
    purpose=st.sampled_from(["confirm", "manage", "unsubscribe"]),
    token=tokens_text,
    method=st.sampled_from(["GET", "POST"]),
    suffix=st.sampled_from(["", "/pause", "/resubscribe", "/x"]),
)
def test_links(fuzz, purpose, token, method, suffix):
    data = {"csrf_token": fuzz.token_value} if method == "POST" else None
    # Percent-encoded, so the app sees any text at all as the token.
    path = f"/{purpose}/{quote(token, safe='')}{suffix}"
    _check(fuzz.client.request(method, path, data=data))


@FUZZ
@given(
    body=st.binary(max_size=2000),
    content_type=st.sampled_from(
        [
            "application/x-www-form-urlencoded",
            "multipart/form-data",
            "multipart/form-data; boundary=xyz",
            "text/plain",
            "application/json",
        ]
    ),
    path=st.sampled_from(["/", "/unsubscribe/WzEsMV0.aaaa.bbbb", "/confirm/x", "/manage/x"]),
)
def test_raw_bodies(fuzz, body, content_type, path):
    response = fuzz.client.post(path, content=body, headers={"content-type": content_type})
    _check(response)
