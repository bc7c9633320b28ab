"""The event hub hands every published event to a watcher, however busy the watcher is."""

import asyncio
from types import SimpleNamespace

from coordinator.hub import EventHub


def ev(seq, type=0):
    return SimpleNamespace(seq=seq, type=type)


async def test_events_published_while_the_watcher_is_busy_all_reach_it():
    hub = EventHub()
    sub = hub.subscribe("S1")
    # Two commits land before the watcher looks again (it is still writing earlier events).
    hub.publish([("S1", [ev(1), ev(2)])])
    hub.publish([("S1", [ev(3)])])
    await asyncio.wait_for(sub.wait(5.0), 1.0)  # returns at once: something is waiting
    events, stale = sub.take()
    assert [e.seq for e in events] == [1, 2, 3] and not stale
    assert sub.take() == ([], False)


async def test_word_from_another_replica_marks_the_subscription_stale_and_wakes_it():
    hub = EventHub()
    sub = hub.subscribe("S1")
    waiting = asyncio.ensure_future(sub.wait(5.0))
    await asyncio.sleep(0)
    hub.publish([("S1", ())])
    await asyncio.wait_for(waiting, 1.0)
    assert sub.take() == ([], True)


async def test_wait_ends_after_the_poll_interval_when_nothing_is_published():
    hub = EventHub()
    sub = hub.subscribe("S1")
    hub.publish([("S2", [ev(1)])])
    await sub.wait(0.01)
    assert sub.take() == ([], False)
    hub.unsubscribe("S1", sub)
    assert hub.watched == 0


async def test_a_filtered_subscription_is_woken_only_by_the_types_it_asked_for_and_keeps_the_rest():
    hub = EventHub()
    sub = hub.subscribe("S1", wake_on={10})
    waiting = asyncio.ensure_future(sub.wait(5.0))
    hub.publish([("S1", [ev(1, 2), ev(2, 3)])])
    await asyncio.sleep(0.05)
    assert not waiting.done()
    hub.publish([("S1", [ev(3, 2), ev(4, 10)])])
    await asyncio.wait_for(waiting, 1.0)
    events, stale = sub.take()
    assert [e.seq for e in events] == [1, 2, 3, 4] and not stale
    # Events that do not wake it wait for its next look, and do not end the next wait early.
    hub.publish([("S1", [ev(5, 2)])])
    loop = asyncio.get_running_loop()
    began = loop.time()
    await asyncio.wait_for(sub.wait(0.2), 1.0)
    assert loop.time() - began >= 0.15  # the whole poll interval
    assert [e.seq for e in sub.take()[0]] == [5]
    # Word from another replica wakes any subscription.
    waiting = asyncio.ensure_future(sub.wait(5.0))
    await asyncio.sleep(0)
    hub.publish([("S1", ())])
    await asyncio.wait_for(waiting, 1.0)
    assert sub.take() == ([], True)
