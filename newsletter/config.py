"""Settings: the only reader of the environment. One frozen object, passed in explicitly."""

from __future__ import annotations

import os
import re
import secrets
from ipaddress import IPv4Network, IPv6Network, ip_network
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

ENV_PREFIX = "NEWSLETTER_"
KNOWN_SOURCES = ("hf_daily", "arxiv")
DEFAULT_CATEGORIES = ("cs.LG", "cs.CL", "cs.CV", "cs.AI", "stat.ML")
# Secret keys that example files and guides print: anyone could forge this service's links
# with one of them, so they are refused (compared lower-case, without spaces, quotes, - and _).
# deploy/env.example's value is one of them (tests/unit/test_deploy.py checks it).
EXAMPLE_SECRET_KEYS = frozenset(
    {
        "changeme",
        "changethis",
        "changeit",
        "replaceme",
        "secret",
        "secretkey",
        "yoursecretkey",
        "mysecretkey",
        "supersecret",
        "password",
        "xxx",
        "todo",
    }
)


class ConfigError(Exception):
    """A setting has a bad value; the message names the environment variable."""


def _split_list(value: Any) -> Any:
    if isinstance(value, str):
        return [item.strip() for item in value.split(",") if item.strip()]
    return value


CommaList = Annotated[tuple[str, ...], NoDecode]

# scheme://user:password@ - up to the last "@" before any query, so that a password with an
# unescaped "@" or "/" in it is hidden whole.
_USERINFO_PASSWORD = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*://[^:/@?#]*):[^?#]*@")
_QUERY_PASSWORD = re.compile(r"([?&](?:password|passwd|pass|pwd)=)[^&#]*", re.IGNORECASE)


def redact_url(url: str) -> str:
    """`url` with its password replaced by *** (in the user part or a password= parameter)."""
    return _QUERY_PASSWORD.sub(r"\1***", _USERINFO_PASSWORD.sub(r"\1:***@", url))


def load_ec_public_key(value: str) -> Any:
    """SendGrid's verification key (base64 DER, as its settings page shows it, or PEM)."""
    import base64

    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.hazmat.primitives.serialization import (
        load_der_public_key,
        load_pem_public_key,
    )

    try:
        text = value.strip()
        if text.startswith("-----BEGIN"):
            key = load_pem_public_key(text.encode())
        else:
            key = load_der_public_key(base64.b64decode(text, validate=True))
    except ValueError:
        raise ValueError("is not a base64 or PEM public key") from None
    if not isinstance(key, ec.EllipticCurvePublicKey):
        raise ValueError("is not an elliptic-curve (ECDSA) public key")
    return key


def _port_ok(value: str) -> bool:
    try:
        urlsplit(value).port  # noqa: B018 - raises on a bad port
    except ValueError:
        return False
    return True


