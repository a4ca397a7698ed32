"""Settings: defaults, validation naming the variable, and the generated secret key."""

import stat

import pytest

from newsletter.config import ConfigError, load_settings


def test_defaults_select_embedded_mode(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    settings = load_settings(var_dir=tmp_path / "var")
    assert not settings.distributed
    assert settings.smtp_url is None
    assert settings.db_url == f"sqlite:///{tmp_path}/var/newsletter.db"
    assert settings.outbox_dir == tmp_path / "var" / "outbox"
    assert settings.sources == ("hf_daily", "arxiv")
    assert "mailto:" in settings.user_agent


def test_secret_key_generated_once_with_private_permissions(tmp_path):
    first = load_settings(var_dir=tmp_path)
    second = load_settings(var_dir=tmp_path)
    key_file = tmp_path / "secret_key"
    assert first.secret_key == second.secret_key
    assert len(first.secret_key or "") >= 40
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600


def test_explicit_secret_key_writes_no_file(tmp_path):
    settings = load_settings(var_dir=tmp_path, secret_key="s3cret")
    assert settings.secret_key == "s3cret"
    assert not (tmp_path / "secret_key").exists()


@pytest.mark.parametrize(
    ("variable", "value", "expected"),
    [
        ("NEWSLETTER_SEND_HOUR", "24", "NEWSLETTER_SEND_HOUR"),
        ("NEWSLETTER_TIMEZONE", "Mars/Olympus", "unknown time zone"),
        ("NEWSLETTER_SMTP_URL", "http://mail.example.org", "NEWSLETTER_SMTP_URL"),
        ("NEWSLETTER_SOURCES", "hf_daily,nature", "unknown source 'nature'"),
        ("NEWSLETTER_BASE_URL", "example.org", "NEWSLETTER_BASE_URL"),
        ("NEWSLETTER_DATABASE_URL", "mysql://x", "NEWSLETTER_DATABASE_URL"),
        ("NEWSLETTER_REDIS_URL", "http://x", "NEWSLETTER_REDIS_URL"),
        ("NEWSLETTER_PORT", "eighty", "NEWSLETTER_PORT"),
    ],
)
def test_bad_value_names_the_variable_and_writes_nothing(
    tmp_path, monkeypatch, variable, value, expected
):
    monkeypatch.setenv(variable, value)
    with pytest.raises(ConfigError, match=expected) as info:
        load_settings(var_dir=tmp_path / "var")
    assert variable in str(info.value)
    assert not (tmp_path / "var").exists()


def test_lists_from_comma_separated_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("NEWSLETTER_ARXIV_CATEGORIES", "cs.LG, math.OC")
    monkeypatch.setenv("NEWSLETTER_SMTP_URL", "smtps://user:pw@mail.example.org:465")
    settings = load_settings(var_dir=tmp_path)
    assert settings.arxiv_categories == ("cs.LG", "math.OC")
    assert settings.smtp_url == "smtps://user:pw@mail.example.org:465"


def test_dotenv_file_is_read(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / ".env").write_text("NEWSLETTER_SEND_HOUR=9\n")
    assert load_settings(var_dir=tmp_path).send_hour == 9


def test_distributed_mode_requires_a_shared_secret_key(tmp_path, monkeypatch):
    monkeypatch.setenv("NEWSLETTER_REDIS_URL", "redis://127.0.0.1:6379/0")
    with pytest.raises(ConfigError, match="NEWSLETTER_SECRET_KEY"):
        load_settings(var_dir=tmp_path)
    assert not (tmp_path / "secret_key").exists()
    assert load_settings(var_dir=tmp_path, secret_key="shared").distributed


PASSWORD = "pa55-w0rd-SECRET"


@pytest.mark.parametrize(
    ("variable", "value", "shown"),
    [
        (
            "NEWSLETTER_SMTP_URL",
            f"smtp://mailer:{PASSWORD}@mail.example.org:25x",
            "smtp://mailer:***@mail.example.org:25x",
        ),
        (
            "NEWSLETTER_SMTP_URL",
            f"http://mailer:{PASSWORD}@mail.example.org",
            "http://mailer:***@mail.example.org",
        ),
        (
            "NEWSLETTER_DATABASE_URL",
            f"mysql://app:{PASSWORD}@db.example.org/news",
            "mysql://app:***@db.example.org/news",
        ),
        (
            "NEWSLETTER_DATABASE_URL",
            f"postgresql+psycopg://app:{PASSWORD}@db.example.org:54x2/news",
            "postgresql+psycopg://app:***@db.example.org:54x2/news",
        ),
        (
            "NEWSLETTER_REDIS_URL",
            f"http://:{PASSWORD}@redis.example.org:6379/0",
            "http://:***@redis.example.org:6379/0",
        ),
        (
            "NEWSLETTER_REDIS_URL",
            f"redis://default:{PASSWORD}@redis.example.org:63z9/0",
            "redis://default:***@redis.example.org:63z9/0",
        ),
        # A password with an unescaped "@" or "/" in it is hidden whole, not in part.
        (
            "NEWSLETTER_SMTP_URL",
            f"smtp://mailer:{PASSWORD}/x@y@mail.example.org:x",
            "smtp://mailer:***@mail.example.org:x",
        ),
    ],
)
def test_a_bad_url_is_shown_with_its_password_hidden(tmp_path, monkeypatch, variable, value, shown):
    monkeypatch.setenv(variable, value)
    with pytest.raises(ConfigError) as info:
        load_settings(var_dir=tmp_path / "var")
    message = str(info.value)
    assert variable in message and shown in message
    assert PASSWORD not in message and "x@y" not in message
    assert not (tmp_path / "var").exists()


def test_redact_url_leaves_urls_without_a_password_alone():
    from newsletter.config import redact_url

    assert redact_url("smtp://mail.example.org:25") == "smtp://mail.example.org:25"
    assert redact_url("redis://user@host/0") == "redis://user@host/0"
    assert redact_url("redis://host/0?password=abc&db=1") == "redis://host/0?password=***&db=1"
    assert redact_url("sqlite:///var/a@b.db") == "sqlite:///var/a@b.db"


def test_trusted_proxies_are_addresses_or_networks(tmp_path):
    settings = load_settings(var_dir=tmp_path, secret_key="k", trusted_proxies="10.0.0.0/8, ::1")
    assert [str(n) for n in settings.trusted_networks] == ["10.0.0.0/8", "::1/128"]
    assert load_settings(var_dir=tmp_path, secret_key="k").trusted_networks == ()
    with pytest.raises(ConfigError, match="NEWSLETTER_TRUSTED_PROXIES: 'proxy' is not an IP"):
        load_settings(var_dir=tmp_path, secret_key="k", trusted_proxies="10.0.0.1,proxy")
    with pytest.raises(ConfigError, match="NEWSLETTER_CONFIRM_MAILS_PER_HOUR"):
        load_settings(var_dir=tmp_path, secret_key="k", confirm_mails_per_hour=0)
