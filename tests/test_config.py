"""Settings parsing and the refusal of insecure production values."""

from __future__ import annotations

import logging
import stat
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from pydantic import ValidationError

from app.accounts.secret_key import SECRET_KEY_FILE_NAME, resolve_secret_key, secret_key_path
from app.config import DEVELOPMENT_SECRET_KEY, Settings

ROOT = Path(__file__).resolve().parent.parent


def _settings(**values: object) -> Settings:
    return Settings(_env_file=None, **values)  # type: ignore[arg-type]


def test_defaults_serve_sqlite_on_loopback() -> None:
    settings = _settings()
    assert settings.database_url == "sqlite+aiosqlite:///./gallery.db"
    assert (settings.host, settings.port) == ("127.0.0.1", 8000)
    assert settings.image_fetch_timeout == 5
    assert "image/png" in settings.image_allowed_types
    assert "image/svg+xml" not in settings.image_allowed_types


def test_lists_are_read_from_comma_separated_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IMAGE_ALLOWED_TYPES", "image/PNG, image/gif")
    monkeypatch.setenv("IMAGE_FETCH_ALLOWED_NETWORKS", "127.0.0.1/32,::1/128")
    settings = _settings()
    assert settings.image_allowed_types == ["image/png", "image/gif"]
    assert settings.image_fetch_allowed_networks == ["127.0.0.1/32", "::1/128"]


def test_invalid_network_is_refused() -> None:
    with pytest.raises(ValidationError):
        _settings(image_fetch_allowed_networks="not-a-network")


def test_blank_admin_settings_mean_unset() -> None:
    settings = _settings(admin_username="", admin_email=" ", admin_password="")
    assert settings.admin_username is None
    assert settings.admin_email is None
    assert settings.admin_password is None


def _example_secret_key() -> str:
    for line in (ROOT / ".env.example").read_text().splitlines():
        if line.startswith("SECRET_KEY="):
            return line.removeprefix("SECRET_KEY=")
    raise AssertionError(".env.example lists no SECRET_KEY")


@pytest.mark.parametrize("key", [DEVELOPMENT_SECRET_KEY, "short", "x" * 31, "", None])
def test_production_refuses_insecure_secret_key(key: str | None) -> None:
    with pytest.raises(ValidationError, match="SECRET_KEY"):
        _settings(environment="production", secret_key=key)


def test_production_refuses_the_env_example_secret_key() -> None:
    with pytest.raises(ValidationError, match="SECRET_KEY"):
        _settings(environment="production", secret_key=_example_secret_key())


def test_production_refuses_missing_secret_key_from_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("SECRET_KEY", raising=False)
    with pytest.raises(ValidationError, match="SECRET_KEY"):
        _settings(environment="production")


