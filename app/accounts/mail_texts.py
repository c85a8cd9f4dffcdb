"""The texts of the mails the account journeys send, in one place."""

from __future__ import annotations

from app.accounts.link_tokens import link_url
from app.config import Settings
from app.mail import Mail
from app.users.models import User


def _link_mail(
    to: str, subject: str, user: User, *, request: str, link: str, token: str, unless: str
) -> Mail:
    """A mail asking `user` to open `link` (`request` introduces it); the token is repeated
    for clients that cannot open links, and `unless` says who may ignore the mail."""
    return Mail(
        to=to,
        subject=subject,
        body=(
            f"Hello {user.username},\n\n{request}:\n{link}\n\n"
            f"Token: {token}\n\nIf you did not {unless}, ignore this mail.\n"
        ),
    )


def registration(settings: Settings, user: User, token: str) -> Mail:
    """The mail that confirms a new account."""
    return _link_mail(
        user.email,
        "Confirm your Gallery API account",
        user,
        request="confirm your account by opening this link",
        link=link_url(settings, "verify-registration", token),
        token=token,
        unless="sign up",
    )


def reset_password(settings: Settings, user: User, token: str) -> Mail:
    """The mail with a single-use password reset link."""
    minutes = settings.reset_password_expire_minutes
    return _link_mail(
        user.email,
        "Reset your Gallery API password",
        user,
        request=f"set a new password by opening this link (valid {minutes} minutes, once)",
        link=link_url(settings, "reset-password", token),
        token=token,
        unless="ask for this",
    )


def verify_email(settings: Settings, user: User, new_email: str, token: str) -> Mail:
    """The mail, sent to the new address, that confirms an email change."""
    return _link_mail(
        new_email,
        "Confirm your new Gallery API email address",
        user,
        request="confirm this address for your account by opening this link",
        link=link_url(settings, "verify-email", token),
        token=token,
        unless="ask for this",
    )
