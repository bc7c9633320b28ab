"""Admission of new sagas by the memory they hold: a budget of bytes, first come first served.

A saga holds its request several times over while StartSaga writes it and while it runs (the
parsed request, the saga's copy, each save's serialized state, the database driver's
parameters): about ``SAGA_COST`` times its size. Counting sagas alone (``max_concurrent_sagas``)
lets forty 1 MiB sagas in at once; this gate holds a StartSaga until the sagas already admitted
leave room for it, and refuses it (RESOURCE_EXHAUSTED, ``COORDINATOR_BUSY``) if that takes
longer than its deadline allows. A saga bigger than the whole budget is let in when nothing
else holds any. Small sagas pass at once: the budget is far above what they need together.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque

from invsaga.runtime.errors import ResourceExhausted

# What one request byte costs the coordinator while its saga is admitted (measured: about 8
# while StartSaga writes it, 3 while it runs; see docs/benchmarks.md, coordinator memory).
SAGA_COST = 4
MAX_WAIT = 30.0


class SagaGate:
    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0
        self._held: dict[str, int] = {}
        self._waiting: deque[tuple[str, int, asyncio.Future]] = deque()

    def _fits(self, weight: int) -> bool:
        return self.used == 0 or self.used + weight <= self.limit

    def _take(self, key: str, weight: int) -> None:
        self._held[key] = self._held.get(key, 0) + weight
        self.used += weight

    async def acquire(self, key: str, size: int, timeout: float | None) -> None:
        """Hold ``SAGA_COST * size`` bytes for ``key`` (a saga id) until ``release(key)``."""
        weight = SAGA_COST * size
        if not self._waiting and self._fits(weight):
            self._take(key, weight)
            return
        granted = asyncio.get_running_loop().create_future()
        entry = (key, weight, granted)
        self._waiting.append(entry)
        wait = MAX_WAIT if timeout is None else max(0.0, min(MAX_WAIT, timeout - 0.1))
        try:
            await asyncio.wait_for(granted, wait)
        except asyncio.TimeoutError:
            raise ResourceExhausted(
                "the coordinator is busy with large sagas; retry later",
                reason="COORDINATOR_BUSY",
                metadata={"size": str(size)},
            ) from None
        finally:
            if not granted.done() or granted.cancelled():
                with contextlib.suppress(ValueError):
                    self._waiting.remove(entry)
                self._wake()

    def release(self, key: str) -> None:
        weight = self._held.pop(key, 0)
        if weight:
            self.used -= weight
            self._wake()

    def _wake(self) -> None:
        while self._waiting:
            key, weight, granted = self._waiting[0]
            if granted.done():  # given up
                self._waiting.popleft()
                continue
            if not self._fits(weight):
                return
            self._waiting.popleft()
            self._take(key, weight)
            granted.set_result(None)
