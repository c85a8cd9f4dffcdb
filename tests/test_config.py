"""Settings parsing and the refusal of insecure production values."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from app.config import DEVELOPMENT_SECRET_KEY, Settings


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


@pytest.mark.parametrize("key", [DEVELOPMENT_SECRET_KEY, "short"])
def test_production_refuses_insecure_secret_key(key: str) -> None:
    with pytest.raises(ValidationError, match="SECRET_KEY"):
        _settings(environment="production", secret_key=key)


def test_production_accepts_a_long_random_key() -> None:
    settings = _settings(environment="production", secret_key="k" * 48)
    assert settings.environment == "production"


def test_url_check_settings_have_safe_defaults() -> None:
    settings = _settings()
    assert settings.image_fetch_allowed_networks == []
    assert settings.image_fetch_allowed_ports == []
    assert settings.image_fetch_max_redirects == 3
    assert settings.image_fetch_concurrency == 32
    assert settings.image_sniff is True


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
