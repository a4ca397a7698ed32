"""The HTTP protocol the server speaks: uvicorn's h11, telling the app of a malformed body."""

from __future__ import annotations

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

# Set in a request's scope when its body broke the protocol (a bad chunk, say): uvicorn has
# logged it and answered 400, so the app, which then sees the client gone, says nothing more.
MALFORMED_BODY = "newsletter.malformed_body"


class OneLineH11Protocol(H11Protocol):
    """uvicorn's h11 protocol; a malformed request body makes one log line, not two."""

    def handle_events(self) -> None:
        super().handle_events()
        cycle = self.cycle
        if cycle is not None and not cycle.response_complete and self.conn.their_state is h11.ERROR:
            cycle.scope[MALFORMED_BODY] = True  # type: ignore[literal-required]
