"""Smoke flow through the nginx port (host python, stdlib only).

python3 smoke.py BASE_URL full     register, login, add an image, list, docs, metrics
python3 smoke.py BASE_URL reads    the reads again, tagging each request's id with a prefix
python3 smoke.py BASE_URL wait     until the API answers reads again (after a db restart)
python3 smoke.py BASE_URL doomed   add /doomed.png (ok); the test then deletes it
python3 smoke.py BASE_URL broken   until the workers have marked /doomed.png broken
"""

from __future__ import annotations

import gzip
import json
import re
import sys
import time
import urllib.error
import urllib.request
import uuid
from typing import Any

BASE = sys.argv[1].rstrip("/")
MODE = sys.argv[2]
STATE = "/tmp/gallery-compose-smoke.json"  # noqa: S108 (the test's own scratch file)
PASSWORD = "smoke-test-passphrase-123"


def call(
    method: str, path: str, body: Any = None, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], bytes]:
    data = None
    all_headers = dict(headers or {})
    if body is not None:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        all_headers.setdefault("Content-Type", "application/json")
    request = urllib.request.Request(  # noqa: S310 (the test passes an http:// base)
        BASE + path, data=data, method=method, headers=all_headers
    )
    try:
        with urllib.request.urlopen(request, timeout=15) as response:  # noqa: S310
            return (
                response.status,
                {k.lower(): v for k, v in response.headers.items()},
                response.read(),
            )
    except urllib.error.HTTPError as error:
        return error.code, {k.lower(): v for k, v in error.headers.items()}, error.read()


def expect(condition: bool, what: str) -> None:
    if not condition:
        print(f"FAIL - {what}", flush=True)
        sys.exit(1)
    print(f"ok   - {what}", flush=True)


def full() -> None:
    name = f"smoke{uuid.uuid4().hex[:8]}"
    status, _, body = call(
        "POST",
        "/accounts/register",
        {
            "username": name,
            "email": f"{name}@example.com",
            "password": PASSWORD,
            "password_confirm": PASSWORD,
        },
    )
    expect(status == 201, f"register {name} -> {status}")
    user_id = json.loads(body)["id"]
    status, _, body = call("POST", "/accounts/login", {"login": name, "password": PASSWORD})
    expect(status == 200, f"login -> {status}")
    auth = {"Authorization": f"Bearer {json.loads(body)['access_token']}"}
    status, _, body = call("GET", "/users/me", headers=auth)
    expect(status == 200 and json.loads(body)["username"] == name, "GET /users/me")
    status, _, body = call(
        "POST",
        f"/users/{user_id}/images",
        {"image_url": "http://images:8000/pixel.png", "title": "Pixel"},
        auth,
    )
    expect(status == 201, f"add image from the image container -> {status} {body[:200]!r}")
    image = json.loads(body)
    expect(image["content_type"] == "image/png", "image checked as image/png")
    status, _, body = call("GET", f"/users/{user_id}/images")
    items = json.loads(body)["items"]
    expect(status == 200 and [i["id"] for i in items] == [image["id"]], "list the gallery")
    status, headers, body = call("GET", "/docs")
    expect(status == 200 and "text/html" in headers["content-type"], "/docs loads")
    expect(b"cdn" not in body.lower() and b"/docs/assets/" in body, "/docs uses only local assets")
    status, headers, body = call(
        "GET", "/docs/assets/swagger-ui-bundle.js", headers={"Accept-Encoding": "gzip"}
    )
    expect(status == 200 and headers.get("content-encoding") == "gzip", "nginx gzips the docs JS")
    expect(b"SwaggerUIBundle" in gzip.decompress(body), "docs JS is Swagger UI")
    status, _, body = call("GET", "/metrics")
    expect(status == 200 and b"gallery_http_requests_total" in body, "/metrics answers")
    status, headers, _ = call("GET", "/health/ready", headers={"X-Request-ID": "smoke-rid-1"})
    expect(
        status == 200 and headers.get("x-request-id") == "smoke-rid-1",
        "X-Request-ID passes through",
    )
    _, headers, _ = call("GET", "/users")
    expect(
        re.fullmatch(r"[0-9a-f]{32}", headers.get("x-request-id", "")) is not None,
        "nginx makes an id",
    )
    expect(headers.get("x-content-type-options") == "nosniff", "security headers through the proxy")
    status, _, _ = call("POST", "/accounts/register", b"x" * (2 * 1024 * 1024))
    expect(status == 413, f"nginx refuses a 2 MiB body -> {status}")
    with open(STATE, "w") as state:
        json.dump({"user_id": user_id, "username": name, "image_id": image["id"]}, state)


