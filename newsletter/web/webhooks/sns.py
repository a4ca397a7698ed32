"""Amazon SNS messages (how SES reports): the signature checked against SNS's certificate."""

from __future__ import annotations

import base64
import binascii
import re
import threading
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import httpx
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from newsletter.config import Settings
from newsletter.web.webhooks.verify import Forged

# Only AWS's SNS endpoints serve its signing certificates (and confirmation URLs).
_SNS_HOST = re.compile(r"^sns\.[a-z0-9-]+\.amazonaws\.com(\.cn)?$")
_SIGNED_KEYS = {
    "Notification": ("Message", "MessageId", "Subject", "Timestamp", "TopicArn", "Type"),
    "SubscriptionConfirmation": (
        "Message",
        "MessageId",
        "SubscribeURL",
        "Timestamp",
        "Token",
        "TopicArn",
        "Type",
    ),
}
_SIGNED_KEYS["UnsubscribeConfirmation"] = _SIGNED_KEYS["SubscriptionConfirmation"]
_HASHES = {"1": hashes.SHA1, "2": hashes.SHA256}
FETCH_TIMEOUT = 5.0  # seconds: a certificate fetch holds up one webhook, never a send


def allowed_url(settings: Settings, url: str, *, pem: bool) -> bool:
    """Whether `url` is https on an SNS host (or a test host the settings allow)."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return False
    if parts.scheme != "https" or not parts.hostname or parts.username or parts.password:
        return False
    host = parts.hostname.lower()
    named = f"{host}:{port}" if port else host
    if named not in settings.sns_cert_hosts and not (port in (None, 443) and _SNS_HOST.match(host)):
        return False
    return not pem or (parts.path.endswith(".pem") and not parts.query)


class CertificateCache:
    """SNS signing certificates by URL, fetched once per process, kept while valid."""

    def __init__(self) -> None:
        self._certs: dict[str, x509.Certificate] = {}
        self._lock = threading.Lock()

    def public_key(self, settings: Settings, url: str) -> rsa.RSAPublicKey:
        """The RSA key of the certificate at `url` (an allowed URL), or Forged."""
        if not allowed_url(settings, url, pem=True):
            raise Forged(f"SigningCertURL {url[:200]!r} is not an SNS certificate URL")
        with self._lock:
            cert = self._certs.get(url)
        if cert is None:
            cert = _fetch_certificate(settings, url)
            with self._lock:
                if len(self._certs) > 64:  # SNS rotates rarely; a flood of URLs is not kept
                    self._certs.clear()
                self._certs[url] = cert
        now = datetime.now(UTC)
        if not cert.not_valid_before_utc <= now <= cert.not_valid_after_utc:
            raise Forged("the SNS signing certificate is expired or not yet valid")
        key = cert.public_key()
        if not isinstance(key, rsa.RSAPublicKey):
            raise Forged("the SNS signing certificate has no RSA key")
        return key


def _client(settings: Settings) -> httpx.Client:
    verify: Any = str(settings.sns_ca_file) if settings.sns_ca_file else True
    return httpx.Client(timeout=FETCH_TIMEOUT, verify=verify, follow_redirects=False)


def _fetch_certificate(settings: Settings, url: str) -> x509.Certificate:
    try:
        with _client(settings) as client:
            response = client.get(url)
            response.raise_for_status()
        return x509.load_pem_x509_certificate(response.content)
    except (httpx.HTTPError, ValueError) as error:
        raise Forged(f"the SNS certificate could not be had: {error}") from None


def signed_string(message: dict[str, Any]) -> bytes:
    """What SNS signs: each signed key present, "key\\nvalue\\n", in this order."""
    keys = _SIGNED_KEYS.get(str(message.get("Type")))
    if keys is None:
        raise Forged(f"unknown SNS message type {str(message.get('Type'))[:40]!r}")
    return "".join(
        f"{key}\n{message[key]}\n" for key in keys if isinstance(message.get(key), str)
    ).encode()


def verify_message(settings: Settings, certs: CertificateCache, message: dict[str, Any]) -> None:
    """Forged unless the topic is ours and the signature verifies (SignatureVersion 1 or 2)."""
    if message.get("TopicArn") not in settings.webhook_ses_topics:
        raise Forged("the message is from a topic not configured")
    algorithm = _HASHES.get(str(message.get("SignatureVersion")))
    if algorithm is None:
        raise Forged("unknown SignatureVersion")
    data = signed_string(message)  # before any fetch: a malformed message costs nothing
    try:
        signature = base64.b64decode(str(message.get("Signature", "")), validate=True)
    except binascii.Error:
        raise Forged("the signature is not base64") from None
    key = certs.public_key(settings, str(message.get("SigningCertURL", "")))
    try:
        key.verify(signature, data, padding.PKCS1v15(), algorithm())
    except InvalidSignature:
        raise Forged("the SNS signature does not verify") from None


def confirm_subscription(settings: Settings, message: dict[str, Any]) -> None:
    """GET the SubscribeURL of a verified SubscriptionConfirmation (an SNS host only)."""
    url = str(message.get("SubscribeURL", ""))
    if not allowed_url(settings, url, pem=False):
        raise Forged(f"SubscribeURL {url[:200]!r} is not on an SNS host")
    with _client(settings) as client:
        client.get(url).raise_for_status()