class Settings(BaseSettings):
    """Every knob of the service. Unset optional URLs select the embedded defaults."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, env_file=".env", extra="ignore", frozen=True
    )

    var_dir: Path = Path("var")
    database_url: str = ""  # empty: sqlite file in var_dir
    redis_url: str | None = None  # unset: embedded mode, no broker
    smtp_url: str | None = None  # unset: write .eml files to var_dir/outbox
    base_url: str = "http://127.0.0.1:8000"
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=1, le=65535)
    from_address: str = "Paper Digest <digest@localhost>"
    contact_email: str = "admin@localhost"
    secret_key: str | None = None
    send_hour: int = Field(7, ge=0, le=23)
    timezone: str = "UTC"
    sources: CommaList = KNOWN_SOURCES
    arxiv_categories: CommaList = DEFAULT_CATEGORIES
    arxiv_include_cross: bool = False
    hf_base_url: str = "https://huggingface.co"
    arxiv_rss_url: str = "https://rss.arxiv.org/rss"
    arxiv_api_url: str = "https://export.arxiv.org/api/query"
    arxiv_min_interval: float = Field(3.0, ge=0)
    # Liked papers: ids per arXiv API request, and the largest export a reader may upload.
    likes_fetch_batch: int = Field(50, ge=1, le=50)
    likes_upload_bytes: int = Field(1024 * 1024, ge=4096, le=16 * 1024 * 1024)
    http_timeout: float = Field(20.0, gt=0)
    http_retries: int = Field(4, ge=0, le=10)
    source_budget: float = Field(300.0, gt=0)  # seconds one source run may take, retries included
    collect_hours: CommaList = ("1", "5", "13", "21")  # UTC hours to collect; plus hourly catch-up
    paper_window_days: float = Field(2.0, gt=0, le=30)  # how recent a paper must be to be planned
    digest_size: int = Field(10, ge=1, le=50)
    min_score: float = Field(5.0, ge=0, le=100)
    popularity_weight: float = Field(0.05, ge=0, le=1)
    send_empty_note: bool = False
    trending_size: int = Field(5, ge=0, le=20)
    send_rate: float = Field(0.0, ge=0)  # messages per second per transport, 0 = unlimited
    max_attempts: int = Field(5, ge=1, le=50)
    retry_base_seconds: float = Field(60.0, gt=0)
    lease_seconds: int = Field(600, ge=10)
    bounce_threshold: int = Field(3, ge=1)
    batch_size: int = Field(200, ge=1, le=5000)
    # How long one distributed deliver_batch task sends before it hands the rest of its batch
    # back and queues it again (a worker is not held by one slow relay for ever).
    batch_seconds: float = Field(300.0, gt=0)
    # Subscribers one distributed plan_shard task ranks and writes: the plan is split into id
    # ranges of this many due subscribers, which any worker takes from the `plan` queue.
    plan_shard_size: int = Field(5000, ge=1, le=100_000)
    dkim_selector: str | None = None
    dkim_domain: str | None = None
    dkim_private_key_file: Path | None = None
    list_id: str = "Paper Digest <digest.localhost>"
    unsubscribe_mailto: str | None = None
    confirm_hours: int = Field(48, ge=1)
    signup_rate_per_hour: int = Field(10, ge=1)
    # Reverse proxies whose X-Forwarded-For is believed (IPs or CIDRs); none by default, so a
    # client cannot pick its own address for the rate limits.
    trusted_proxies: CommaList = ()
    confirm_mails_per_hour: int = Field(500, ge=1)  # past it, confirmations wait for the next hour
    confirm_mail_senders: int = Field(4, ge=1, le=64)  # mails sent at once (embedded mode)
    # Prometheus /metrics on a port of its own, served by the web process; unset: no metrics.
    # Its own port, never the public one: the proxy routes only NEWSLETTER_PORT.
    metrics_port: int | None = Field(None, ge=1, le=65535)
    metrics_host: str = "127.0.0.1"  # 0.0.0.0 in a container, so Prometheus can reach it
    # VERP: with bounces@example.org every digest's envelope sender is
    # bounces+<signed delivery id>@example.org, so a late bounce names its delivery.
    bounce_address: str | None = None
    # Where bounces and feedback-loop reports arrive: imap(s)://user:pw@host/INBOX or
    # pop3(s)://user:pw@host; unset, nothing is fetched.
    bounce_mailbox_url: str | None = None
    soft_bounce_threshold: int = Field(3, ge=1)  # soft bounces within the window that suppress
    soft_bounce_days: float = Field(7.0, gt=0)
    # Provider webhooks (/webhooks/<provider>): each answers 404 until its secret is set.
    webhook_generic_secret: str | None = None  # Authorization: Bearer <this>
    webhook_postmark_user: str | None = None  # HTTP basic auth Postmark is configured with
    webhook_postmark_password: str | None = None
    webhook_sendgrid_public_key: str | None = None  # the signed Event Webhook's verification key
    webhook_mailgun_signing_key: str | None = None  # Mailgun's HTTP webhook signing key
    webhook_ses_topics: CommaList = ()  # SNS topic ARNs whose messages are believed
    webhook_max_age: int = Field(300, ge=10, le=86400)  # seconds a signed timestamp stays good
    # Hosts (host or host:port) SNS certificates and SubscribeURLs may come from besides
    # sns.<region>.amazonaws.com: for tests only, never in production.
    sns_cert_hosts: CommaList = ()
    sns_ca_file: Path | None = None  # a CA bundle for those fetches (tests); unset: the system's

    @field_validator(
        "sources",
        "arxiv_categories",
        "collect_hours",
        "trusted_proxies",
        "webhook_ses_topics",
        "sns_cert_hosts",
        mode="before",
    )
    @classmethod
    def _lists(cls, value: Any) -> Any:
        return _split_list(value)

    @field_validator("webhook_sendgrid_public_key")
    @classmethod
    def _sendgrid_key(cls, value: str | None) -> str | None:
        if value:
            load_ec_public_key(value)
        return value or None

    @field_validator("sources")
    @classmethod
    def _known_sources(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        unknown = [s for s in value if s not in KNOWN_SOURCES]
        if unknown:
            raise ValueError(
                f"unknown source {unknown[0]!r}; choose from {', '.join(KNOWN_SOURCES)}"
            )
        return value

    @field_validator("collect_hours")
    @classmethod
    def _hours(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for hour in value:
            if not hour.isdigit() or not 0 <= int(hour) <= 23:
                raise ValueError(f"{hour!r} is not an hour from 0 to 23")
        return value

    @field_validator("trusted_proxies")
    @classmethod
    def _networks(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for entry in value:
            try:
                ip_network(entry, strict=False)
            except ValueError:
                raise ValueError(f"{entry!r} is not an IP address or CIDR network") from None
        return value

    @field_validator("metrics_port", mode="before")
    @classmethod
    def _optional_port(cls, value: Any) -> Any:
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("timezone")
    @classmethod
    def _zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(
                f"unknown time zone {value!r} (use an IANA name like Europe/Paris)"
            ) from None
        return value

    @field_validator("base_url", "hf_base_url", "arxiv_rss_url", "arxiv_api_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError(f"{value!r} is not an http(s) URL")
        return value.rstrip("/")

    @field_validator("smtp_url")
    @classmethod
    def _smtp_url(cls, value: str | None) -> str | None:
        if not value:
            return None
        parts = urlsplit(value)
        shown = redact_url(value)  # the message is printed and logged: never the password
        if parts.scheme not in ("smtp", "smtps") or not parts.hostname:
            raise ValueError(f"{shown!r} is not smtp://host:port or smtps://host:port")
        if not _port_ok(value):
            raise ValueError(f"{shown!r} has a bad port")
        return value

    @field_validator("bounce_address")
    @classmethod
    def _bounce_address(cls, value: str | None) -> str | None:
        if not value:
            return None
        local, at, domain = value.strip().rpartition("@")
        if not at or not local or not domain or "+" in local or any(c in value for c in "<> "):
            raise ValueError(f"{value!r} is not a plain address like bounces@example.org")
        return value.strip()

    @field_validator("bounce_mailbox_url")
    @classmethod
    def _bounce_mailbox_url(cls, value: str | None) -> str | None:
        if not value:
            return None
        parts = urlsplit(value)
        shown = redact_url(value)
        if parts.scheme not in ("imap", "imaps", "pop3", "pop3s") or not parts.hostname:
            raise ValueError(f"{shown!r} is not imap(s)://user:pw@host/INBOX or pop3(s)://...")
        if not _port_ok(value):
            raise ValueError(f"{shown!r} has a bad port")
        return value

    @field_validator("redis_url")
    @classmethod
    def _redis_url(cls, value: str | None) -> str | None:
        if not value:
            return None
        if urlsplit(value).scheme not in ("redis", "rediss", "unix"):
            raise ValueError(f"{redact_url(value)!r} is not a redis:// URL")
        if not _port_ok(value):
            raise ValueError(f"{redact_url(value)!r} has a bad port")
        return value

    @field_validator("database_url")
    @classmethod
    def _database_url(cls, value: str) -> str:
        if not value:
            return value
        shown = redact_url(value)
        if not value.split(":", 1)[0].startswith(("sqlite", "postgresql")):
            raise ValueError(f"{shown!r}: use sqlite:///path or postgresql+psycopg://...")
        from sqlalchemy.engine import make_url
        from sqlalchemy.exc import ArgumentError

        try:
            make_url(value).port  # noqa: B018 - the port is parsed when read
        except (ArgumentError, ValueError):
            raise ValueError(f"{shown!r} is not a database URL (check the port)") from None
        return value

    @field_validator("secret_key")
    @classmethod
    def _not_an_example(cls, value: str | None) -> str | None:
        if value is not None and is_example_secret(value):
            raise ValueError(
                f"{value!r} is an example value that anyone could use to forge links; generate "
                'one with: python3 -c "import secrets; print(secrets.token_urlsafe(48))"'
            )
        return value

    @model_validator(mode="after")
    def _metrics_port_free(self) -> Settings:
        if self.metrics_port is not None and self.metrics_port == self.port:
            raise ValueError(
                f"NEWSLETTER_METRICS_PORT: {self.metrics_port} is NEWSLETTER_PORT; "
                "the metrics need a port of their own"
            )
        return self

    @model_validator(mode="before")
    @classmethod
    def _base_url_from_address(cls, data: Any) -> Any:
        # Unset, the public URL is where the app listens: with --port 8001 (or
        # NEWSLETTER_PORT=8001) the links in mail and the pages then point at 8001, not 8000.
        if not isinstance(data, dict) or data.get("base_url"):
            return data
        host, port = str(data.get("host") or "127.0.0.1"), str(data.get("port") or 8000)
        if not port.isdigit():
            return data  # the port's own error is the one to report
        host = "127.0.0.1" if host in ("0.0.0.0", "::", "") else host
        host = f"[{host}]" if ":" in host else host
        return {**data, "base_url": f"http://{host}:{port}"}

    @model_validator(mode="after")
    def _dkim_complete(self) -> Settings:
        dkim = (self.dkim_selector, self.dkim_domain, self.dkim_private_key_file)
        if any(dkim) and not all(dkim):
            raise ValueError(
                "DKIM needs NEWSLETTER_DKIM_SELECTOR, NEWSLETTER_DKIM_DOMAIN and "
                "NEWSLETTER_DKIM_PRIVATE_KEY_FILE together"
            )
        return self

    # Derived values -----------------------------------------------------------------------
    @property
    def distributed(self) -> bool:
        return self.redis_url is not None

    @property
    def outbox_dir(self) -> Path:
        return self.var_dir / "outbox"

    @property
    def db_url(self) -> str:
        return self.database_url or f"sqlite:///{(self.var_dir / 'newsletter.db').as_posix()}"

    @property
    def trusted_networks(self) -> tuple[IPv4Network | IPv6Network, ...]:
        return tuple(ip_network(entry, strict=False) for entry in self.trusted_proxies)

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    @property
    def user_agent(self) -> str:
        from newsletter import __version__

        return f"paper-newsletter/{__version__} (+{self.base_url}; mailto:{self.contact_email})"


def is_example_secret(value: str) -> bool:
    """True for a secret key copied from an example (`change-me`, `<your-secret-key>`, ...)."""
    folded = re.sub(r"[\s\"'<>_\-]", "", value).lower()
    return folded in EXAMPLE_SECRET_KEYS


def _secret_key(var_dir: Path) -> str:
    """Read the generated secret key, creating it (mode 0600) on first run."""
    path = var_dir / "secret_key"
    if path.exists():
        return path.read_text().strip()
    from newsletter.files import private_dir

    private_dir(var_dir)
    key = secrets.token_urlsafe(48)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(key + "\n")
    return key


def load_settings(**overrides: Any) -> Settings:
    """Settings from the environment (and .env); a bad value raises ConfigError naming it."""
    try:
        settings = Settings(**overrides)
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            name = str(error["loc"][0]) if error["loc"] else ""
            variable = f"{ENV_PREFIX}{name.upper()}" if name else "settings"
            message = str(error["msg"]).removeprefix("Value error, ")
            problems.append(f"{variable}: {message}")
        raise ConfigError("; ".join(problems)) from None
    if not settings.secret_key and settings.distributed:
        # Every host must sign and check links with the same key: a key generated per host
        # would make one host's unsubscribe links invalid on the next.
        raise ConfigError(
            f"{ENV_PREFIX}SECRET_KEY: required in distributed mode "
            f"({ENV_PREFIX}REDIS_URL is set), the same on every host"
        )
    if not settings.secret_key:
        settings = settings.model_copy(update={"secret_key": _secret_key(settings.var_dir)})
    return settings