def reads(prefix: str, count: int = 30) -> None:
    with open(STATE) as state:
        saved = json.load(state)
    for n in range(count):
        rid = {"X-Request-ID": f"{prefix}-{n}"}
        status, _, body = call("GET", f"/users/{saved['user_id']}/images", headers=rid)
        if status != 200 or json.loads(body)["items"][0]["id"] != saved["image_id"]:
            expect(False, f"read {n}: {status} {body[:200]!r}")
        status, _, _ = call("GET", f"/users/{saved['user_id']}", headers=rid)
        if status != 200:
            expect(False, f"read user {n}: {status}")
    expect(True, f"{count} x2 reads ({prefix})")


def wait(deadline_seconds: float = 90) -> None:
    with open(STATE) as state:
        saved = json.load(state)
    start = time.monotonic()
    while time.monotonic() - start < deadline_seconds:
        try:
            status, _, _ = call("GET", f"/users/{saved['user_id']}/images")
        except (urllib.error.URLError, OSError):
            status = 0
        if status == 200:
            expect(True, f"API answers reads again after {time.monotonic() - start:.1f}s")
            return
        time.sleep(1)
    expect(False, f"API did not recover within {deadline_seconds}s")


def down(deadline_seconds: float = 30) -> None:
    start = time.monotonic()
    while time.monotonic() - start < deadline_seconds:
        status, _, body = call("GET", "/health/ready")
        if status == 503:
            code = json.loads(body).get("code")
            expect(code == "database_unavailable", f"readiness 503 {code} while the db is down")
            status, _, _ = call("GET", "/health/live")
            expect(status == 200, "liveness still 200")
            return
        time.sleep(0.5)
    expect(False, "readiness never reported the stopped database")


def doomed() -> None:
    with open(STATE) as state:
        saved = json.load(state)
    status, _, body = call(
        "POST", "/accounts/login", {"login": saved["username"], "password": PASSWORD}
    )
    expect(status == 200, f"login again -> {status}")
    auth = {"Authorization": f"Bearer {json.loads(body)['access_token']}"}
    status, _, body = call(
        "POST",
        f"/users/{saved['user_id']}/images",
        {"image_url": "http://images:8000/doomed.png"},
        auth,
    )
    image = json.loads(body)
    expect(status == 201 and image["status"] == "ok", f"add the doomed image -> {status}")
    saved["doomed_id"] = image["id"]
    with open(STATE, "w") as state:
        json.dump(saved, state)


def broken(deadline_seconds: float = 90) -> None:
    with open(STATE) as state:
        saved = json.load(state)
    start = time.monotonic()
    seen: list[str] = []
    while time.monotonic() - start < deadline_seconds:
        status, _, body = call("GET", f"/users/{saved['user_id']}/images?status=broken")
        items = json.loads(body)["items"] if status == 200 else []
        _, _, one = call("GET", f"/users/{saved['user_id']}/images/{saved['doomed_id']}")
        seen.append(json.loads(one).get("status", "?"))
        if [item["id"] for item in items] == [saved["doomed_id"]]:
            image = items[0]
            expect(
                image["last_error"] == "image_url_bad_status" and image["failure_count"] >= 2,
                f"broken after {time.monotonic() - start:.1f}s ({image['failure_count']} failures,"
                f" {image['last_error']}); statuses seen: {' -> '.join(dict.fromkeys(seen))}",
            )
            status, _, body = call("GET", f"/users/{saved['user_id']}/images?status=ok")
            ok_ids = [item["id"] for item in json.loads(body)["items"]]
            expect(ok_ids == [saved["image_id"]], "the image still served stays ok")
            return
        time.sleep(1)
    expect(False, f"not marked broken within {deadline_seconds}s; statuses seen: {seen[-5:]}")


if MODE == "full":
    full()
elif MODE == "reads":
    reads(sys.argv[3])
elif MODE == "wait":
    wait()
elif MODE == "down":
    down()
elif MODE == "doomed":
    doomed()
elif MODE == "broken":
    broken()
else:
    sys.exit(f"unknown mode {MODE}")
