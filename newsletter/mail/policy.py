"""The email policy of a bulk sender: CRLF, plain headers written as they are, one-click URIs."""

from __future__ import annotations

import base64
import re
from email import policy as email_policy
from email.headerregistry import HeaderRegistry, UnstructuredHeader
from typing import Any


class _UriListHeader(UnstructuredHeader):
    """A `<uri>, <uri>` header (List-Unsubscribe), folded between URIs and never encoded.

    The stock folding turns a long URL into RFC 2047 encoded words, which no mail client
    reads as a link: the one-click unsubscribe would silently stop working.
    """

    def fold(self, *, policy: Any) -> str:
        uris = re.split(r"(?<=>)\s*,\s*", str(self).strip())
        name = self.name  # type: ignore[attr-defined]  # set by the header registry
        return f"{name}: " + ("," + policy.linesep + " ").join(uris) + policy.linesep


class _CachedRegistry(HeaderRegistry):
    """The stock registry builds a new header class on every lookup: ~10 µs per header."""

    # Benchmark: tests/perf/bench_delivery.py, "sender CPU per message".

    def __init__(self) -> None:
        super().__init__()
        self._classes: dict[str, Any] = {}

    def map_to_type(self, name: str, cls: Any) -> None:
        super().map_to_type(name, cls)
        self._classes.clear()

    def __getitem__(self, name: str) -> Any:
        key = name.lower()
        if key not in self._classes:
            self._classes[key] = super().__getitem__(name)
        return self._classes[key]


_URI_LIST = re.compile(r"<[^\s<>,]+>(?:, <[^\s<>,]+>)*")


def _plain(value: object) -> bool:
    # ASCII text that cannot be mistaken for an RFC 2047 encoded word needs no parsing.
    return isinstance(value, str) and value.isascii() and "=?" not in value


# MIME headers are read many times while a message is written: keep them parsed.
_PARSED_HEADERS = frozenset({"content-type", "content-transfer-encoding", "mime-version"})


class _BulkPolicy(email_policy.EmailPolicy):
    """email.policy.SMTP, minus the cost of parsing and refolding every plain header.

    The stock policy parses each header when it is set and refolds it when written: about
    40 µs a header, more than all the rest of a message. Plain short headers are stored and
    written as they are; anything else (non-ASCII, long) still takes the stock path. Reading a
    header (message["To"]) parses it as usual.
    """

    # Both overrides: tests/perf/bench_delivery.py, "sender CPU per message" and "ratio ours/raw".

    def header_store_parse(self, name: str, value: Any) -> tuple[str, Any]:
        raw = _plain(value) or (name.lower() == "subject" and isinstance(value, str))
        if raw and name.lower() not in _PARSED_HEADERS and len(value.splitlines()) <= 1:
            return (name, value)
        return super().header_store_parse(name, value)

    def _fold(self, name: str, value: Any, refold_binary: bool = False) -> str:
        # A private method of EmailPolicy: the public fold() goes through it for every header.
        if _plain(value) and len(name) + 2 + len(value) <= (self.max_line_length or 998):
            return f"{name}: {value}{self.linesep}"
        if name.lower() == "list-unsubscribe" and _plain(value) and _URI_LIST.fullmatch(value):
            # What _UriListHeader.fold writes, without parsing the header first (one per
            # message). Benchmark: tests/perf/bench_delivery.py, "MIME encoding".
            uris = value.split(", ")
            return f"{name}: " + ("," + self.linesep + " ").join(uris) + self.linesep
        if name.lower() == "subject" and isinstance(value, str) and not value.isascii():
            return f"{name}: " + f"{self.linesep} ".join(_encoded_words(value)) + self.linesep
        return str(super()._fold(name, value, refold_binary))  # type: ignore[misc]


def _encoded_words(text: str, size: int = 42) -> list[str]:
    """RFC 2047 base64 words of at most `size` UTF-8 bytes each, never splitting a character."""
    # Instead of the header parser's refolding of a non-ASCII Subject (see _BulkPolicy).
    # Benchmark: tests/perf/bench_delivery.py, "sender CPU per message".
    data = text.encode("utf-8")
    words = []
    start = 0
    while start < len(data):
        end = min(start + size, len(data))
        while end < len(data) and data[end] & 0xC0 == 0x80:  # inside a multi-byte character
            end -= 1
        words.append(f"=?utf-8?b?{base64.b64encode(data[start:end]).decode('ascii')}?=")
        start = end
    return words


def _make_policy() -> email_policy.EmailPolicy:
    registry = _CachedRegistry()
    registry.map_to_type("list-unsubscribe", _UriListHeader)
    return _BulkPolicy(linesep="\r\n", header_factory=registry)


POLICY = _make_policy()  # CRLF line ends, as SMTP and DKIM want
# RFC 6532 headers (an address like zoë@example.org written as UTF-8, not as encoded words,
# which no mail client reads as an address): only for a message that travels by SMTPUTF8.
UTF8_POLICY = POLICY.clone(utf8=True)
