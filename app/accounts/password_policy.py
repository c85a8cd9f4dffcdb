"""The rules a new password must meet, the same wherever a password is set."""

from __future__ import annotations

from typing import Any

from app.errors import InvalidInput

MIN_LENGTH = 8
MAX_LENGTH = 128


class WeakPassword(InvalidInput):
    code = "weak_password"
    detail = "The password is too weak."

    def __init__(self, problems: list[str]) -> None:
        super().__init__("The password is too weak: " + "; ".join(problems) + ".")
        self.errors: list[dict[str, Any]] = [
            {"loc": ["body", "password"], "msg": problem, "type": "weak_password"}
            for problem in problems
        ]


def password_problems(password: str, *, username: str, email: str) -> list[str]:
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
    if lowered in {username.casefold(), email.casefold(), email_local}:
        problems.append("it must not be the same as the username or email")
    return problems


def ensure_strong_password(password: str, *, username: str, email: str) -> None:
    """Raise `WeakPassword` listing every broken rule."""
    problems = password_problems(password, username=username, email=email)
    if problems:
        raise WeakPassword(problems)
