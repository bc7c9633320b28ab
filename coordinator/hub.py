"""Wakes WatchSaga streams when their saga has new events.

Watchers read events from the database; the hub tells them when to look again. Local
commits publish directly; a LISTEN connection also relays other replicas'
``pg_notify``, so any replica serves any watch. Watchers poll slowly as well, so a lost
notification delays an event, never loses it.

The hub also keeps a journal of the committed events of the sagas that started on this
replica, so that watching one of those costs no read. A journal is dropped as soon as it could
be incomplete: a gap in its sequence numbers, or word that another replica wrote events of
that saga. The journals are bounded by sagas (``keep``) and by bytes (``max_bytes``, an
estimate of the memory their events take): past either bound the journal of the saga that
finished first goes, then, if no finished saga is left, that of the oldest running one. A
finished saga's journal also goes ``linger`` seconds after it finished (a watcher that comes
later reads the database, as it does for any saga whose journal is gone), so that a replica
at rest holds none; when the last one goes, the process hands the memory freed since the last
time back to the system (glibc keeps freed memory otherwise; see ``release_free_memory``).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import ctypes.util
import gc
import logging
import time
from collections import OrderedDict, defaultdict
from typing import Any, Callable, Collection, Iterable, Sequence

import psycopg

from coordinator.commands import TERMINAL_EVENTS
from invsaga.runtime.db import conninfo

log = logging.getLogger("invsaga.coordinator.hub")

# What a SagaEvent held in Python takes beyond its serialized size: measured 0.85 to 1.45 KiB
# (the message, its Timestamp and its arena), whatever the size of its detail.
EVENT_OVERHEAD = 1024
JOURNAL_SAGAS = 20_000
JOURNAL_BYTES = 64 * 1024 * 1024
JOURNAL_LINGER = 30.0


def event_bytes(event: Any) -> int:
    """Estimated memory of one journalled event."""
    return event.ByteSize() + EVENT_OVERHEAD


def _malloc_trim() -> Callable[[int], int] | None:
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim
    except (OSError, AttributeError):  # not glibc
        return None


_MALLOC_TRIM = _malloc_trim()
# Released at rest only when at least this much was dropped from the journals since the last time.
RELEASE_AFTER_BYTES = 4 * 1024 * 1024


def release_free_memory() -> None:
    """Give the heap's free pages back to the system (glibc ``malloc_trim``; elsewhere nothing).

    Freed memory stays in the process otherwise, scattered between live blocks, so a burst of
    large sagas leaves the resident size high long after the sagas are gone.
    """
    # Objects in reference cycles (a failed call's exception and its frames, say) would keep
    # their blocks until the next full collection: collect them first, at rest, where it is cheap.
    gc.collect()
    if _MALLOC_TRIM is not None:
        _MALLOC_TRIM(0)


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


class _Journal:
    __slots__ = ("events", "bytes")

    def __init__(self) -> None:
        self.events: list[Any] = []
        self.bytes = 0


class EventHub:
    def __init__(
        self,
        keep: int = JOURNAL_SAGAS,
        max_bytes: int = JOURNAL_BYTES,
        linger: float = JOURNAL_LINGER,
        *,
        sizeof: Callable[[Any], int] = event_bytes,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._waiters: dict[str, set[Subscription]] = defaultdict(set)
        self._journals: OrderedDict[str, _Journal] = OrderedDict()  # by first event, oldest first
        self._finished: OrderedDict[str, float] = OrderedDict()  # saga → when it finished, first first
        self.keep = keep
        self.max_bytes = max_bytes
        self.linger = linger
        self.bytes = 0  # estimated memory of every journal
        self._dropped = 0  # bytes dropped since memory was last given back
        self._sizeof = sizeof
        self._clock = clock
        self._sweep: asyncio.TimerHandle | None = None

    def journal(self, saga_id: str) -> list[Any] | None:
        """Every committed event of the saga, from seq 1, or None if this replica lacks some."""
        journal = self._journals.get(saga_id)
        return None if journal is None else journal.events

    @property
    def journals(self) -> int:
        return len(self._journals)

    def _record(self, saga_id: str, events: Sequence[Any]) -> None:
        journal = self._journals.get(saga_id)
        if not events:  # written elsewhere: what is here may be incomplete
            if journal is not None:
                self._drop(saga_id)
            return
        if journal is not None:
            if events[0].seq != journal.events[-1].seq + 1:
                self._drop(saga_id)
                return
        elif events[0].seq == 1:
            journal = self._journals[saga_id] = _Journal()
        else:
            return
        journal.events.extend(events)
        size = sum(map(self._sizeof, events))
        journal.bytes += size
        self.bytes += size
        if events[-1].type in TERMINAL_EVENTS:  # at rest
            self._finished.pop(saga_id, None)  # finished again (after a resume or a cancel)
            self._finished[saga_id] = self._clock()
        elif saga_id in self._finished:  # going again
            del self._finished[saga_id]
        self._trim()

    def _drop(self, saga_id: str) -> None:
        journal = self._journals.pop(saga_id)
        self.bytes -= journal.bytes
        self._dropped += journal.bytes
        self._finished.pop(saga_id, None)

    def _trim(self) -> None:
        """Drop expired journals, then the first finished (else the oldest) while past a bound."""
        expired = self._clock() - self.linger
        finished = self._finished
        while finished:
            saga_id, at = next(iter(finished.items()))
            if at > expired:
                break
            self._drop(saga_id)
        while self._journals and (len(self._journals) > self.keep or self.bytes > self.max_bytes):
            self._drop(next(iter(finished)) if finished else next(iter(self._journals)))
        if finished and self._sweep is None:
            with contextlib.suppress(RuntimeError):  # no event loop: the next record trims
                delay = max(0.0, next(iter(finished.values())) + self.linger - self._clock())
                self._sweep = asyncio.get_running_loop().call_later(delay + 0.1, self._swept)

    def _swept(self) -> None:
        self._sweep = None
        self._trim()
        if not self._journals and self._dropped >= RELEASE_AFTER_BYTES:  # at rest after a load
            self._dropped = 0
            release_free_memory()

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
        except Exception as exc:  # the poll fallback covers the gap
            log.warning("event listener lost its connection: %s", exc)
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.sleep(1.0)
