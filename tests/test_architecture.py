"""The structure docs/architecture.md describes, checked so it stays true: imports point one
way (core <- domains <- wiring), domains share only their declarations, and no function
under app/ grows past one screen."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

APP = Path(__file__).resolve().parent.parent / "app"

# Modules that assemble the app: they may import anything, and nothing imports them.
WIRING = {"app.main", "app.lifespan", "app.cli", "app.__main__", "app.models"}
# A domain package answers what a user may do with one thing.
DOMAINS = {"users", "accounts", "images", "gallery"}
# Modules a domain offers to the others: what things are, not what happens to them.
DECLARATIONS = {"models", "schemas", "errors", "dependencies"}
# Behaviour (services, routers, rules) may only be used downwards: accounts and images build
# on users, never the reverse, and accounts and images do not use each other's; the gallery
# page shows users' images, so it builds on both.
DOMAIN_LEVEL = {"users": 0, "accounts": 1, "images": 1, "gallery": 2}
# The typed lifespan state names the domain classes it holds, for the type checker only, and
# so does a read's context (app.reads), which hands one of them (the media URLs) to routes.
TYPE_ONLY_EXCEPTIONS = {"app.state", "app.reads"}
MAX_FUNCTION_LINES = 60


def _module_name(path: Path) -> str:
    parts = path.relative_to(APP.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _type_checking_lines(tree: ast.Module) -> set[int]:
    lines: set[int] = set()
    for node in tree.body:
        if isinstance(node, ast.If) and ast.unparse(node.test) in {
            "TYPE_CHECKING",
            "typing.TYPE_CHECKING",
        }:
            for child in node.body:
                lines.update(range(child.lineno, (child.end_lineno or child.lineno) + 1))
    return lines


def _parse(source: str) -> ast.Module:
    """ast.parse, once more when CPython 3.11 trips over its own AST recursion counter: it is
    shared by the interpreter's threads, so a parse while another thread (a test server's)
    builds an AST can fail with "AST constructor recursion depth mismatch" (CPython
    gh-106905, fixed in 3.12). The source is the same either way; only the counter was off."""
    for _ in range(4):
        try:
            return ast.parse(source)
        except SystemError as exc:
            if "recursion depth mismatch" not in str(exc):
                raise
            last = exc
    raise last


def _app_imports(source: str, module: str, *, skip_type_checking: bool) -> set[str]:
    """Every `app.*` module `source` imports, at any depth (lazy imports included)."""
    tree = _parse(source)
    skipped = _type_checking_lines(tree) if skip_type_checking else set()
    package = module if module.count(".") == 0 else module.rsplit(".", 1)[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if getattr(node, "lineno", None) in skipped:
            continue
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, *([base] if base else [])])
            # `from app.accounts import service` imports the module app.accounts.service.
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return {name for name in found if name == "app" or name.startswith("app.")}


def _real_modules() -> set[str]:
    return {_module_name(path) for path in APP.rglob("*.py")}


def import_graph() -> dict[str, set[str]]:
    """module -> the app modules it imports (names that are not modules are dropped)."""
    modules = _real_modules()
    graph = {}
    for path in APP.rglob("*.py"):
        module = _module_name(path)
        imports = _app_imports(
            path.read_text(), module, skip_type_checking=module in TYPE_ONLY_EXCEPTIONS
        )
        graph[module] = {name for name in imports if name in modules and name != module}
    return graph


def _domain(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in DOMAINS else None


def _layer(module: str) -> str:
    if module in WIRING:
        return "wiring"
    return "domain" if _domain(module) else "core"


def direction_violations(graph: dict[str, set[str]]) -> list[str]:
    """Every import that points against the direction, as `importer -> imported: rule`."""
    found = []
    for importer, imported in sorted(graph.items()):
        for target in sorted(imported):
            rule = _violated_rule(importer, target)
            if rule:
                found.append(f"{importer} -> {target}: {rule}")
    return found


def _violated_rule(importer: str, target: str) -> str | None:
    importer_layer, target_layer = _layer(importer), _layer(target)
    if target_layer == "wiring" and importer_layer != "wiring":
        return "only wiring modules import the wiring"
    if importer_layer == "core" and target_layer == "domain":
        return "core modules never import a domain"
    source_domain, target_domain = _domain(importer), _domain(target)
    if importer_layer != "domain" or target_domain in (None, source_domain):
        return None
    assert source_domain is not None
    assert target_domain is not None
    if target == f"app.{target_domain}" or target.split(".")[2] in DECLARATIONS:
        return None
    if DOMAIN_LEVEL[target_domain] < DOMAIN_LEVEL[source_domain]:
        return None
    return f"{source_domain} may use only the declarations of {target_domain}"


def import_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Import cycles between app modules (each reported once, from its first module)."""
    cycles: list[list[str]] = []
    state: dict[str, str] = {}
    stack: list[str] = []

    def visit(module: str) -> None:
        state[module] = "open"
        stack.append(module)
        for target in sorted(graph.get(module, ())):
            if state.get(target) == "open":
                cycles.append([*stack[stack.index(target) :], target])
            elif target not in state:
                visit(target)
        stack.pop()
        state[module] = "done"

    for module in sorted(graph):
        if module not in state:
            visit(module)
    return cycles


