"""coordinator.gate: new sagas admitted by the bytes they hold, first come first served."""

from __future__ import annotations

import asyncio

import pytest

from coordinator.gate import SAGA_COST, SagaGate
from invsaga.runtime.errors import ResourceExhausted

MIB = 1024 * 1024


async def test_small_sagas_pass_at_once_and_large_ones_wait_their_turn():
    gate = SagaGate(8 * SAGA_COST * MIB)  # room for 8 MiB of requests
    for k in range(8):
        await gate.acquire(f"s{k}", MIB, timeout=1)
    assert gate.used == 8 * SAGA_COST * MIB
    waiting = asyncio.create_task(gate.acquire("late", MIB, timeout=5))
    small = asyncio.create_task(gate.acquire("small", 100, timeout=5))
    await asyncio.sleep(0.05)
    assert not waiting.done() and not small.done()  # first come first served: the small one queues too
    gate.release("s0")
    await asyncio.wait_for(waiting, 1)
    await asyncio.sleep(0)
    assert not small.done()
    gate.release("s1")
    await asyncio.wait_for(small, 1)
    for key in ("late", "small", *(f"s{k}" for k in range(2, 8))):
        gate.release(key)
    assert gate.used == 0


async def test_a_saga_larger_than_the_budget_passes_alone():
    gate = SagaGate(SAGA_COST * MIB)
    await gate.acquire("huge", 10 * MIB, timeout=1)
    second = asyncio.create_task(gate.acquire("next", 1, timeout=5))
    await asyncio.sleep(0.05)
    assert not second.done()
    gate.release("huge")
    await asyncio.wait_for(second, 1)


async def test_a_wait_past_the_callers_deadline_is_resource_exhausted_and_holds_nothing():
    gate = SagaGate(SAGA_COST * MIB)
    await gate.acquire("first", MIB, timeout=1)
    with pytest.raises(ResourceExhausted) as caught:
        await gate.acquire("second", MIB, timeout=0.2)
    assert caught.value.reason == "COORDINATOR_BUSY"
    gate.release("second")  # a refused saga holds nothing
    assert gate.used == SAGA_COST * MIB
    gate.release("first")
    assert gate.used == 0
    await gate.acquire("third", MIB, timeout=1)  # the queue was not left blocked


async def test_a_cancelled_waiter_leaves_the_queue():
    gate = SagaGate(SAGA_COST * MIB)
    await gate.acquire("first", MIB, timeout=1)
    waiter = asyncio.create_task(gate.acquire("gone", MIB, timeout=5))
    behind = asyncio.create_task(gate.acquire("behind", MIB, timeout=5))
    await asyncio.sleep(0.05)
    waiter.cancel()
    await asyncio.sleep(0)
    gate.release("first")
    await asyncio.wait_for(behind, 1)
    assert gate.used == SAGA_COST * MIB
