"""The event hub hands every published event to a watcher, however busy the watcher is."""

import asyncio
from types import SimpleNamespace

from coordinator.hub import EventHub


def ev(seq):
    return SimpleNamespace(seq=seq)


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
