"""A real digest and a real confirmation mail: SpamAssassin's score, and their DKIM signatures.

Both are made by the product's own code (the pipeline's plan and deliver, the sign-up's
send_confirmation) with DKIM configured, received by aiosmtpd, then judged on the bytes that
arrived: Debian's SpamAssassin with its packaged rules and local tests only (no network, no
Bayes), and dkimpy's verifier with the test key as the DNS record.
"""

from __future__ import annotations

import email
import email.policy
import re
import shutil
import subprocess
from datetime import date
from email.utils import format_datetime
from pathlib import Path

import dkim
import pytest

from newsletter import pipeline, storage, subscriptions
from newsletter.config import Settings, load_settings
from newsletter.db import Database
from newsletter.web.mail import send_confirmation
from tests.support.ledger import demo_day_subscribers
from tests.support.system import require_system

pytestmark = pytest.mark.integration

# A digest must stay well below SpamAssassin's default 5.0: some receivers add their own
# points (reputation, Bayes) on top of the local rules.
MAX_SCORE = 2.0
SELECTOR, DOMAIN = "mail", "x.org"
BASE = "https://news.example.org"
# What a signature must cover for the receiver to trust it: the bulk headers of RFC 8058 and
# the ones that say who sent what when.
DIGEST_SIGNED = {
    "from",
    "subject",
    "date",
    "message-id",
    "list-id",
    "list-unsubscribe",
    "list-unsubscribe-post",
}
CONFIRMATION_SIGNED = {"from", "to", "subject", "date", "message-id"}


@pytest.fixture
def service(tmp_path, faulty_smtp_server, dkim_key):
    """Settings and a migrated database that mail over aiosmtpd, signing with the test key."""
    private, _ = dkim_key
    settings = load_settings(
        var_dir=tmp_path / "var",
        secret_key="test-secret",
        sources="hf_daily",
        smtp_url=faulty_smtp_server.url,
        base_url=BASE,
        from_address=f"Paper Digest <digest@{DOMAIN}>",
        list_id=f"Paper Digest <digest.{DOMAIN}>",
        unsubscribe_mailto=f"unsubscribe@{DOMAIN}",
        dkim_selector=SELECTOR,
        dkim_domain=DOMAIN,
        dkim_private_key_file=private,
    )
    db = Database(settings)
    db.upgrade()
    yield db, settings
    db.dispose()


@pytest.fixture(scope="module")
def spamassassin() -> str:
    """The spamassassin command, with the rules Debian's package ships."""
    found = shutil.which("spamassassin")
    if found is None or not any(Path("/usr/share/spamassassin").glob("*.cf")):
        require_system("SpamAssassin with its rules", "apt-get install spamassassin")
    return found


def digest_bytes(db: Database, settings: Settings, server) -> bytes:
    """One digest of the recorded day, planned and delivered by the pipeline; the bytes sent."""
    demo_day_subscribers(db, settings, ["reader@example.net"], "agents, language models")
    assert pipeline.plan(db, settings, edition=date(2026, 6, 12)).planned == 1
    assert pipeline.deliver(db, settings).sent == 1
    [raw] = server.raw
    return raw


def confirmation_bytes(db: Database, settings: Settings, server) -> bytes:
    """The double opt-in mail a sign-up gets, as sent; the bytes that arrived."""
    with db.session() as session:
        subscriber = subscriptions.subscribe(
            session,
            settings,
            email="new.reader@example.net",
            keywords="agents",
            now=storage.utcnow(),
        )
        send_confirmation(settings, subscriber)
    [raw] = server.raw
    return raw


def as_received(raw: bytes) -> bytes:
    """The message as the receiver's MX hands it on: with its Received header in front.

    Without one, SpamAssassin takes the mail for local (ALL_TRUSTED, -1.0) and the score
    would say nothing about mail from outside. The address is only text here (no lookup is
    made); a documentation range (192.0.2.0/24) would fire RCVD_ILLEGAL_IP.
    """
    received = (
        f"Received: from mail.{DOMAIN} (mail.{DOMAIN} [93.184.216.34])\r\n"
        f"\tby mx.example.net with ESMTPS id 4Xk2; {format_datetime(storage.utcnow())}\r\n"
    )
    return received.encode() + raw


