"""The next digest is rendered while the relay takes in the last; marks still follow each 250."""

from __future__ import annotations

import time
from collections import Counter
from typing import Any

import pytest
from sqlalchemy import select

from newsletter import pipeline
from newsletter.models import SENDING, SENT, Delivery, Subscriber
from newsletter.pipeline.digests import Digests
from tests.integration.test_overlapping_senders import plan_readers, slow_relay  # noqa: F401, F811

pytestmark = pytest.mark.integration

RELAY_SECONDS = 0.15  # the relay's time over each message's data
RENDER_SECONDS = 0.15  # each digest's rendering, slowed down to the same


def test_rendering_overlaps_the_relay_and_each_mark_follows_its_250(
    db,
    settings,
    slow_relay,  # noqa: F811
):
    count = 8
    first, *ids = plan_readers(db, count + 1)
    settings = settings.model_copy(update={"smtp_url": slow_relay.url, "batch_size": count})
    # One digest first: the edition's renderer inlines its templates once, on its first one.
    caches = pipeline.EditionCaches()
    assert pipeline.deliver(db, settings, ids=[first], edition_caches=caches).sent == 1
    slow_relay.delay = RELAY_SECONDS
    states_at_data: list[str] = []
    relay_data = slow_relay.handle_DATA

    async def data_then_check(server: Any, session: Any, envelope: Any) -> str:
        reply = await relay_data(server, session, envelope)
        # The relay has the message and has not answered yet: its row is not marked sent.
        with db.session() as check:
            states_at_data.append(
                check.scalar(
                    select(Delivery.state)
                    .join(Subscriber)
                    .where(Subscriber.email == envelope.rcpt_tos[0])
                )
            )
        return reply

    slow_relay.handle_DATA = data_then_check
    wire = Digests.wire

    def slow_wire(self: Digests, *args: Any) -> Any:
        time.sleep(RENDER_SECONDS)
        return wire(self, *args)

    started = time.monotonic()
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(Digests, "wire", slow_wire)
        report = pipeline.deliver(db, settings, ids=ids, edition_caches=caches)
    elapsed = time.monotonic() - started
    assert (report.sent, report.retry, report.failed) == (count, 0, 0)
    # One after the other would take count x (render + relay): 2.4 s; overlapped about half.
    serial = count * (RELAY_SECONDS + RENDER_SECONDS)
    assert elapsed < 0.75 * serial, f"{elapsed:.2f} s: rendering did not overlap the relay"
    assert states_at_data == [SENDING] * count
    assert set(slow_relay.per_recipient().values()) == {1}
    with db.session() as session:
        assert Counter(session.scalars(select(Delivery.state))) == {SENT: count + 1}
