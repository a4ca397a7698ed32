"""Page rendering: the Jinja2 environment of templates/web/ and the response helpers."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from functools import cache
from typing import Any
from urllib.parse import urlsplit
from zoneinfo import available_timezones

import jinja2
from markupsafe import Markup
from starlette.requests import Request
from starlette.responses import HTMLResponse

from newsletter.config import Settings
from newsletter.render import site_name
from newsletter.resources import STATIC_DIR, WEB_TEMPLATES
from newsletter.web import csrf


@cache
def timezone_names() -> tuple[str, ...]:
    """IANA zones people pick from: Region/City names, plus UTC."""
    zones = {
        zone
        for zone in available_timezones()
        if "/" in zone and not zone.startswith(("Etc/", "SystemV/"))
    }
    return ("UTC", *sorted(zones))


@cache
def _static_version(name: str) -> str:
    # A content hash in the URL: browsers may cache /static for long, and still see changes.
    return hashlib.sha256((STATIC_DIR / name).read_bytes()).hexdigest()[:10]


class Pages:
    """Renders templates/web/ pages with autoescaping; every page shares a few globals."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.prefix = urlsplit(settings.base_url).path.rstrip("/")
        self.env = jinja2.Environment(
            loader=jinja2.FileSystemLoader(WEB_TEMPLATES),
            autoescape=True,
            undefined=jinja2.StrictUndefined,
            trim_blocks=True,
            lstrip_blocks=True,
        )
        self.env.globals.update(
            site_name=site_name(settings),
            href=self.href,
            static=self.static,
            hours=range(24),
            timezones=timezone_names(),
            confirm_hours=settings.confirm_hours,
        )

    def href(self, path: str) -> str:
        """A site path, under the path prefix of NEWSLETTER_BASE_URL if it has one."""
        return f"{self.prefix}{path}"

    def static(self, name: str) -> str:
        return self.href(f"/static/{name}?v={_static_version(name)}")

    def render_text(self, request: Request, name: str, context: Mapping[str, Any]) -> str:
        def csrf_field() -> Markup:
            token = csrf.form_token(request, self.settings)
            return Markup('<input type="hidden" name="{}" value="{}">').format(csrf.FIELD, token)

        return self.env.get_template(name).render({**context, "csrf_field": csrf_field})

    def render(
        self,
        request: Request,
        name: str,
        context: Mapping[str, Any] | None = None,
        *,
        status: int = 200,
        headers: Mapping[str, str] | None = None,
    ) -> HTMLResponse:
        """An HTML response of a template; sets the CSRF cookie if the page made a form token."""
        response = HTMLResponse(
            self.render_text(request, name, context or {}), status_code=status, headers=headers
        )
        csrf.set_cookie(request, response, self.settings)
        return response
