"""Log formats and redaction, the logging config, and the `gallery` command."""

from __future__ import annotations

import json
import logging
import logging.config
from pathlib import Path

import httpx
import pytest
from asgi_lifespan import LifespanManager
from click.testing import CliRunner

from app.cli import main
from app.config import Settings
from app.main import create_app
from app.ops.logs import (
    JsonFormatter,
    RequestIdFilter,
    TextFormatter,
    logging_config,
    redact,
    request_id_var,
)
from tests.conftest import TEST_SECRET, make_settings, migrate, new_database
from tests.support.helpers import PASSWORD, login
from tests.support.log_capture import find_leaks


def _record(message: str, *args: object, **extra: object) -> logging.LogRecord:
    record = logging.LogRecord("app.test", logging.INFO, __file__, 1, message, args, None)
    for key, value in extra.items():
        setattr(record, key, value)
    RequestIdFilter().filter(record)
    return record


def test_json_lines_are_one_object_with_time_level_message_request_id_and_extras() -> None:
    token = request_id_var.set("rid-7")
    try:
        line = JsonFormatter().format(_record("hello %s", "world", route="/users", status=200))
    finally:
        request_id_var.reset(token)
    assert "\n" not in line
    entry = json.loads(line)
    assert entry["message"] == "hello world"
    assert entry["level"] == "INFO"
    assert entry["logger"] == "app.test"
    assert entry["request_id"] == "rid-7"
    assert (entry["route"], entry["status"]) == ("/users", 200)
    assert entry["time"].endswith("+00:00")


def test_json_line_of_an_exception_stays_one_line() -> None:
    try:
        raise ValueError("bad\nthing")
    except ValueError:
        record = logging.LogRecord("app", logging.ERROR, __file__, 1, "failed", (), None)
        import sys

        record.exc_info = sys.exc_info()
    line = JsonFormatter().format(record)
    assert "\n" not in line
    assert "ValueError" in json.loads(line)["exception"]


def test_text_lines_are_readable_with_the_request_id() -> None:
    line = TextFormatter().format(_record("GET /users 200", status=200))
    assert " INFO " in line
    assert "[-] GET /users 200 status=200" in line


@pytest.mark.parametrize(
    "message",
    [
        "Authorization: Bearer abcdefghijklmnop.qrstuvwxyz",
        '{"authorization": "Basic dXNlcjpwYXNzd29yZA=="}',
        'body {"login": "alice", "password": "a-long-enough-passphrase"}',
        "connecting to postgresql+asyncpg://gallery:s3cr3t-pw@db:5432/gallery",
        "token eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.c2lnbmF0dXJlLXZhbHVl issued",
        "secret_key=test-secret-key-that-is-long-enough",
    ],
)
def test_secrets_are_masked_in_every_format(message: str) -> None:
    for formatter in (JsonFormatter(), TextFormatter()):
        line = formatter.format(_record(message))
        assert not find_leaks([line], [PASSWORD, "s3cr3t-pw", "dXNlcjpwYXNzd29yZA=="]), line
        assert "REDACTED" in line
    assert redact("nothing secret here") == "nothing secret here"


def test_the_leak_check_itself_finds_leaks() -> None:
    assert find_leaks(["Authorization: Bearer abcdefghijk"], [])
    assert find_leaks(["x eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.c2lnbmF0dXJl"], [])
    assert find_leaks([f"password was {PASSWORD}"], [PASSWORD])
    assert not find_leaks(["GET /users 200"], [PASSWORD])


def test_logging_config_uses_the_chosen_format_and_silences_uvicorn_access() -> None:
    json_config = logging_config(Settings(_env_file=None, log_format="json", log_level="debug"))  # type: ignore[call-arg]
    assert json_config["handlers"]["default"]["formatter"] == "json"
    assert json_config["root"]["level"] == "DEBUG"
    assert json_config["loggers"]["uvicorn.access"]["propagate"] is False
    text_config = logging_config(Settings(_env_file=None))  # type: ignore[call-arg]
    assert text_config["handlers"]["default"]["formatter"] == "text"
    # The config is valid for dictConfig (uvicorn applies it in each worker).
    logging.config.dictConfig({**json_config, "root": {"level": "WARNING", "handlers": []}})


def test_list_settings_read_comma_separated_values() -> None:
    settings = Settings(
        _env_file=None,  # type: ignore[call-arg]
        cors_origins="https://a.example, https://b.example",
        allowed_hosts="api.example.com",
        log_format="JSON",
    )
    assert settings.cors_origins == ["https://a.example", "https://b.example"]
    assert settings.allowed_hosts == ["api.example.com"]
    assert settings.log_format == "json"


def test_openapi_command_prints_the_spec(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SECRET_KEY", TEST_SECRET)
    result = CliRunner().invoke(main, ["openapi"])
    assert result.exit_code == 0, result.output
    spec = json.loads(result.output)
    assert spec["info"]["title"] == "Gallery API"
    assert "/users/me" in spec["paths"]


def test_create_admin_refuses_a_password_flag() -> None:
    result = CliRunner().invoke(
        main, ["create-admin", "--username", "boss", "--email", "b@example.com", "--password", "x"]
    )
    assert result.exit_code != 0
    assert "No such option" in result.output


async def test_create_admin_reads_the_password_from_stdin_and_the_admin_can_sign_in(
    backend: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with new_database(backend, tmp_path) as url:
        await migrate(url, "head")
        monkeypatch.setenv("DATABASE_URL", url)
        monkeypatch.setenv("SECRET_KEY", TEST_SECRET)
        monkeypatch.setenv("ENVIRONMENT", "test")
        runner = CliRunner()
        args = ["create-admin", "--username", "boss", "--email", "boss@example.com"]
        # click runs asyncio.run() itself: run it off this test's event loop.
        import asyncio

        result = await asyncio.to_thread(runner.invoke, main, args, input=PASSWORD + "\n")
        assert result.exit_code == 0, result.output
        assert "created admin 'boss'" in result.output
        assert PASSWORD not in result.output
        again = await asyncio.to_thread(runner.invoke, main, args, input=PASSWORD + "\n")
        assert again.exit_code == 1
        assert "username_taken" in again.output
        weak = await asyncio.to_thread(
            runner.invoke,
            main,
            ["create-admin", "--username", "boss2", "--email", "boss2@example.com"],
            input="short\n",
        )
        assert weak.exit_code == 1
        assert "weak_password" in weak.output
        empty = await asyncio.to_thread(runner.invoke, main, args, input="")
        assert empty.exit_code == 1

        app = create_app(make_settings(url))
        transport = httpx.ASGITransport(app=app)
        async with (
            LifespanManager(app),
            httpx.AsyncClient(transport=transport, base_url="http://t") as client,
        ):
            token = await login(client, "boss", PASSWORD)
            me = await client.get("/users/me", headers={"Authorization": f"Bearer {token}"})
            assert me.json()["is_admin"] is True
            assert me.json()["email"] == "boss@example.com"
