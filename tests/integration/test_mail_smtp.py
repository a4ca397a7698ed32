"""Digests sent over real SMTP (aiosmtpd on loopback): headers, parts, DKIM, faults."""

from __future__ import annotations

import email
import email.policy
import re
import time
from datetime import date
from pathlib import Path
from urllib.parse import quote

import dkim
import pytest
from bs4 import BeautifulSoup

from newsletter.config import Settings
from newsletter.mail import (
    DkimSigner,
    PermanentSendError,
    SMTPTransport,
    TransientSendError,
    build_message,
    message_id_for,
    open_transport,
)
from newsletter.mail.message import envelope_of
from newsletter.render import DigestItem, EditionRenderer

pytestmark = pytest.mark.integration

DATA = Path(__file__).resolve().parents[2] / "newsletter" / "data"
EDITION = date(2026, 6, 12)
BASE = "https://news.example.org"


@pytest.fixture(scope="module")
def papers():
    from newsletter.sources import hf_daily

    raw = (DATA / "hf_daily_papers_2026-06-12.json").read_bytes()
    return list(hf_daily.parse(raw).papers)


@pytest.fixture(scope="module")
def renderer(papers):
    config = Settings(secret_key="t", base_url=BASE, from_address="Paper Digest <digest@x.org>")
    return EditionRenderer(config, EDITION)


@pytest.fixture(params=[False, True], ids=["one-by-one", "pipelining"])
def server(faulty_smtp_server, request):
    """The fault-injecting server, with and without PIPELINING (both client paths)."""
    faulty_smtp_server.pipelining = request.param
    return faulty_smtp_server


def digest_message(renderer, papers, number: int, recipient: str | None = None):
    recipient = recipient or f"reader{number}@example.net"
    unsubscribe = f"{BASE}/unsubscribe/token-{number}"
    items = [
        DigestItem(p, ("agents",), "about <mark>agents</mark>", "about agents")
        for p in papers[number % 5 : number % 5 + 4]
    ]
    email = renderer.render_digest(
        email=recipient,
        keywords_text="agents",
        items=items,
        trending=papers[20:23],
        unsubscribe_url=unsubscribe,
        manage_url=f"{BASE}/manage/token-{number}",
    )
    return build_message(
        email,
        sender="Paper Digest <digest@x.org>",
        recipient=recipient,
        message_id=message_id_for(number, EDITION, "x.org"),
        unsubscribe_url=unsubscribe,
        unsubscribe_mailto="unsubscribe@x.org",
        list_id="Paper Digest <digest.x.org>",
    )


