"""The bounce mailbox: fetch DSNs and feedback reports over IMAP or POP3 and record them.

A message is deleted only after the events it reported are committed; one that cannot be
parsed is kept (flagged on IMAP) and reported, and never stops the others. A message fetched
again because its deletion was lost (a dropped connection before QUIT or EXPUNGE) is
recognised by its digest and records nothing twice.
"""

from __future__ import annotations

import hashlib
import imaplib
import logging
import poplib
import ssl
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field, replace
from urllib.parse import unquote, urlsplit

from newsletter.bounces import events as bounce_events
from newsletter.config import Settings, redact_url
from newsletter.db import Database

log = logging.getLogger(__name__)

TIMEOUT = 30.0  # seconds for any one mailbox command


class MailboxError(Exception):
    """The mailbox could not be reached or refused us; nothing was deleted."""


@dataclass
class FetchReport:
    """What one fetch did: messages read, events recorded per outcome, messages kept."""

    messages: int = 0
    deleted: int = 0
    outcomes: dict[str, int] = field(default_factory=dict)
    kept: list[str] = field(default_factory=list)  # why each unparsed message stayed

    def as_dict(self) -> dict[str, object]:
        return {
            "messages": self.messages,
            "deleted": self.deleted,
            "outcomes": dict(self.outcomes),
            "kept": len(self.kept),
        }


# One mailbox seen as: (message ids, read one, delete one).
_Mailbox = tuple[list[str], Callable[[str], bytes], Callable[[str], None], Callable[[str], None]]


def fetch(db: Database, settings: Settings) -> FetchReport:
    """Read every waiting message, record what it reports, delete what was recorded."""
    if not settings.bounce_mailbox_url:
        raise MailboxError("no bounce mailbox: set NEWSLETTER_BOUNCE_MAILBOX_URL")
    report = FetchReport()
    with _open(settings.bounce_mailbox_url) as (ids, read, delete, keep):
        for message_id in ids:
            report.messages += 1
            raw = read(message_id)
            if _process(db, settings, raw, report):
                delete(message_id)
                report.deleted += 1
            else:
                keep(message_id)
    return report


def _process(db: Database, settings: Settings, raw: bytes, report: FetchReport) -> bool:
    """Record one message's events; True once they are committed (the message may go)."""
    from newsletter.bounces import parse

    try:
        found = parse(raw)
    except bounce_events.ReportError as exc:
        _keep(report, raw, str(exc))
        return False
    except Exception as exc:  # a message no parser foresaw: kept for a human, never fatal
        log.exception("cannot parse a bounce mailbox message")
        _keep(report, raw, f"{type(exc).__name__}: {exc}")
        return False
    key = hashlib.sha256(raw).hexdigest()
    try:
        with db.session() as session:
            for event in found:
                keyed = replace(event, report_key=key)
                outcome = bounce_events.record(session, settings, keyed)
                report.outcomes[outcome] = report.outcomes.get(outcome, 0) + 1
    except Exception:
        # Our side failed (the database): the message stays for the next run.
        log.exception("cannot record the events of a bounce mailbox message")
        _keep(report, raw, "could not be recorded (database error); kept for the next run")
        return False
    return True


def _keep(report: FetchReport, raw: bytes, why: str) -> None:
    subject = ""
    for line in raw.split(b"\n", 200):
        if line.lower().startswith(b"subject:"):
            subject = line[8:].strip().decode("utf-8", "replace")[:120]
            break
    report.kept.append(f"{subject or '(no subject)'}: {why}")
    log.warning("bounce mailbox message kept: %s: %s", subject or "(no subject)", why)


@contextmanager
def _open(url: str) -> Iterator[_Mailbox]:
    parts = urlsplit(url)
    user, password = unquote(parts.username or ""), unquote(parts.password or "")
    host = parts.hostname or ""
    try:
        if parts.scheme in ("pop3", "pop3s"):
            with _pop3(parts.scheme, host, parts.port, user, password) as mailbox:
                yield mailbox
        else:
            folder = unquote(parts.path.lstrip("/")) or "INBOX"
            with _imap(parts.scheme, host, parts.port, user, password, folder) as mailbox:
                yield mailbox
    except (OSError, poplib.error_proto, imaplib.IMAP4.error) as exc:
        raise MailboxError(f"bounce mailbox {redact_url(url)}: {exc}") from exc


def _keep_on_server(_number: str) -> None:
    """POP3 has no flags: a kept message stays as it is and is read again next time."""


@contextmanager
def _pop3(scheme: str, host: str, port: int | None, user: str, password: str) -> Iterator[_Mailbox]:
    if scheme == "pop3s":
        client: poplib.POP3 = poplib.POP3_SSL(
            host, port or 995, timeout=TIMEOUT, context=ssl.create_default_context()
        )
    else:
        client = poplib.POP3(host, port or 110, timeout=TIMEOUT)
    try:
        client.user(user)
        client.pass_(password)
        _, listing, _ = client.list()
        ids = [line.split()[0].decode("ascii") for line in listing]

        def read(number: str) -> bytes:
            return b"\r\n".join(client.retr(int(number))[1]) + b"\r\n"

        def delete(number: str) -> None:
            client.dele(int(number))

        yield ids, read, delete, _keep_on_server
        client.quit()  # the deletions happen here (RFC 1939 UPDATE state)
    finally:
        client.close()


@contextmanager
def _imap(
    scheme: str, host: str, port: int | None, user: str, password: str, folder: str
) -> Iterator[_Mailbox]:
    if scheme == "imaps":
        client: imaplib.IMAP4 = imaplib.IMAP4_SSL(
            host, port or 993, ssl_context=ssl.create_default_context(), timeout=TIMEOUT
        )
    else:
        client = imaplib.IMAP4(host, port or 143, timeout=TIMEOUT)
    try:
        client.login(user, password)
        status, _ = client.select(folder)
        if status != "OK":
            raise imaplib.IMAP4.error(f"cannot select {folder}")
        # Kept messages are flagged: reported once, left for a human.
        _, found = client.uid("SEARCH", "UNDELETED", "UNFLAGGED")
        ids = [uid.decode("ascii") for uid in found[0].split()] if found and found[0] else []

        def read(uid: str) -> bytes:
            _, data = client.uid("FETCH", uid, "(BODY.PEEK[])")
            for item in data:
                if isinstance(item, tuple):
                    return bytes(item[1])
            raise imaplib.IMAP4.error(f"message {uid!r} has no body")

        def delete(uid: str) -> None:
            client.uid("STORE", uid, "+FLAGS", "(\\Deleted)")

        def keep(uid: str) -> None:
            client.uid("STORE", uid, "+FLAGS", "(\\Flagged)")

        yield ids, read, delete, keep
        client.expunge()
        client.logout()
    finally:
        with suppress(OSError):
            client.shutdown()
