"""A real SMTP server on 127.0.0.1 (aiosmtpd) that keeps what it receives, for the mail tests."""

from __future__ import annotations

import asyncio
import re
import socket
import threading
import time
from dataclasses import dataclass
from email import message_from_bytes, policy
from email.message import EmailMessage
from typing import Any

from aiosmtpd.controller import Controller

TOKEN_PATTERN = re.compile(r"\?token=([A-Za-z0-9_\-]+)")


@dataclass
class ReceivedMail:
    sender: str
    recipients: list[str]
    message: EmailMessage

    @property
    def subject(self) -> str:
        return str(self.message["Subject"])

    @property
    def body(self) -> str:
        part = self.message.get_body(preferencelist=("plain",))
        assert part is not None
        return str(part.get_content())  # type: ignore[attr-defined]

    @property
    def token(self) -> str:
        """The token of the link in the mail."""
        found = TOKEN_PATTERN.search(self.body)
        assert found is not None, self.body
        return found.group(1)


class _Handler:
    def __init__(self, server: MailServer) -> None:
        self._server = server

    async def handle_DATA(self, _server: Any, _session: Any, envelope: Any) -> str:  # noqa: N802
        message = message_from_bytes(envelope.content, policy=policy.default)
        assert isinstance(message, EmailMessage)
        self._server.add(ReceivedMail(envelope.mail_from, list(envelope.rcpt_tos), message))
        return "250 OK"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class MailServer:
    """An SMTP server in a thread on loopback; `wait_for` returns the mails to an address."""

    def __init__(self) -> None:
        self.port = free_port()
        self._mails: list[ReceivedMail] = []
        self._lock = threading.Lock()
        self._controller = Controller(_Handler(self), hostname="127.0.0.1", port=self.port)

    def start(self) -> None:
        self._controller.start()

    def stop(self) -> None:
        self._controller.stop()

    def add(self, mail: ReceivedMail) -> None:
        with self._lock:
            self._mails.append(mail)

    def clear(self) -> None:
        with self._lock:
            self._mails.clear()

    def mails_to(self, address: str) -> list[ReceivedMail]:
        with self._lock:
            return [mail for mail in self._mails if address in mail.recipients]

    async def wait_for(
        self, address: str, count: int = 1, within: float = 5.0
    ) -> list[ReceivedMail]:
        """The first `count` mails to `address`, waiting for them up to `within` seconds."""
        deadline = time.monotonic() + within
        while True:
            mails = self.mails_to(address)
            if len(mails) >= count or time.monotonic() > deadline:
                assert len(mails) >= count, f"expected {count} mails to {address}, got {len(mails)}"
                return mails
            await asyncio.sleep(0.02)