def test_imports_point_one_way() -> None:
    assert direction_violations(import_graph()) == []


def test_app_modules_import_no_cycle() -> None:
    assert import_cycles(import_graph()) == []


def test_users_and_accounts_do_not_import_each_others_services() -> None:
    graph = import_graph()
    users_imports = {t for m, ts in graph.items() if _domain(m) == "users" for t in ts}
    assert not {t for t in users_imports if _domain(t) == "accounts" and t.endswith(".service")}
    accounts_imports = {t for m, ts in graph.items() if _domain(m) == "accounts" for t in ts}
    assert "app.users.service" not in accounts_imports


@pytest.mark.parametrize(
    ("importer", "source", "rule"),
    [
        ("app.db", "from app.users.models import User", "core modules never import a domain"),
        ("app.ops.router", "import app.images.service", "core modules never import a domain"),
        ("app.users.service", "from app.main import create_app", "only wiring"),
        ("app.users.service", "from app.accounts import service", "declarations of accounts"),
        ("app.images.service", "from app.accounts.sessions import x", "declarations of accounts"),
        ("app.accounts.router", "from ..images.service import x", "declarations of images"),
    ],
)
def test_an_import_against_the_direction_is_caught(importer: str, source: str, rule: str) -> None:
    graph = import_graph()
    graph[importer] = graph[importer] | (
        _app_imports(source, importer, skip_type_checking=False) & _real_modules()
    )
    assert any(line.startswith(f"{importer} -> ") and rule in line for line in
               direction_violations(graph))  # fmt: skip


def test_a_type_only_import_is_allowed_only_in_the_state_module() -> None:
    source = (
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n"
        "    from app.users.models import User\n"
    )
    assert _app_imports(source, "app.state", skip_type_checking=True) == set()
    assert "app.users.models" in _app_imports(source, "app.db", skip_type_checking=False)


def test_a_cycle_is_found() -> None:
    assert import_cycles({"app.a": {"app.b"}, "app.b": {"app.a"}}) == [["app.a", "app.b", "app.a"]]


def _long_functions() -> list[str]:
    found = []
    for path in sorted(APP.rglob("*.py")):
        for node in ast.walk(_parse(path.read_text())):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                start = min([node.lineno, *(d.lineno for d in node.decorator_list)])
                length = (node.end_lineno or node.lineno) - start + 1
                if length > MAX_FUNCTION_LINES:
                    found.append(f"{_module_name(path)}.{node.name}: {length} lines")
    return found


def test_no_function_under_app_is_longer_than_one_screen() -> None:
    assert _long_functions() == []
