"""How the app's routes are assembled (app.main.add_routes) and what each route solves."""

from __future__ import annotations

from typing import Any, get_args

import pytest
from fastapi import APIRouter, FastAPI, Request
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute
from starlette.routing import Route

import app.main as app_main
from app.accounts import dependencies as auth
from app.db import SessionDep, read_session
from app.main import add_routes, create_app
from app.reads import anonymous_read
from tests.conftest import make_settings

# create_app connects to nothing: its lifespan, not run here, makes the engine.
UNUSED_DATABASE = "sqlite+aiosqlite:///unused.db"
SESSION = get_args(SessionDep)[1].dependency
AUTHENTICATING = {
    auth._optional_user,
    auth._current_auth,
    auth._current_user,
    auth._admin_user,
    auth._optional_user_read,
    auth._current_user_read,
    auth._admin_read,
}
OPTIONAL = {"optional_user", "optional_user_read"}


def _route_table(app: FastAPI) -> list[tuple[str, tuple[str, ...], str]]:
    return [
        (route.path, tuple(sorted(route.methods or ())), route.name)
        for route in app.routes
        if isinstance(route, APIRoute | Route)
    ]


def _api_routes(app: FastAPI) -> list[APIRoute]:
    return [route for route in app.router.routes if isinstance(route, APIRoute)]


