"""The sagas' journal: their durable record and their events, in one place.

It owns what the driver and the servicer need of storage: the group-committed writes of the
store (``SagaStore`` and its writer: creates, pipelined saves, leases, cancels, resumes),
publishing to watchers (``EventHub``: this replica's commits handed over from memory, other
replicas' through LISTEN/NOTIFY), and ``watch(saga_id, after_seq)``, the stream WatchSaga
serves. A saga's status is the ``status`` column's: loads put it into the saga (``SagaStore``).
"""

from __future__ import annotations

from typing import Any, AsyncIterator, Callable

from coordinator import lifecycle
from coordinator.commands import TERMINAL_EVENTS, TERMINAL_STATUSES
from coordinator.hub import EventHub
from coordinator.store import SagaStore
from coordinator.views import WATCH_POLL_SECONDS, ends_reservation
from invsaga.coordinator.v1 import coordinator_pb2 as pb


# What the journal hands on from the store: writes (each through the group writer: creates,
# pipelined saves, leases, cancels, resumes) and reads.
_STORE = frozenset(
    {
        "create",
        "request_id_taken",
        "save",
        "request_cancel",
        "claim_failed",
        "renew",
        "claim_orphans",
        "release_all",
        "load",
        "list",
        "status_of",
        "cancel_reason",
        "events_after",
        "status_and_reservation",
    }
)


class Journal:
    def __init__(self, store: SagaStore, hub: EventHub, driving: Callable[[str], bool]) -> None:
        self.store = store
        self.hub = hub
        self.driving = driving  # whether this replica has the saga queued or under way

    def __getattr__(self, name: str) -> Any:
        """The store's writes (through its group writer) and reads, as the store has them."""
        if name in _STORE:
            return getattr(self.store, name)
        raise AttributeError(name)

    async def exists(self, saga_id: str, tenant: str | None) -> bool:
        if tenant is not None:  # the in-memory journal does not know whose a saga is
            return await self.store.status_of(saga_id, tenant) is not None
        return self.hub.journal(saga_id) is not None or await self.store.status_of(saga_id) is not None

    async def watch(
        self, saga_id: str, after_seq: int, wanted: frozenset[int] | None, follow: bool
    ) -> AsyncIterator[pb.SagaEvent]:
        """The saga's events after ``after_seq`` (of the ``wanted`` types), live, until it is at
        rest: its terminal event, or, ``follow``ed, its reservation's end."""
        last = after_seq
        # Without follow_reservation the stream is the saga's: the reservation's later changes
        # (after the terminal event) are not sent, and the terminal event ends it as before.
        ended = False  # a terminal event was seen
        events: list[pb.SagaEvent] | None = None  # None: read them from the journal or the database
        # Subscribed before the first read and until the end, so that nothing committed while
        # the stream reads or writes is missed. A filtered watcher is woken only by events it
        # sends or that may end the stream; the others wait in its mailbox.
        subscription = self.hub.subscribe(saga_id, None if wanted is None else wanted | set(TERMINAL_EVENTS))
        try:
            while True:
                if events is None:
                    journal = self.hub.journal(saga_id)
                    if journal is not None:
                        events = [ev for ev in journal if ev.seq > last]
                    else:
                        events = await self.store.events_after(saga_id, last)
                last_own = None  # the last event this watcher follows
                for ev in events:
                    later = ev.type in lifecycle.LIFECYCLE_EVENTS and ended
                    if not later or follow:
                        if wanted is None or ev.type in wanted:
                            yield ev
                        last_own = ev
                    ended = ended or ev.type in TERMINAL_EVENTS
                    last = ev.seq
                # A terminal event ends the stream unless the saga went on after it (a FAILED
                # saga resumed): a replay shows all of it. Followed, a COMPLETED saga's stream
                # ends with its reservation.
                if follow:
                    if (last_own is None or ends_reservation(last_own)) and await self._reservation_over(saga_id, last):
                        return
                else:
                    at_end = last_own is None or last_own.type in TERMINAL_EVENTS
                    if at_end and await self._at_rest(saga_id, last):
                        return
                await subscription.wait(WATCH_POLL_SECONDS)
                live, stale = subscription.take()
                live = [ev for ev in live if ev.seq > last]  # some may have been read already
                # Events handed over from this replica's own commits need no read.
                events = live if live and not stale and live[0].seq == last + 1 else None
        finally:
            self.hub.unsubscribe(saga_id, subscription)

    async def _at_rest(self, saga_id: str, last_seq: int) -> bool:
        """Terminal, and no event after ``last_seq`` (a cancel or resume may be under way).

        This replica's journal answers without a read while it shows the saga still going
        (its next commit wakes the watcher), and once it shows it ended, unless the saga is
        queued here again (a cancel after COMPLETED, a resume): then the database decides.
        """
        journal = self.hub.journal(saga_id)
        if journal is not None:
            latest = journal[-1]
            if latest.seq > last_seq or latest.type not in TERMINAL_EVENTS:
                return False
            if not self.driving(saga_id):
                return True
        if await self.store.status_of(saga_id) not in TERMINAL_STATUSES:
            return False
        # The reservation's own changes after the saga's end do not count (``follow_reservation``).
        after = await self.store.events_after(saga_id, last_seq, limit=64)
        return all(ev.type in lifecycle.LIFECYCLE_EVENTS for ev in after)

    async def _reservation_over(self, saga_id: str, last_seq: int) -> bool:
        """Followed: the saga ended otherwise than COMPLETED, or its reservation ended, and no
        event came after ``last_seq``."""
        status, reservation = await self.store.status_and_reservation(saga_id)
        if status not in TERMINAL_STATUSES:
            return False
        if status == pb.SAGA_STATUS_COMPLETED and reservation in lifecycle.OPEN:
            return False
        return not await self.store.events_after(saga_id, last_seq, limit=1)
