"""Schema fuzzing with schemathesis against the app served by uvicorn on loopback.

Every operation in /openapi.json, as a signed-in user and as an admin, positive and
negative data, with the conformance checks below: zero failures. Image checks can only
reach loopback (LoopbackOnlyTransport); the suite's image host serves real images there.
Marked `fuzz` so CI can run it as its own step (`make fuzz`).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.generation import GenerationMode
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    ignored_auth,
    negative_data_rejection,
    response_schema_conformance,
    status_code_conformance,
)

from app.main import create_app
from tests.conftest import empty_tables, make_settings
from tests.reliability.support import LoopbackOnlyTransport, live_server
from tests.support.helpers import PASSWORD
from tests.support.image_host import ImageHost, LoopbackResolver

pytestmark = pytest.mark.fuzz

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    negative_data_rejection,
    ignored_auth,
]
MAX_EXAMPLES = int(os.environ.get("FUZZ_MAX_EXAMPLES", "40"))
ADMIN = "fuzzadmin"


@pytest.fixture(scope="module")
def fuzz_server(database_url: str, image_host: ImageHost) -> Iterator[dict[str, Any]]:
    app = create_app(
        make_settings(
            database_url,
            admin_username=ADMIN,
            admin_email="fuzzadmin@example.com",
            admin_password=PASSWORD,
        ),
        image_fetch_transport=LoopbackOnlyTransport(),
        image_resolver=LoopbackResolver(),
    )
    with live_server(app) as base_url, httpx.Client(base_url=base_url) as http:
        response = http.post(
            "/accounts/register",
            json={
                "username": "fuzzuser",
                "email": "fuzzuser@example.com",
                "password": PASSWORD,
                "password_confirm": PASSWORD,
            },
        )
        assert response.status_code == 201, response.text
        user_id = response.json()["id"]
        tokens = {}
        for role, login in (("user", "fuzzuser"), ("admin", ADMIN)):
            response = http.post("/accounts/login", json={"login": login, "password": PASSWORD})
            assert response.status_code == 200, response.text
            tokens[role] = response.json()["access_token"]
        # Something to find: a real image in the user's gallery, on the loopback host.
        response = http.post(
            f"/users/{user_id}/images",
            json={"image_url": image_host.url("/cat.png")},
            headers={"Authorization": f"Bearer {tokens['user']}"},
        )
        assert response.status_code == 201, response.text
        yield {"base_url": base_url, "tokens": tokens}
    import asyncio

    asyncio.run(empty_tables(database_url))


def _load_schema() -> Any:
    # The schema is the app's own, read without starting it; requests go to the live server.
    app = create_app(make_settings("sqlite+aiosqlite://"))
    loaded = schemathesis.openapi.from_dict(app.openapi())
    loaded.config.generation.update(
        modes=[GenerationMode.POSITIVE, GenerationMode.NEGATIVE],
        max_examples=MAX_EXAMPLES,
        deterministic=True,
    )
    return loaded


schema = _load_schema()
FUZZ_SETTINGS = settings(
    max_examples=MAX_EXAMPLES,
    deadline=None,
    derandomize=True,
    suppress_health_check=list(HealthCheck),
)


def _call(case: Any, server: dict[str, Any], role: str) -> None:
    case.call_and_validate(
        base_url=server["base_url"],
        headers={"Authorization": f"Bearer {server['tokens'][role]}"},
        checks=CHECKS,
        timeout=30,
    )


@schema.parametrize()
@FUZZ_SETTINGS
def test_api_conforms_to_its_schema_as_user(case: Any, fuzz_server: dict[str, Any]) -> None:
    _call(case, fuzz_server, "user")


@schema.parametrize()
@FUZZ_SETTINGS
def test_api_conforms_to_its_schema_as_admin(case: Any, fuzz_server: dict[str, Any]) -> None:
    _call(case, fuzz_server, "admin")
