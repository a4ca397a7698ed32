"""Recorded DSNs and feedback-loop reports parse into the right events (pure, no I/O)."""

from __future__ import annotations

import pytest

from newsletter.bounces import ReportError, arf, dsn, parse

from .conftest import recorded


@pytest.mark.parametrize(
    ("name", "kind", "recipient", "status"),
    [
        # Gmail's plain-text notice: "failed permanently", 550 5.1.0, X-Failed-Recipients.
        (
            "bounce_gmail-invalid-address.eml",
            "hard",
            "awfawfawfawfawfaw@someserverhere.com",
            "5.1.0",
        ),
        # Exchange Online's multipart/report: its Status, not its prose.
        ("bounce_office365.eml", "hard", "noname@example.com", "5.1.10"),
        # Postfix via AOL: Action failed, 5.2.2 mailbox full: soft by common practice.
        ("bounce_mailbox-full.eml", "soft", "user@aol.com", "5.2.2"),
        # Gave up after 5 days on a temporary error (Action failed, 4.0.0): soft.
        ("bounce_delayed.eml", "soft", "foo@example.com", "4.0.0"),
        # "still being retried", Action delayed: a warning, never a bounce.
        ("bounce_no-mx.eml", "delayed", "user@example.com", "4.4.4"),
    ],
)
def test_each_recorded_dsn_is_read_as_what_it_is(name, kind, recipient, status):
    (event,) = dsn.parse(recorded(name))
    assert (event.kind, event.recipient, event.status) == (kind, recipient, status)
    assert event.reason  # the raw diagnostic is kept
    assert event.source == "dsn"


def test_the_returned_original_s_message_id_is_found():
    assert dsn.parse(recorded("bounce_mailbox-full.eml"))[0].message_id == (
        "<4E326A95.3010907@example.com>"
    )
    # Exchange: the DSN's In-Reply-To, Gmail: the quoted original's headers.
    office = dsn.parse(recorded("bounce_office365.eml"))[0]
    assert office.message_id == "<20171013111011.20866.254C2F3A4D7AA526@ninomail.com>"
    gmail = dsn.parse(recorded("bounce_gmail-invalid-address.eml"))[0]
    assert (
        gmail.message_id == "<CAKsfaBUUGqVZiaMrmH3TRPfq1odQPtM7Ey5YW1SgyJJRHtAjgw@mail.gmail.com>"
    )


def test_an_aol_complaint_keeps_no_redacted_address_but_the_message_id():
    (event,) = arf.parse(recorded("complaints_aol.eml"))
    assert (event.kind, event.recipient, event.status) == ("complaint", "", "abuse")
    assert event.message_id == "<20101117174130.28884.55421@luna>"
    assert "Feedback-Type: abuse" in event.reason


def test_a_yahoo_complaint_names_its_recipient_and_envelope():
    (event,) = arf.parse(recorded("complaints_yahoo.eml"))
    assert (event.kind, event.recipient) == ("complaint", "user@yahoo.com")
    assert event.message_id == "<20120711015015.4A8BE2E088E@www.example.com>"
    assert event.source == "arf"


def test_a_not_spam_report_is_no_complaint():
    raw = recorded("complaints_yahoo.eml").replace(
        b"Feedback-Type: abuse", b"Feedback-Type: not-spam"
    )
    assert arf.parse(raw) == []


def test_parse_tells_reports_from_bounces():
    assert parse(recorded("complaints_aol.eml"))[0].kind == "complaint"
    assert parse(recorded("bounce_office365.eml"))[0].kind == "hard"


@pytest.mark.parametrize(
    "raw",
    [
        b"From: friend@example.net\r\nSubject: lunch?\r\n\r\nSee you at noon.\r\n",
        b"",
        b"\xff\xfe garbage \x00\x01",
        # A mail system's notice that names no recipient at all.
        b"From: MAILER-DAEMON@example.net\r\nSubject: Undeliverable\r\n\r\nSorry.\r\n",
    ],
)
def test_a_message_that_is_no_report_raises_a_clear_error(raw):
    with pytest.raises(ReportError):
        parse(raw)


def test_a_postfix_text_bounce_without_a_report_part():
    raw = (
        b"From: MAILER-DAEMON@mx.example.net (Mail Delivery System)\r\n"
        b"Subject: Undelivered Mail Returned to Sender\r\n\r\n"
        b"I'm sorry to have to inform you that your message could not\r\n"
        b"be delivered to one or more recipients.\r\n\r\n"
        b"<gone@example.net>: host mx.example.net[192.0.2.1] said: 550 5.1.1\r\n"
        b"    <gone@example.net>: Recipient address rejected: User unknown\r\n"
    )
    (event,) = parse(raw)
    assert (event.kind, event.recipient, event.status) == ("hard", "gone@example.net", "5.1.1")
    assert "User unknown" in event.reason