def test_routes_are_on_the_apps_own_router_as_include_router_would_have_them(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    settings = make_settings(UNUSED_DATABASE)
    flat = create_app(settings)
    # The same app assembled the way FastAPI documents it, for comparison.
    monkeypatch.setattr(app_main, "add_routes", lambda app, router: app.include_router(router))
    included = create_app(settings)
    assert flat.openapi() == included.openapi()
    # Every route is the app router's own: no included branch left to match twice.
    assert all(isinstance(route, APIRoute | Route) for route in flat.router.routes)
    table = _route_table(flat)
    assert len(table) == len({(path, methods) for path, methods, _ in table}) > 40
    # Each route has the options include_router's effective route has (FastAPI's "not set"
    # placeholders apart from set values: a set response class turns off its fast JSON path).
    effective = {
        (context.path, tuple(sorted(context.methods or ()))): context
        for branch in included.router.routes
        if hasattr(branch, "effective_route_contexts")
        for context in branch.effective_route_contexts()
    }
    for route in _api_routes(flat):
        context = effective.pop((route.path, tuple(sorted(route.methods or ()))))
        for name in (*app_main._ROUTE_OPTIONS, "stream_item_type", "status_code"):
            if name in ("form_limits",):  # kept by the include context, not the route
                continue
            assert _comparable(getattr(route, name)) == _comparable(getattr(context, name)), (
                route.path,
                name,
            )
        assert (route.response_field is None) == (context.response_field is None), route.path
    assert not effective


def _comparable(value: Any) -> Any:
    # FastAPI's "not set" placeholders: the kind and the value both count.
    if type(value).__name__ == "DefaultPlaceholder":
        return ("default", value.value)
    return value


def test_dependency_overrides_reach_the_added_routes() -> None:
    app = create_app(make_settings(UNUSED_DATABASE))
    route = next(r for r in _api_routes(app) if r.path == "/users/me")
    assert route.dependency_overrides_provider is app


def test_what_add_routes_could_not_carry_is_refused() -> None:
    app = create_app(make_settings(UNUSED_DATABASE))
    plain = APIRouter()
    plain.routes.append(Route("/plain", endpoint=lambda request: None))
    with pytest.raises(TypeError, match="only API routes"):
        add_routes(app, plain)
    started = APIRouter(on_startup=[lambda: None])
    with pytest.raises(TypeError, match="router-level state"):
        add_routes(app, started)


def _authenticating(dependant: Dependant) -> list[str]:
    found = []
    for sub in dependant.dependencies:
        if sub.call in AUTHENTICATING:
            found.append(getattr(sub.call, "__name__", "?"))
        found.extend(_authenticating(sub))
    return found


def test_every_route_authenticates_at_most_once() -> None:
    """The bearer dependencies share a function, not a cached dependency: a route that used
    two of them would read the token and query the session twice."""
    app = create_app(make_settings(UNUSED_DATABASE))
    twice = {}
    for route in _api_routes(app):
        found = _authenticating(route.dependant)
        if len(found) > 1:
            twice[route.path] = found
    assert twice == {}
    # And the check sees what it looks for: the admin listing authenticates once.
    admin = next(r for r in _api_routes(app) if r.path == "/images" and "GET" in r.methods)
    assert _authenticating(admin.dependant) == ["admin_read"]


def _bearer_dependants(dependant: Dependant) -> list[Dependant]:
    found = []
    for sub in dependant.dependencies:
        found += [sub] if sub.call in AUTHENTICATING else _bearer_dependants(sub)
    return found


def test_the_bearer_dependencies_are_the_documented_bearer_scheme() -> None:
    """Each bearer dependency is itself the security scheme, one dependency level with only
    the session beneath it (or nothing, for a `Read` that opens its own): /docs offers the
    bearer token on exactly the operations that read one, and "or nothing" too where signing
    in is optional."""
    app = create_app(make_settings(UNUSED_DATABASE))
    spec = app.openapi()
    documented = 0
    for route in _api_routes(app):
        found = _authenticating(route.dependant)
        for dependant in _bearer_dependants(route.dependant):
            beneath = [] if isinstance(dependant.call, auth.ReadAuthentication) else [SESSION]
            assert [sub.call for sub in dependant.dependencies] == beneath, route.path
        if not route.include_in_schema:
            continue
        expected = []
        if found:
            expected = [{"OAuth2PasswordBearer": []}]
            expected += [{}] if set(found) <= OPTIONAL else []
        for method in route.methods or ():
            operation = spec["paths"][route.path][method.lower()]
            assert operation.get("security", []) == expected, (method, route.path)
            documented += bool(expected)
    assert documented > 20
    assert spec["components"]["securitySchemes"] == {
        "OAuth2PasswordBearer": {
            "type": "oauth2",
            "flows": {"password": {"scopes": {}, "tokenUrl": "/accounts/login"}},
        }
    }


def _solves(dependant: Dependant) -> int:
    """How many dependencies FastAPI solves for this dependant on every request: each one,
    at every place it is used, cached value or not."""
    return sum(1 + _solves(sub) for sub in dependant.dependencies)


# The hot JSON reads: those bench/run.py measures, and one user's profile.
HOT_READS = (
    "/users",
    "/users/me",
    "/users/{user_id}",
    "/users/{user_id}/images",
    "/users/{user_id}/images/{image_id}",
    "/images",
)


def test_the_hot_reads_solve_their_context_as_one_dependency() -> None:
    """Each solve costs about 10 us, as much as a small handler (app/reads.py): a read takes
    its session, reader, validator, media URLs and cursor codec as one `Read`, and a listing
    its `limit` and `cursor` as its own query parameters. A gallery page solved six before."""
    app = create_app(make_settings(UNUSED_DATABASE))
    solves = {
        route.path: _solves(route.dependant)
        for route in _api_routes(app)
        if "GET" in (route.methods or ())
    }
    assert {path: solves[path] for path in HOT_READS} == dict.fromkeys(HOT_READS, 1)


def test_a_read_closes_its_session_before_the_answer_is_sent() -> None:
    """As `SessionDep`: "function" scope ends the dependency when the route returns, so a
    slow client never holds a pooled connection while its answer is sent."""
    app = create_app(make_settings(UNUSED_DATABASE))
    reads = [
        sub
        for route in _api_routes(app)
        for sub in route.dependant.dependencies
        if isinstance(sub.call, auth.ReadAuthentication) or sub.call is anonymous_read
    ]
    assert len(reads) >= 6
    assert {sub.scope for sub in reads} == {"function"}


@pytest.mark.parametrize("method", ["POST", "PUT", "PATCH", "DELETE"])
def test_a_read_session_is_refused_to_a_request_that_may_write(method: str) -> None:
    """Its autocommit would commit each write on its own, outside the request's one
    transaction."""
    request = Request({"type": "http", "method": method, "headers": [], "app": None})
    with pytest.raises(RuntimeError, match=f"a read session for a {method} request"):
        read_session(request)