def test_a_digest_arrives_complete_and_signed(server, renderer, papers, dkim_key):
    private, record = dkim_key
    signer = DkimSigner("mail", "x.org", private.read_bytes())
    with SMTPTransport(server.url, signer=signer) as transport:
        reply = transport.send(digest_message(renderer, papers, 1))
    assert "accepted" in reply
    envelope = server.envelopes[0]
    assert envelope.mail_from == "digest@x.org"
    assert envelope.rcpt_tos == ["reader1@example.net"]
    received = server.messages[0]
    unsubscribe = f"{BASE}/unsubscribe/token-1"

    assert received["Message-ID"] == "<digest.20260612.1@x.org>"
    assert received["Date"] and received["From"] == "Paper Digest <digest@x.org>"
    assert received["To"] == "reader1@example.net"
    assert received["Subject"].startswith("Paper Digest · Fri 12 Jun · ")
    assert received["List-Id"] == "Paper Digest <digest.x.org>"
    assert received["List-Unsubscribe"] == (
        f"<{unsubscribe}>, <mailto:unsubscribe@x.org?subject=unsubscribe>"
    )
    assert received["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert received["Precedence"] == "bulk"
    assert received["Auto-Submitted"] == "auto-generated"

    text = received.get_body(("plain",)).get_content()
    html = received.get_body(("html",)).get_content()
    assert [p.get_content_type() for p in received.iter_parts()] == ["text/plain", "text/html"]
    assert f"Unsubscribe: {unsubscribe}" in text
    page = BeautifulSoup(html, "html.parser")
    assert page.find("a", href=unsubscribe, string="Unsubscribe")
    hrefs = [a["href"] for a in page.find_all("a")]
    assert all(re.match(r"https?://", href) for href in hrefs), hrefs
    for paper in papers[1:5]:
        assert page.find("a", href=paper.hf_url, string=" ".join(paper.title.split()))
    # Essential styling is inline; <style> keeps only media queries (dark mode, phones).
    assert "border-radius" in page.select_one("span.label")["style"]
    for block in page.find_all("style"):
        assert (
            re.sub(r"@media[^{]+\{(?:[^{}]*\{[^{}]*\})*\s*\}", "", block.get_text()).strip() == ""
        )

    raw = server.raw[0]

    def dns(name: bytes, timeout: int = 5) -> bytes:
        assert name == b"mail._domainkey.x.org."
        return record

    assert dkim.verify(raw, dnsfunc=dns)
    signed = re.search(r"h=([^;]+)", str(received["DKIM-Signature"])).group(1)
    names = {name.strip() for name in signed.split(":")}
    assert {"list-unsubscribe", "list-unsubscribe-post"} <= names


def test_one_connection_carries_a_whole_batch(server, renderer, papers):
    with SMTPTransport(server.url) as transport:
        for number in range(25):
            transport.send(digest_message(renderer, papers, number))
        assert transport.pipelining == server.pipelining
    assert len(server.messages) == 25
    assert len(set(server.peers)) == 1 and transport.connections == 1


def test_a_dropped_connection_is_reopened_and_nothing_is_lost_or_doubled(server, renderer, papers):
    server.drop_every = 3
    with SMTPTransport(server.url) as transport:
        for number in range(10):
            transport.send(digest_message(renderer, papers, number))
    ids = server.message_ids()
    assert sorted(ids) == sorted({message_id_for(n, EDITION, "x.org") for n in range(10)})
    assert transport.connections == 4  # 3 + 3 + 3 + 1 messages
    assert len(set(server.peers)) == 4


def test_a_421_before_the_message_reconnects_once(server, renderer, papers):
    server.mail_replies = ["421 4.3.2 Service shutting down"]
    with SMTPTransport(server.url) as transport:
        transport.send(digest_message(renderer, papers, 1))
    assert server.message_ids() == ["<digest.20260612.1@x.org>"]
    assert transport.connections == 2


def test_a_4xx_for_a_recipient_is_transient_and_the_batch_goes_on(server, renderer, papers):
    server.reply_for["busy@example.net"] = "451 4.7.1 Greylisted, try later"
    with SMTPTransport(server.url) as transport:
        with pytest.raises(TransientSendError) as raised:
            transport.send(digest_message(renderer, papers, 1, "busy@example.net"))
        transport.send(digest_message(renderer, papers, 2))
    assert raised.value.code == 451 and raised.value.stage == "rcpt"
    assert "Greylisted" in raised.value.message
    assert server.message_ids() == ["<digest.20260612.2@x.org>"]
    assert transport.connections == 1  # RSET, not a new connection


def test_a_5xx_is_permanent_for_the_recipient_or_the_message(server, renderer, papers):
    server.reply_for["gone@example.net"] = "550 5.1.1 No such user"
    server.data_reply_for["picky@example.net"] = "554 5.7.1 Message refused"
    with SMTPTransport(server.url) as transport:
        with pytest.raises(PermanentSendError) as unknown:
            transport.send(digest_message(renderer, papers, 1, "gone@example.net"))
        with pytest.raises(PermanentSendError) as refused:
            transport.send(digest_message(renderer, papers, 2, "picky@example.net"))
        transport.send(digest_message(renderer, papers, 3))
    assert (unknown.value.code, unknown.value.stage) == (550, "rcpt")
    assert (refused.value.code, refused.value.stage) == (554, "data")
    assert server.message_ids() == ["<digest.20260612.3@x.org>"]


def test_a_5xx_for_the_sender_is_not_blamed_on_the_recipient(server, renderer, papers):
    server.mail_replies = ["553 5.7.1 Sender address rejected"]
    with (
        SMTPTransport(server.url) as transport,
        pytest.raises(TransientSendError) as raised,
    ):
        transport.send(digest_message(renderer, papers, 1))
    assert (raised.value.code, raised.value.stage) == (553, "mail")


def test_an_unreachable_server_fails_fast_and_transiently(server, renderer, papers):
    with SMTPTransport(server.url) as transport:
        transport.send(digest_message(renderer, papers, 1))
        server.controller.stop()
        started = time.monotonic()
        with pytest.raises(TransientSendError) as first:
            transport.send(digest_message(renderer, papers, 2))
        with pytest.raises(TransientSendError) as second:
            transport.send(digest_message(renderer, papers, 3))
    assert first.value.stage == "connect" and second.value is first.value
    assert time.monotonic() - started < 5
    with (
        pytest.raises(TransientSendError, match="cannot open"),
        SMTPTransport(server.url),
    ):
        pass


def test_send_rate_is_respected(server, renderer, papers):
    config = Settings(secret_key="t", smtp_url=server.url, send_rate=20)
    messages = [digest_message(renderer, papers, n) for n in range(6)]
    started = time.monotonic()
    with open_transport(config) as transport:
        for message in messages:
            transport.send(message)
    assert time.monotonic() - started >= 5 / 20 * 0.95
    assert len(server.messages) == 6


def test_authenticated_smtp_with_credentials_in_the_url(smtp_auth_server, renderer, papers):
    user, password = smtp_auth_server.credentials
    server = f"127.0.0.1:{smtp_auth_server.port}"
    url = f"smtp://{quote(user, safe='')}:{quote(password, safe='')}@{server}"
    with SMTPTransport(url) as transport:
        transport.send(digest_message(renderer, papers, 1))
    assert smtp_auth_server.message_ids() == ["<digest.20260612.1@x.org>"]
    assert smtp_auth_server.authenticated == [True]
    wrong = f"smtp://{quote(user, safe='')}:nope@127.0.0.1:{smtp_auth_server.port}"
    with pytest.raises(TransientSendError) as raised, SMTPTransport(wrong):
        pass
    assert raised.value.code == 535 and raised.value.stage == "connect"


def test_tls_connections_starttls_and_implicit(smtp_tls_server, renderer, papers):
    with SMTPTransport(smtp_tls_server.url) as transport:
        transport.send(digest_message(renderer, papers, 1))
    assert smtp_tls_server.message_ids() == ["<digest.20260612.1@x.org>"]
    # A self-signed certificate is refused unless verification was turned off.
    with pytest.raises(TransientSendError) as raised, SMTPTransport(smtp_tls_server.strict_url):
        pass
    assert raised.value.stage == "connect" and "certificate" in raised.value.message.lower()


# Internationalized addresses ---------------------------------------------------------------

ZOE = "zoë@example.org"


def offering_smtputf8(server, offered: bool):
    """Restart the fault-injecting server on its port, with or without SMTPUTF8."""
    from aiosmtpd.controller import Controller

    server.controller.stop()
    controller = Controller(server, hostname="127.0.0.1", port=server.port, enable_SMTPUTF8=offered)
    controller.start()
    return controller


@pytest.fixture
def smtputf8_server(server):
    """The server (with and without PIPELINING) offering SMTPUTF8 (RFC 6531)."""
    controller = offering_smtputf8(server, True)
    yield server
    controller.stop()


@pytest.fixture
def ascii_server(server):
    """The server (with and without PIPELINING) not offering SMTPUTF8, as many relays."""
    controller = offering_smtputf8(server, False)
    yield server
    controller.stop()


def test_a_non_ascii_address_travels_by_smtputf8_signed(
    smtputf8_server, renderer, papers, dkim_key
):
    private, record = dkim_key
    signer = DkimSigner("mail", "x.org", private.read_bytes())
    with SMTPTransport(smtputf8_server.url, signer=signer) as transport:
        transport.send(digest_message(renderer, papers, 1, ZOE))
        transport.send(digest_message(renderer, papers, 2))  # plain again on the same connection
    assert transport.connections == 1
    first, second = smtputf8_server.envelopes
    assert first.rcpt_tos == [ZOE] and "SMTPUTF8" in first.mail_options
    assert second.rcpt_tos == ["reader2@example.net"] and "SMTPUTF8" not in second.mail_options
    assert f"\r\nTo: {ZOE}\r\n".encode() in smtputf8_server.raw[0]  # RFC 6532, not =?utf-8?
    # The stock parser reads bytes as ASCII; a UTF-8 reader sees the address as it was.
    parsed = email.message_from_string(smtputf8_server.raw[0].decode(), policy=email.policy.default)
    assert parsed["To"].addresses[0].addr_spec == ZOE
    assert smtputf8_server.raw[1].isascii()

    def dns(name: bytes, timeout: int = 5) -> bytes:
        return record

    assert dkim.verify(smtputf8_server.raw[0], dnsfunc=dns)


def test_without_smtputf8_a_non_ascii_address_fails_at_once_and_the_batch_goes_on(
    ascii_server, renderer, papers
):
    server = ascii_server
    with SMTPTransport(server.url) as transport:
        with pytest.raises(PermanentSendError) as refused:
            transport.send(digest_message(renderer, papers, 1, ZOE))
        transport.send(digest_message(renderer, papers, 2))
    assert refused.value.stage == "address"  # not "rcpt": the address is not to blame
    assert "does not accept internationalized addresses (no SMTPUTF8)" in str(refused.value)
    assert server.message_ids() == ["<digest.20260612.2@x.org>"]
    assert transport.connections == 1


def test_an_idn_domain_goes_as_xn_and_needs_no_smtputf8(ascii_server, renderer, papers):
    server = ascii_server
    with SMTPTransport(server.url) as transport:
        transport.send(digest_message(renderer, papers, 1, "user@bücher.example"))
    (envelope,) = server.envelopes
    assert envelope.rcpt_tos == ["user@xn--bcher-kva.example"]
    assert "SMTPUTF8" not in envelope.mail_options
    assert server.messages[0]["To"] == "user@xn--bcher-kva.example"
    assert server.raw[0].isascii()


def test_the_next_transaction_begins_once_the_last_verdict_is_read(server, renderer, papers):
    """finish(following): the next message's MAIL, RCPT and DATA go out right after the 250,
    before its start(); a message that never starts gets nothing, not an empty message."""
    begun: list[str] = []
    handle_mail = server.handle_MAIL

    async def mail(srv, session, envelope, address, options):
        begun.append(address)
        return await handle_mail(srv, session, envelope, address, options)

    server.handle_MAIL = mail
    messages = [digest_message(renderer, papers, n) for n in range(4)]
    with SMTPTransport(server.url) as transport:
        transport.start(messages[0])
        transport.finish(envelope_of(messages[1]))
        deadline = time.monotonic() + 5
        while server.pipelining and len(begun) < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        # With PIPELINING the relay has the next transaction's commands before its start().
        assert len(begun) == (2 if server.pipelining else 1)
        transport.send(messages[1])
        # Announced, then another message starts instead: the begun one is dropped with its
        # connection (its data never came), and the other goes out on a new connection.
        transport.start(messages[2])
        transport.finish(envelope_of(messages[1]))
        transport.send(messages[3])
        assert transport.connections == (2 if server.pipelining else 1)
        # Announced and nothing follows: closing does not wait on the relay.
        transport.start(messages[0])
        transport.finish(envelope_of(messages[1]))
        closing = time.monotonic()
    assert time.monotonic() - closing < 2
    deadline = time.monotonic() + 5
    while len(server.raw) < 5 and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(0.2)
    assert [e.rcpt_tos for e in server.envelopes] == [
        [f"reader{n}@example.net"] for n in (0, 1, 2, 3, 0)
    ]
    assert server.data_started == 5


def test_a_refusal_of_a_transaction_begun_ahead_is_that_message_s_alone(server, renderer, papers):
    server.reply_for["reader1@example.net"] = "550 5.1.1 No such mailbox"
    messages = [digest_message(renderer, papers, n) for n in range(3)]
    with SMTPTransport(server.url) as transport:
        transport.start(messages[0])
        transport.finish(envelope_of(messages[1]))
        with pytest.raises(PermanentSendError) as refused:
            transport.start(messages[1])
        assert refused.value.stage == "rcpt" and refused.value.code == 550
        transport.start(messages[2])
        transport.finish()
        assert transport.connections == 1
    assert [e.rcpt_tos for e in server.envelopes] == [
        ["reader0@example.net"],
        ["reader2@example.net"],
    ]


def test_a_message_whose_bytes_cannot_be_made_leaves_the_connection_to_no_other(
    server, renderer, papers
):
    """The bytes are made while the relay answers the commands: when that fails (here a DKIM
    key that is no key), the relay may be waiting for data, so the connection is dropped."""
    messages = [digest_message(renderer, papers, n) for n in range(2)]
    with SMTPTransport(server.url, signer=DkimSigner("mail", "x.org", b"not a key")) as transport:
        with pytest.raises(Exception, match="(?i)key"):
            transport.send(messages[0])
        transport.signer = None
        transport.send(messages[1])
        assert transport.connections == 2
    assert [e.rcpt_tos for e in server.envelopes] == [["reader1@example.net"]]
    assert server.data_started == 1