def test_development_key_is_generated_once_beside_the_database(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    settings = _settings(database_url=f"sqlite+aiosqlite:///{tmp_path / 'data' / 'g.db'}")
    assert settings.secret_key is None
    path = secret_key_path(settings)
    assert path == tmp_path / "data" / SECRET_KEY_FILE_NAME
    with caplog.at_level(logging.WARNING):
        first = resolve_secret_key(settings)
    assert "SECRET_KEY is not set" in caplog.text
    assert len(first.encode()) >= 32
    assert path.read_text() == first
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    caplog.clear()
    assert resolve_secret_key(settings) == first
    assert "SECRET_KEY is not set" not in caplog.text
    assert not list(path.parent.glob("*.tmp"))


def test_development_key_for_postgresql_lives_in_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    settings = _settings(database_url="postgresql+asyncpg://user@127.0.0.1:5432/gallery")
    assert secret_key_path(settings) == tmp_path / SECRET_KEY_FILE_NAME
    assert resolve_secret_key(settings) == (tmp_path / SECRET_KEY_FILE_NAME).read_text()


def test_workers_starting_together_agree_on_the_generated_key(tmp_path: Path) -> None:
    settings = _settings(database_url=f"sqlite+aiosqlite:///{tmp_path / 'g.db'}")
    barrier = threading.Barrier(8)

    def start_worker() -> str:
        barrier.wait()
        return resolve_secret_key(settings)

    with ThreadPoolExecutor(max_workers=8) as pool:
        keys = list(pool.map(lambda _: start_worker(), range(8)))
    assert len(set(keys)) == 1
    assert (tmp_path / SECRET_KEY_FILE_NAME).read_text() == keys[0]
    assert not list(tmp_path.glob("*.tmp"))


def test_configured_secret_key_is_used_as_is(tmp_path: Path) -> None:
    settings = _settings(
        database_url=f"sqlite+aiosqlite:///{tmp_path / 'g.db'}", secret_key="k" * 40
    )
    assert resolve_secret_key(settings) == "k" * 40
    assert not (tmp_path / SECRET_KEY_FILE_NAME).exists()


@pytest.mark.parametrize("limit", ["ten per minute", "10/fortnight", ""])
def test_unreadable_rate_limit_is_refused_at_start(limit: str) -> None:
    with pytest.raises(ValidationError):
        _settings(rate_limit_login_per_account=limit)


def test_account_settings_defaults() -> None:
    settings = _settings()
    assert settings.access_token_expire_minutes == 15
    assert settings.refresh_token_expire_days == 14
    assert settings.reset_password_expire_minutes == 60
    assert settings.rate_limit_enabled is True
    assert settings.rate_limit_login_per_account == "10/minute"
    assert settings.rate_limit_login_per_address == "30/minute"
    assert settings.rate_limit_register_per_address == "10/hour"
    assert settings.rate_limit_reset_per_address == "5/hour"
    assert settings.redis_url is None
    assert settings.smtp_host is None


def test_production_accepts_a_long_random_key() -> None:
    settings = _settings(environment="production", secret_key="k" * 48)
    assert settings.environment == "production"


def test_url_check_settings_have_safe_defaults() -> None:
    settings = _settings()
    assert settings.image_fetch_allowed_networks == []
    assert settings.image_fetch_allowed_ports == []
    assert settings.image_fetch_max_redirects == 3
    assert settings.image_fetch_concurrency == 128
    assert settings.image_sniff is True


@pytest.mark.parametrize(
    ("cores", "workers", "threads", "expected"),
    [(2, 1, 0, 2), (2, 2, 0, 1), (2, 4, 0, 1), (8, 2, 0, 4), (2, 2, 3, 3)],
)
def test_password_hashing_threads_share_the_cores_among_workers(
    monkeypatch: pytest.MonkeyPatch, cores: int, workers: int, threads: int, expected: int
) -> None:
    monkeypatch.setattr("app.config.usable_cores", lambda: cores)
    settings = _settings(web_concurrency=workers, password_hash_threads=threads)
    assert settings.password_hash_concurrency == expected


def test_example_env_file_holds_the_defaults() -> None:
    example = Path(__file__).resolve().parent.parent / ".env.example"
    from_example = Settings(_env_file=example)  # type: ignore[call-arg]
    assert from_example.model_dump() == _settings().model_dump()


def test_allowed_ports_are_read_from_comma_separated_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("IMAGE_FETCH_ALLOWED_PORTS", "443, 8443")
    assert _settings().image_fetch_allowed_ports == [443, 8443]


@pytest.mark.parametrize("ports", ["0", "65536", "https"])
def test_invalid_port_is_refused(ports: str) -> None:
    with pytest.raises(ValidationError):
        _settings(image_fetch_allowed_ports=ports)


def test_recheck_settings_accept_one_second_values() -> None:
    settings = _settings(
        recheck_interval_seconds="1",
        recheck_retry_seconds="1",
        recheck_lease_seconds="2",
        image_fetch_timeout="1",
    )
    assert (settings.recheck_interval_seconds, settings.recheck_retry_seconds) == (1, 1)


@pytest.mark.parametrize(
    "values",
    [
        {"recheck_interval_seconds": "0"},
        {"recheck_retry_seconds": "0"},
        {"recheck_broken_after": "0"},
        {"recheck_concurrency": "0"},
        {"recheck_per_host_concurrency": "0"},
        # A lease that can run out while its check still runs would let two workers check
        # the same image at once.
        {"recheck_lease_seconds": "5", "image_fetch_timeout": "5"},
    ],
)
def test_recheck_settings_refuse_values_that_cannot_work(values: dict[str, str]) -> None:
    with pytest.raises(ValidationError):
        _settings(**values)
