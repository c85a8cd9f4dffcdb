"""The rules a new password must meet, the same wherever a password is set."""

from __future__ import annotations

import asyncio
import functools
import gzip
from difflib import SequenceMatcher
from importlib import resources
from typing import Any

from anyio import to_thread

from app.errors import InvalidInput

MIN_LENGTH = 8
MAX_LENGTH = 128
# As in Django's UserAttributeSimilarityValidator: at or above this ratio a password is a
# variation of the username or email ("alice2024" for alice).
MAX_SIMILARITY = 0.7
# Shorter identity parts are not searched inside the password ("al" is in too many words).
MIN_CONTAINED_LENGTH = 4

# 19,640 common passwords (lower-cased, deduplicated): the list Django ships as
# django/contrib/auth/common-passwords.txt.gz (Django 5.2.19 from PyPI), compiled by Royce
# Williams, BSD-3-Clause: see app/accounts/data/README.md and LICENSE.django.
COMMON_PASSWORDS_FILE = "common-passwords.txt.gz"


class WeakPassword(InvalidInput):
    code = "weak_password"
    detail = "The password is too weak."

    def __init__(self, problems: list[str]) -> None:
        super().__init__("The password is too weak: " + "; ".join(problems) + ".")
        self.errors: list[dict[str, Any]] = [
            {"loc": ["body", "password"], "msg": problem, "type": "weak_password"}
            for problem in problems
        ]


@functools.cache
def common_passwords() -> frozenset[str]:
    """The shipped list, read on first use (not at import) and kept."""
    data = resources.files("app.accounts").joinpath("data", COMMON_PASSWORDS_FILE).read_bytes()
    return frozenset(gzip.decompress(data).decode("utf-8").split())


async def load_common_passwords() -> frozenset[str]:
    """The list, read in a worker thread the first time so the event loop never waits."""
    if common_passwords.cache_info().currsize:
        return common_passwords()
    return await to_thread.run_sync(common_passwords)


def _too_similar(password: str, attribute: str) -> bool:
    if not attribute:
        return False
    if len(attribute) >= MIN_CONTAINED_LENGTH and attribute in password:
        return True
    if len(password) >= MIN_CONTAINED_LENGTH and password in attribute:
        return True
    return SequenceMatcher(a=password, b=attribute).ratio() >= MAX_SIMILARITY


def password_problems(
    password: str, *, username: str, email: str, common: frozenset[str] = frozenset()
) -> list[str]:
    """Every rule the password breaks, so the caller can fix them all at once."""
    problems = []
    if len(password) < MIN_LENGTH:
        problems.append(f"it must have at least {MIN_LENGTH} characters")
    if len(password) > MAX_LENGTH:
        problems.append(f"it must have at most {MAX_LENGTH} characters")
    if password.isdigit():
        problems.append("it must not be only digits")
    lowered = password.casefold()
    email_local = email.split("@", 1)[0].casefold()
    attributes = (username.casefold(), email.casefold(), email_local)
    if len(password) <= MAX_LENGTH and any(_too_similar(lowered, item) for item in attributes):
        problems.append("it must not be the same as the username or email, nor close to them")
    if lowered in common or password.strip().lower() in common:
        problems.append("it is too common")
    return problems


async def ensure_strong_password(password: str, *, username: str, email: str) -> None:
    """Raise `WeakPassword` listing every broken rule."""
    common = await load_common_passwords()
    # The similarity check (difflib) can take tens of milliseconds on long crafted inputs:
    # off the event loop, like the hashing that follows it.
    problems = await asyncio.to_thread(
        functools.partial(
            password_problems, password, username=username, email=email, common=common
        )
    )
    if problems:
        raise WeakPassword(problems)
