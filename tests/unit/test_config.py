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


def test_trusted_proxies_are_addresses_or_networks(tmp_path):
    settings = load_settings(var_dir=tmp_path, secret_key="k", trusted_proxies="10.0.0.0/8, ::1")
    assert [str(n) for n in settings.trusted_networks] == ["10.0.0.0/8", "::1/128"]
    assert load_settings(var_dir=tmp_path, secret_key="k").trusted_networks == ()
    with pytest.raises(ConfigError, match="NEWSLETTER_TRUSTED_PROXIES: 'proxy' is not an IP"):
        load_settings(var_dir=tmp_path, secret_key="k", trusted_proxies="10.0.0.1,proxy")
    with pytest.raises(ConfigError, match="NEWSLETTER_CONFIRM_MAILS_PER_HOUR"):
        load_settings(var_dir=tmp_path, secret_key="k", confirm_mails_per_hour=0)
