"""Wakes WatchSaga streams when their saga has new events.

Watchers read events from the database; the hub tells them when to look again. Local
commits publish directly; a LISTEN connection also relays other replicas'
``pg_notify``, so any replica serves any watch. Watchers poll slowly as well, so a lost
notification delays an event, never loses it.

The hub also keeps a journal of the committed events of the sagas that started on this
replica (the most recent ``keep`` of them), so that watching one of those costs no read. A
journal is dropped as soon as it could be incomplete: a gap in its sequence numbers, or word
that another replica wrote events of that saga.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import OrderedDict, defaultdict
from typing import Any, Collection, Iterable, Sequence

import psycopg

from invsaga.runtime.db import conninfo

log = logging.getLogger("invsaga.coordinator.hub")


class Subscription:
    """One watcher's mailbox: what was published for its saga since it last looked.

    It stays registered across the watcher's reads and writes, so a publish that comes while
    the watcher is busy (sending the events of the one before, say) waits here for it.
    """

    __slots__ = ("events", "stale", "wake_on", "_ready", "_waiter")

    def __init__(self, wake_on: Collection[int] | None = None) -> None:
        self.events: list[Any] = []  # committed events handed over, in order
        self.stale = False  # something changed that only the database shows
        self.wake_on = wake_on  # event types that wake the watcher (None: all)
        self._ready = False  # something that wakes the watcher came since it last looked
        self._waiter: asyncio.Future | None = None

    def put(self, events: Sequence[Any]) -> None:
        if events:
            self.events.extend(events)
            if self.wake_on is not None and not any(ev.type in self.wake_on for ev in events):
                return  # kept for the watcher's next look
        else:
            self.stale = True
        self._ready = True
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def wait(self, timeout: float) -> None:
        """Until something that wakes it is published (at once if it already was), or ``timeout`` passes."""
        if self._ready:
            return
        self._waiter = asyncio.get_running_loop().create_future()
        try:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._waiter, timeout)
        finally:
            self._waiter = None

    def take(self) -> tuple[list[Any], bool]:
        """The events handed over and whether the database must be read; both reset."""
        events, stale = self.events, self.stale
        self.events, self.stale, self._ready = [], False, False
        return events, stale


class EventHub:
    def __init__(self, keep: int = 20_000) -> None:
        self._waiters: dict[str, set[Subscription]] = defaultdict(set)
        self._journals: OrderedDict[str, list[Any]] = OrderedDict()
        self.keep = keep

    def journal(self, saga_id: str) -> list[Any] | None:
        """Every committed event of the saga, from seq 1, or None if this replica lacks some."""
        return self._journals.get(saga_id)

    def _record(self, saga_id: str, events: Sequence[Any]) -> None:
        journal = self._journals.get(saga_id)
        if not events:  # written elsewhere: what is here may be incomplete
            if journal is not None:
                del self._journals[saga_id]
        elif journal is not None:
            if events[0].seq == journal[-1].seq + 1:
                journal.extend(events)
            else:
                del self._journals[saga_id]
        elif events[0].seq == 1:
            self._journals[saga_id] = list(events)
            if len(self._journals) > self.keep:
                self._journals.popitem(last=False)

    def subscribe(self, saga_id: str, wake_on: Collection[int] | None = None) -> Subscription:
        """Register before reading, so a publish during the read is not missed.

        ``wake_on``: only events of these types wake the watcher; the others are kept for
        when it next looks (None: every event wakes it).
        """
        subscription = Subscription(wake_on)
        self._waiters[saga_id].add(subscription)
        return subscription

    def unsubscribe(self, saga_id: str, subscription: Subscription) -> None:
        waiters = self._waiters.get(saga_id)
        if waiters is not None:
            waiters.discard(subscription)
            if not waiters:
                del self._waiters[saga_id]

    def publish(self, committed: Iterable[tuple[str, Sequence[Any]]]) -> None:
        """Hand each saga's committed events to its watchers and wake them.

        An empty event list means "something changed, read the database".
        """
        for saga_id, events in committed:
            self._record(saga_id, events)
            for subscription in self._waiters.get(saga_id, ()):
                subscription.put(events)

    @property
    def watched(self) -> int:
        return len(self._waiters)


async def listen_postgres(database_url: str, channel: str, hub: EventHub, origin: str) -> None:
    """Relay ``NOTIFY channel, 'origin,id,id,...'`` to the hub until cancelled; reconnect on errors.

    Notifications this replica sent itself (``origin``) were already delivered from memory.
    """
    while True:
        try:
            async with await psycopg.AsyncConnection.connect(conninfo(database_url), autocommit=True) as conn:
                await conn.execute(f"LISTEN {channel}")
                async for note in conn.notifies():
                    sender, *saga_ids = note.payload.split(",")
                    if sender != origin:
                        hub.publish((saga_id, ()) for saga_id in saga_ids)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the poll fallback covers the gap
            log.warning("event listener lost its connection: %s", exc)
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.sleep(1.0)
