"""The texts of the mails the account journeys send, in one place."""

from __future__ import annotations

from app.accounts.link_tokens import link_url
from app.config import Settings
from app.mail import Mail
from app.users.models import User


def registration(settings: Settings, user: User, token: str) -> Mail:
    """The mail that confirms a new account."""
    return Mail(
        to=user.email,
        subject="Confirm your Gallery API account",
        body=(
            f"Hello {user.username},\n\nconfirm your account by opening this link:\n"
            f"{link_url(settings, 'verify-registration', token)}\n\n"
            f"Token: {token}\n\nIf you did not sign up, ignore this mail.\n"
        ),
    )


def reset_password(settings: Settings, user: User, token: str) -> Mail:
    """The mail with a single-use password reset link."""
    return Mail(
        to=user.email,
        subject="Reset your Gallery API password",
        body=(
            f"Hello {user.username},\n\nset a new password by opening this link "
            f"(valid {settings.reset_password_expire_minutes} minutes, once):\n"
            f"{link_url(settings, 'reset-password', token)}\n\n"
            f"Token: {token}\n\nIf you did not ask for this, ignore this mail.\n"
        ),
    )


def verify_email(settings: Settings, user: User, new_email: str, token: str) -> Mail:
    """The mail, sent to the new address, that confirms an email change."""
    return Mail(
        to=new_email,
        subject="Confirm your new Gallery API email address",
        body=(
            f"Hello {user.username},\n\nconfirm this address for your account "
            f"by opening this link:\n{link_url(settings, 'verify-email', token)}\n\n"
            f"Token: {token}\n\nIf you did not ask for this, ignore this mail.\n"
        ),
    )
