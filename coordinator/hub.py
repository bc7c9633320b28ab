"""Wakes WatchSaga streams when their saga has new events.

Watchers read events from the database; the hub only tells them when to look again. Local
commits publish directly; on PostgreSQL a LISTEN connection also relays other replicas'
``pg_notify``, so any replica serves any watch. Watchers poll slowly as well, so a lost
notification delays an event, never loses it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import defaultdict
from typing import Any, Iterable, Sequence

from sqlalchemy.engine import make_url

log = logging.getLogger("invsaga.coordinator.hub")


class EventHub:
    def __init__(self) -> None:
        self._waiters: dict[str, set[asyncio.Future]] = defaultdict(set)

    def subscribe(self, saga_id: str) -> asyncio.Future:
        """Register before reading, so a publish during the read is not missed."""
        future = asyncio.get_running_loop().create_future()
        self._waiters[saga_id].add(future)
        return future

    def unsubscribe(self, saga_id: str, future: asyncio.Future) -> None:
        waiters = self._waiters.get(saga_id)
        if waiters is not None:
            waiters.discard(future)
            if not waiters:
                del self._waiters[saga_id]

    def publish(self, committed: Iterable[tuple[str, Sequence[Any]]]) -> None:
        """Wake the watchers of each saga; the events committed for it are their result.

        An empty event list means "something changed, read the database".
        """
        for saga_id, events in committed:
            for future in self._waiters.get(saga_id, ()):
                if not future.done():
                    future.set_result(events)

    @property
    def watched(self) -> int:
        return len(self._waiters)


async def listen_postgres(database_url: str, channel: str, hub: EventHub, origin: str) -> None:
    """Relay ``NOTIFY channel, 'origin,id,id,...'`` to the hub until cancelled; reconnect on errors.

    Notifications this replica sent itself (``origin``) were already delivered from memory.
    """
    import psycopg

    url = make_url(database_url).set(drivername="postgresql").render_as_string(hide_password=False)
    while True:
        try:
            async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
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
