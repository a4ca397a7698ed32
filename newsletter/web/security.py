"""Security headers on every response, and a limit on the size of request bodies."""

from __future__ import annotations

from collections.abc import Mapping

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

MAX_BODY_BYTES = 64 * 1024

CONTENT_SECURITY_POLICY = "; ".join(
    (
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data:",
        "connect-src 'self'",
        "form-action 'self'",
        "frame-ancestors 'none'",
        "base-uri 'none'",
    )
)

_TOO_LARGE_PAGE = (
    b"<!doctype html><meta charset=utf-8><title>Request too large</title>"
    b"<h1>Request too large</h1><p>What you sent is larger than this site accepts.</p>"
)


def security_headers(https: bool) -> list[tuple[bytes, bytes]]:
    """The headers every response carries; HSTS only when the site is served over https."""
    headers = [
        (b"content-security-policy", CONTENT_SECURITY_POLICY.encode()),
        # Links carry signed tokens in their path: never let them leak to another site.
        # Not "no-referrer": with it browsers send `Origin: null` on our own forms too, and
        # the Origin check (csrf.check_origin) could not tell them from a forged post.
        (b"referrer-policy", b"same-origin"),
        (b"x-content-type-options", b"nosniff"),
        (b"x-frame-options", b"DENY"),
        (b"cross-origin-opener-policy", b"same-origin"),
        (b"permissions-policy", b"camera=(), microphone=(), geolocation=()"),
    ]
    if https:
        headers.append((b"strict-transport-security", b"max-age=31536000"))
    return headers


class SecurityHeadersMiddleware:
    """Adds the security headers, and `Cache-Control: no-store` to every page but /static."""

    def __init__(self, app: ASGIApp, *, https: bool = False, static_prefix: str = "/static/"):
        self.app = app
        self.headers = security_headers(https)
        self.static_prefix = static_prefix

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        static = scope["path"].startswith(self.static_prefix)

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                present = {name.lower() for name, _ in headers}
                headers += [h for h in self.headers if h[0] not in present]
                if not static and b"cache-control" not in present:
                    # Pages hold CSRF tokens and a subscriber's own settings.
                    headers.append((b"cache-control", b"no-store"))
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_headers)


class BodySizeLimitMiddleware:
    """Answers 413 to a body over `max_bytes`: at once by Content-Length, else while reading.

    `path_limits` gives some exact paths another limit (a provider's webhook batch), and
    `upload_limits` the multipart forms of exact paths or, ending in "/", of the paths under
    them (the sign-up and settings pages, which take an export): any other body there keeps
    the usual limit.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        max_bytes: int = MAX_BODY_BYTES,
        path_limits: Mapping[str, int] | None = None,
        upload_limits: Mapping[str, int] | None = None,
    ) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.path_limits = dict(path_limits or {})
        self.upload_limits = dict(upload_limits or {})

    def limit(self, path: str, content_type: bytes) -> int:
        """The largest body accepted on `path` with this Content-Type."""
        if path in self.path_limits:
            return self.path_limits[path]
        if content_type.lower().startswith(b"multipart/form-data"):
            for where, limit in self.upload_limits.items():
                if path == where or (where.endswith("/") and path.startswith(where)):
                    return limit
        return self.max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        max_bytes = self.limit(scope["path"], headers.get(b"content-type", b""))
        length = headers.get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > max_bytes):
            await _too_large(send)
            return
        received = 0

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > max_bytes:
                    # Raised inside the app, so its error pages answer (a chunked body).
                    raise HTTPException(413, "Request too large")
            return message

        await self.app(scope, limited_receive, send)


async def _too_large(send: Send) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": 413,
            "headers": [
                (b"content-type", b"text/html; charset=utf-8"),
                (b"content-length", str(len(_TOO_LARGE_PAGE)).encode()),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": _TOO_LARGE_PAGE})
