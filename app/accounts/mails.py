"""Account mails: rendered from Jinja2 templates (a text part and an HTML part, autoescaped)
during the request, and handed to the outbox, which sends them after the commit. The links of
the answer-first endpoints (reset link, resend verification) are rendered and sent by their
task after the answer instead (app/accounts/service.py)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any

from fastapi import Depends
from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape

from app.accounts.link_tokens import link_url
from app.config import Settings
from app.mail import Mail, Outbox, OutboxDep
from app.state import StateDep
from app.users.models import User

SERVICE_NAME = "Gallery API"


def create_mail_templates() -> Environment:
    """The templates in app/accounts/templates/mail: `.html` autoescaped, `.txt` as written.

    An undefined variable is an error, not an empty string, so a renamed field fails the
    tests instead of mailing a blank link."""
    return Environment(
        loader=PackageLoader("app.accounts", "templates/mail"),
        autoescape=select_autoescape(enabled_extensions=("html",), default=False),
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )


@dataclass(frozen=True)
class AccountMails:
    """Builds each account mail; `AccountOutbox.send` queues it until the commit."""

    templates: Environment
    settings: Settings

    def render(self, name: str, *, to: str, subject: str, **context: Any) -> Mail:
        """The mail made of templates `name.txt` and `name.html`."""
        values = {"service": SERVICE_NAME, "subject": subject, **context}
        text = self.templates.get_template(f"{name}.txt").render(values)
        html = self.templates.get_template(f"{name}.html").render(values)
        return Mail(to=to, subject=subject, body=text, html=html)

    def verify_registration(self, user: User, token: str) -> Mail:
        return self.render(
            "verify_registration",
            to=user.email,
            subject=f"Confirm your {SERVICE_NAME} account",
            username=user.username,
            link=link_url(self.settings, "verify-registration", token, login=user.username),
            token=token,
            hours=self.settings.verification_expire_hours,
        )

    def reset_password(self, user: User, token: str) -> Mail:
        return self.render(
            "reset_password",
            to=user.email,
            subject=f"Reset your {SERVICE_NAME} password",
            username=user.username,
            link=link_url(self.settings, "reset-password", token, login=user.username),
            token=token,
            minutes=self.settings.reset_password_expire_minutes,
        )

    def verify_email(self, user: User, new_email: str, token: str) -> Mail:
        return self.render(
            "verify_email",
            to=new_email,
            subject=f"Confirm your new {SERVICE_NAME} email address",
            username=user.username,
            new_email=new_email,
            link=link_url(self.settings, "verify-email", token),
            token=token,
            hours=self.settings.verification_expire_hours,
        )

    def password_changed(self, user: User, when: datetime) -> Mail:
        return self._notice("password_changed", user.email, "Your password was changed", user, when)

    def password_reset(self, user: User, when: datetime) -> Mail:
        return self._notice("password_reset", user.email, "Your password was reset", user, when)

    def email_changed(self, user: User, old_email: str, when: datetime) -> Mail:
        """Sent to the address the account had before: its owner learns of a change they
        may not have made, while they can still act on it."""
        return self._notice(
            "email_changed",
            old_email,
            "Your email address was changed",
            user,
            when,
            old_email=old_email,
            new_email=user.email,
        )

    def _notice(
        self, name: str, to: str, title: str, user: User, when: datetime, **context: Any
    ) -> Mail:
        return self.render(
            name,
            to=to,
            subject=f"{title} ({SERVICE_NAME})",
            username=user.username,
            when=when.strftime("%Y-%m-%d %H:%M UTC"),
            reset_page=f"{self.settings.frontend_url}/reset-password",
            **context,
        )


class AccountOutbox:
    """The account mails of one request: rendered now, sent once the transaction commits."""

    def __init__(self, outbox: Outbox, mails: AccountMails) -> None:
        self._outbox = outbox
        self.mails = mails

    def send(self, mail: Mail) -> None:
        self._outbox.send_after_commit(mail)


async def get_account_outbox(state: StateDep, outbox: OutboxDep) -> AccountOutbox:
    return AccountOutbox(outbox, state.account_mails)


AccountOutboxDep = Annotated[AccountOutbox, Depends(get_account_outbox)]
