"""A batch's claim on its ledger rows: the holder token, and a lease renewed while it sends."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from typing import Any

from newsletter import storage
from newsletter.config import Settings

log = logging.getLogger(__name__)


class Claim:
    """One batch's claim: its holder token, and a lease kept alive while the batch sends.

    The lease is taken from the clock at the claim and renewed whenever a third of it has
    passed, so each message starts with at least two thirds of a lease ahead of it.
    """

    def __init__(self, settings: Settings, clock: Callable[[], datetime]) -> None:
        self.holder = storage.new_claim_token()
        self.clock = clock
        self.seconds = settings.lease_seconds
        self.renewed = time.monotonic()

    def claim(self, session: Any, ids: Sequence[int]) -> list[storage.ClaimedDelivery]:
        """Claim `ids` for this holder; returns the rows it got."""
        # Read the clocks before the UPDATE: the lease is then never later than it seems.
        self.renewed, now = time.monotonic(), self.clock()
        claimed = storage.claim_deliveries(session, ids, now, self.seconds, self.holder)
        return storage.load_claimed(session, claimed, self.holder)

    def keep(
        self, ledger: Any, pending: list[storage.ClaimedDelivery]
    ) -> list[storage.ClaimedDelivery]:
        """The rows of `pending` this claim still holds, their lease renewed when it is due."""
        if not pending or time.monotonic() - self.renewed < self.seconds / 3:
            return pending
        self.renewed, now = time.monotonic(), self.clock()
        until = now + timedelta(seconds=self.seconds)
        held = storage.renew_leases(ledger, [row.id for row in pending], self.holder, until)
        if len(held) < len(pending):
            # Only a lease that ran out (a stalled sender) lets another sender take a row.
            log.warning(
                "deliver: %d digests of this batch were taken over by another sender; "
                "leaving them to it",
                len(pending) - len(held),
            )
        return [row for row in pending if row.id in held]

    def lost(self, row: storage.ClaimedDelivery) -> None:
        """A mark found `row` held by another sender: check the rest before the next send."""
        log.warning("deliver %d to %s: no longer this sender's claim", row.id, row.email)
        self.renewed = float("-inf")


def clock_from(start: datetime | None) -> Callable[[], datetime]:
    """The time now; for a run told it starts at `start`, `start` plus the time since then."""
    if start is None:
        return storage.utcnow
    began = time.monotonic()
    return lambda: start + timedelta(seconds=time.monotonic() - began)
