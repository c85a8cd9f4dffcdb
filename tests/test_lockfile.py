"""The container installs from requirements.lock: it must pin every runtime dependency."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _name(requirement: str) -> str:
    match = re.match(r"[A-Za-z0-9][A-Za-z0-9._-]*", requirement)
    assert match, requirement
    return re.sub(r"[-_.]+", "-", match.group(0)).lower()


def test_lock_pins_every_runtime_dependency_with_hashes() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    wanted = {_name(requirement) for requirement in project["project"]["dependencies"]}
    lock = (ROOT / "requirements.lock").read_text()
    pinned = {
        re.sub(r"[-_.]+", "-", match.group(1)).lower()
        for match in re.finditer(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==\S+ \\$", lock, re.MULTILINE)
    }
    missing = sorted(wanted - pinned)
    assert not missing, f"requirements.lock lacks {missing}: run `make lock`"
    assert lock.count("--hash=sha256:") >= len(pinned)
