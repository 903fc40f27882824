"""Where mail goes: the node's provider, chosen by ``config.provider`` in msuite.yaml.

- ``log``: one INFO line per mail on the ``notifications.mail`` logger (the
  recipient, subject and body; never a credential). For development: the log
  stands in for the mailbox.
- ``smtp``: the standard library's smtplib, run in a worker thread
  (``asyncio.to_thread``) so the event loop never waits on the network; plain,
  STARTTLS or TLS from the first byte, with AUTH when a username is set. One
  connection per mail, each step bounded by ``config.smtp.timeout``.

A mail that cannot be delivered raises :class:`DeliveryError`, whose message
says what failed (never the password).
"""

from __future__ import annotations

import asyncio
import email.policy
import logging
import smtplib
import ssl
from collections.abc import Mapping
from dataclasses import dataclass, field
from email.message import EmailMessage
from email.utils import parseaddr
from typing import Any, Protocol

__all__ = ["DeliveryError", "LogMailer", "Mail", "Mailer", "SmtpMailer", "SmtpSettings", "build_mailer"]

log = logging.getLogger("notifications.mail")

TLS_MODES = ("none", "starttls", "tls")
DEFAULT_PORTS = {"none": 25, "starttls": 587, "tls": 465}


@dataclass(frozen=True, slots=True)
class Mail:
    """One mail to one address."""

    to: str
    subject: str
    body: str


class DeliveryError(Exception):
    """A mail the provider could not deliver.

    ``permanent`` when the server refused the mail itself (a bad recipient): sending it
    again will not help. Otherwise the server could not be reached or failed for now."""

    def __init__(self, message: str, *, permanent: bool = False) -> None:
        super().__init__(message)
        self.permanent = permanent


class Mailer(Protocol):
    """A provider: ``name`` is what notifications record as their ``provider``."""

    name: str

    async def send(self, mail: Mail) -> None:
        """Deliver ``mail``; :class:`DeliveryError` when it cannot."""
        ...


class LogMailer:
    """Logs each mail instead of sending it."""

    name = "log"

    async def send(self, mail: Mail) -> None:
        log.info("mail to %s: subject %r, body %r", mail.to, mail.subject, mail.body)


@dataclass(frozen=True, slots=True)
class SmtpSettings:
    """``config.smtp`` of the manifest, checked."""

    host: str = "localhost"
    port: int = 0
    """0: the usual port of the TLS mode (25, 587 with starttls, 465 with tls)."""
    tls: str = "none"
    username: str = ""
    password: str = field(default="", repr=False)
    sender: str = "notifications@localhost"
    timeout: float = 10.0

    def __post_init__(self) -> None:
        if self.tls not in TLS_MODES:
            raise ValueError(f"config.smtp.tls: {self.tls!r} is not one of {', '.join(TLS_MODES)}")
        if not 0 <= self.port <= 65535:
            raise ValueError(f"config.smtp.port: {self.port} is not a port (0-65535)")
        if self.timeout <= 0:
            raise ValueError("config.smtp.timeout: must be more than 0 seconds")
        if not self.host:
            raise ValueError("config.smtp.host: empty")

    @classmethod
    def from_config(cls, smtp: Mapping[str, Any]) -> SmtpSettings:
        try:
            port = int(smtp.get("port") or 0)
            timeout = float(smtp.get("timeout") or 10)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"config.smtp: port and timeout must be numbers ({exc})") from None
        return cls(
            host=str(smtp.get("host") or "localhost"),
            port=port,
            tls=str(smtp.get("tls") or "none").lower(),
            username=str(smtp.get("username") or ""),
            password=str(smtp.get("password") or ""),
            sender=str(smtp.get("from") or "notifications@localhost"),
            timeout=timeout,
        )

    @property
    def effective_port(self) -> int:
        return self.port or DEFAULT_PORTS[self.tls]

    @property
    def address(self) -> str:
        return f"{self.host}:{self.effective_port}"


class SmtpMailer:
    """Sends each mail over its own SMTP connection, in a worker thread."""

    name = "smtp"

    def __init__(self, settings: SmtpSettings) -> None:
        self.settings = settings

    async def send(self, mail: Mail) -> None:
        message = EmailMessage()
        message["From"] = self.settings.sender
        message["To"] = mail.to
        message["Subject"] = mail.subject
        message.set_content(mail.body)
        await asyncio.to_thread(self._send, message, mail.to)

    def _send(self, message: EmailMessage, to: str) -> None:
        s = self.settings
        where = f"SMTP server {s.address} ({s.tls})"
        try:
            context = ssl.create_default_context()
            client: smtplib.SMTP
            if s.tls == "tls":
                client = smtplib.SMTP_SSL(s.host, s.effective_port, timeout=s.timeout, context=context)
            else:
                client = smtplib.SMTP(s.host, s.effective_port, timeout=s.timeout)
            with client:
                if s.tls == "starttls":
                    client.starttls(context=context)
                if s.username:
                    client.login(s.username, s.password)
                # not send_message: it writes a body line starting "From " as ">From "
                client.ehlo_or_helo_if_needed()
                data = message.as_bytes(policy=email.policy.SMTP)
                eight_bit = client.has_extn("8bitmime") and not data.isascii()
                options = ["BODY=8BITMIME"] if eight_bit else []
                client.sendmail(parseaddr(s.sender)[1], [to], data, mail_options=options)
        # smtplib's errors are OSErrors: the specific ones first
        except smtplib.SMTPRecipientsRefused as exc:
            refused = "; ".join(f"{to}: {code} {_text(text)}" for to, (code, text) in exc.recipients.items())
            raise DeliveryError(f"{where} refused the recipient ({refused})", permanent=True) from None
        except smtplib.SMTPAuthenticationError as exc:
            raise DeliveryError(
                f"{where} refused the login of {s.username!r}: {exc.smtp_code} {_text(exc.smtp_error)}"
            ) from None
        except smtplib.SMTPNotSupportedError as exc:
            raise DeliveryError(f"{where} does not support what the settings ask: {exc}") from None
        except smtplib.SMTPResponseException as exc:
            raise DeliveryError(f"{where} failed: {exc.smtp_code} {_text(exc.smtp_error)}") from None
        except (OSError, smtplib.SMTPException) as exc:  # refused, timed out, TLS, disconnected
            raise DeliveryError(f"{where} unavailable: {type(exc).__name__}: {exc}") from None


def _text(reply: bytes | str) -> str:
    return reply.decode(errors="replace") if isinstance(reply, bytes) else reply


def build_mailer(config: Mapping[str, Any]) -> Mailer:
    """The provider ``config.provider`` names (``log`` when unset)."""
    provider = str(config.get("provider") or "log").lower()
    if provider == "log":
        return LogMailer()
    if provider == "smtp":
        return SmtpMailer(SmtpSettings.from_config(config.get("smtp") or {}))
    raise ValueError(f"config.provider: {provider!r} is not a provider (log, smtp)")