def spam_report(command: str, raw: bytes, home: Path) -> tuple[float, dict[str, float]]:
    """SpamAssassin's score and the rules that fired with their points (-L: local tests only)."""
    result = subprocess.run(
        [
            command,
            "--local",
            "--test-mode",
            "--cf=use_bayes 0",
            "--cf=bayes_auto_learn 0",
        ],
        input=as_received(raw),
        capture_output=True,
        timeout=120,
        env={"HOME": str(home), "PATH": "/usr/bin:/bin"},  # no user prefs of this machine
        check=False,
    )
    assert result.returncode == 0, result.stderr.decode(errors="replace")
    judged = email.message_from_bytes(result.stdout, policy=email.policy.compat32)
    # Folded, the rule list goes on after ", " on the next line: unfold it as one list.
    status = re.sub(r",\s+", ",", re.sub(r"\s+", " ", str(judged["X-Spam-Status"])))
    found = re.search(r"score=(-?[\d.]+) .*tests=(\S*)", status)
    assert found, status
    rules = [rule for rule in found.group(2).split(",") if rule and rule != "none"]
    # Test mode adds the points of each rule to the text, one "pts RULE description" a line.
    details = result.stdout.decode(errors="replace").partition("Content analysis details:")[2]
    print(details.split("\n\n\n")[0].rstrip())
    points = {
        rule: float(pts) for pts, rule in re.findall(r"(?m)^\s*(-?\d+\.\d+) ([A-Z0-9_]+) ", details)
    }
    assert set(points) == set(rules), (points, rules)
    return float(found.group(1)), points


def assert_clean(name: str, score: float, points: dict[str, float]) -> None:
    """Below MAX_SCORE, and no rule adds points: each one that does is ours to fix."""
    fired = ", ".join(f"{rule} {pts:+.1f}" for rule, pts in sorted(points.items()))
    print(f"{name}: SpamAssassin score {score}, rules {fired or 'none'}")
    assert "ALL_TRUSTED" not in points  # judged as mail from outside
    assert score < MAX_SCORE, fired
    assert not {rule for rule, pts in points.items() if pts > 0}, fired


def verified_headers(raw: bytes, record: bytes) -> set[str]:
    """The headers the DKIM signature covers, after dkimpy verified it against `record`."""

    def dns(name: bytes, timeout: int = 5) -> bytes:
        assert name == f"{SELECTOR}._domainkey.{DOMAIN}.".encode()
        return record

    assert dkim.verify(raw, dnsfunc=dns), "the DKIM signature does not verify"
    message = email.message_from_bytes(raw, policy=email.policy.compat32)
    tags = re.sub(r"\s+", "", str(message["DKIM-Signature"]))
    signed = re.search(r"(?:^|;)h=([^;]+)", tags)
    assert signed, tags
    return {name.lower() for name in signed.group(1).split(":")}


def test_a_digest_scores_low_and_its_signature_covers_the_bulk_headers(
    service, faulty_smtp_server, dkim_key, spamassassin, tmp_path
):
    db, settings = service
    raw = digest_bytes(db, settings, faulty_smtp_server)

    assert_clean("digest", *spam_report(spamassassin, raw, tmp_path))

    signed = verified_headers(raw, dkim_key[1])
    assert signed >= DIGEST_SIGNED, sorted(signed)


def test_a_confirmation_scores_low_and_is_signed_without_bulk_headers(
    service, faulty_smtp_server, dkim_key, spamassassin, tmp_path
):
    db, settings = service
    raw = confirmation_bytes(db, settings, faulty_smtp_server)

    assert_clean("confirmation", *spam_report(spamassassin, raw, tmp_path))

    signed = verified_headers(raw, dkim_key[1])
    assert signed >= CONFIRMATION_SIGNED, sorted(signed)
    # A mail the person asked for, one at a time: no list headers. Their names are in h=
    # all the same, signed as absent (RFC 6376 5.4), so none can be added on the way.
    headers = raw.partition(b"\r\n\r\n")[0].lower()
    assert b"\nlist-unsubscribe" not in headers and b"\nlist-id" not in headers
    assert {"list-id", "list-unsubscribe", "list-unsubscribe-post"} <= signed
    added = raw.replace(b"\r\nSubject:", b"\r\nList-Id: <other.example>\r\nSubject:", 1)
    assert added != raw
    with pytest.raises(AssertionError, match="does not verify"):
        verified_headers(added, dkim_key[1])


def test_a_broken_signature_is_caught(service, faulty_smtp_server, dkim_key):
    # The verifier is not a yes-sayer: one changed header and it refuses.
    db, settings = service
    raw = confirmation_bytes(db, settings, faulty_smtp_server)
    tampered = re.sub(rb"(?m)^Subject: ", b"Subject: Re: ", raw, count=1)
    with pytest.raises(AssertionError, match="does not verify"):
        verified_headers(tampered, dkim_key[1])
