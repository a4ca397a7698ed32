"""Bounces and complaints that arrive after sending: VERP, DSN and ARF parsing, recording.

verp.py signs each delivery's envelope sender; dsn.py parses delivery status notifications
and arf.py feedback-loop reports into BounceEvents (events.py), which `record()` stores and
applies; mailbox.py fetches them from an IMAP or POP3 mailbox. A provider webhook builds a
BounceEvent and calls `record()` too.
"""

from newsletter.bounces.events import BounceEvent, Outcome, ReportError, address_hash, record

__all__ = ["BounceEvent", "Outcome", "ReportError", "address_hash", "parse", "record"]


def parse(raw: bytes) -> list[BounceEvent]:
    """The events one received message reports: a feedback report or a DSN.

    Raises events.ReportError for a message that is neither.
    """
    from newsletter.bounces import arf, dsn

    if arf.is_feedback_report(raw):
        return arf.parse(raw)
    return dsn.parse(raw)
