"""Outgoing mail: queued during a request, sent after its transaction has committed."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from email.message import EmailMessage
from typing import Annotated

import aiosmtplib
from fastapi import BackgroundTasks, Depends

from app.config import Settings
from app.state import StateDep

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Mail:
    """One message: `body` is the plain-text part; `html`, when given, its HTML alternative
    (multipart/alternative, so every client shows the best part it can)."""

    to: str
    subject: str
    body: str
    html: str | None = None


class Mailer:
    """Sends mail through SMTP_HOST with aiosmtplib, or writes it to the log when no SMTP
    server is configured. Sending never raises: a failure is logged and the caller goes on."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings

    def _message(self, mail: Mail) -> EmailMessage:
        message = EmailMessage()
        message["From"] = self._settings.mail_from
        message["To"] = mail.to
        message["Subject"] = mail.subject
        message.set_content(mail.body)
        if mail.html is not None:
            message.add_alternative(mail.html, subtype="html")
        return message

    async def send(self, mail: Mail) -> None:
        settings = self._settings
        if not settings.smtp_host:
            if settings.environment == "production":
                # The body holds a live token: never write it to production logs.
                logger.error("SMTP_HOST is not set; mail %r to %s dropped", mail.subject, mail.to)
            else:
                logger.warning(
                    "SMTP_HOST is not set; mail not sent:\nTo: %s\nSubject: %s\n\n%s",
                    mail.to,
                    mail.subject,
                    mail.body,
                )
            return
        password = settings.smtp_password.get_secret_value() if settings.smtp_password else None
        try:
            await aiosmtplib.send(
                self._message(mail),
                hostname=settings.smtp_host,
                port=settings.smtp_port,
                username=settings.smtp_username,
                password=password,
                start_tls=settings.smtp_starttls,
                timeout=settings.smtp_timeout,
            )
        except Exception:
            logger.exception("could not send mail %r to %s", mail.subject, mail.to)


class Outbox:
    """The mail of one request. Each message is handed to a background task, which Starlette
    runs only after a successful response, that is after the request's transaction committed;
    an error response (a failed commit included) sends nothing."""

    def __init__(self, mailer: Mailer, background: BackgroundTasks) -> None:
        self._mailer = mailer
        self._background = background

    def send_after_commit(self, mail: Mail) -> None:
        self._background.add_task(self._mailer.send, mail)


async def get_outbox(state: StateDep, background: BackgroundTasks) -> Outbox:
    return Outbox(state.mailer, background)


OutboxDep = Annotated[Outbox, Depends(get_outbox)]
