"""The event hub hands every published event to a watcher, however busy the watcher is."""

import asyncio
from types import SimpleNamespace

from coordinator.hub import EventHub


def ev(seq, type=0):
    return SimpleNamespace(seq=seq, type=type, ByteSize=lambda: 10)


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


# --- The journal's bounds -------------------------------------------------------------------


def sev(saga_id, seq, type=0):
    """A SagaEvent; the hubs below count each as 100 bytes."""
    from invsaga.coordinator.v1 import coordinator_pb2 as pb

    return pb.SagaEvent(saga_id=saga_id, seq=seq, type=type or pb.SAGA_EVENT_TYPE_STEP_STARTED)


def finished(saga_id):
    from invsaga.coordinator.v1 import coordinator_pb2 as pb

    return [sev(saga_id, 1), sev(saga_id, 2, pb.SAGA_EVENT_TYPE_SAGA_COMPLETED)]


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


def bounded_hub(**kw):
    kw.setdefault("linger", 3600.0)
    return EventHub(sizeof=lambda ev: 100, clock=kw.pop("clock", Clock()), **kw)


def test_past_its_byte_bound_the_journal_drops_the_first_finished_sagas_before_any_running_one():
    hub = bounded_hub(max_bytes=1000)
    hub.publish([("R1", [sev("R1", 1), sev("R1", 2)])])  # running, the oldest
    hub.publish([("F1", finished("F1")), ("F2", finished("F2")), ("F3", finished("F3"))])
    assert hub.bytes == 800 and hub.journals == 4
    hub.publish([("R2", [sev("R2", 1), sev("R2", 2), sev("R2", 3)])])  # 1,100 bytes: F1 goes
    assert hub.journal("F1") is None and hub.bytes == 900
    hub.publish([("R2", [sev("R2", i) for i in range(4, 8)])])  # 1,300: F2 and F3 go
    assert hub.journal("F2") is None and hub.journal("F3") is None
    assert [e.seq for e in hub.journal("R1")] == [1, 2] and len(hub.journal("R2")) == 7
    assert hub.bytes == 900
    hub.publish([("R3", [sev("R3", 1), sev("R3", 2), sev("R3", 3)])])  # no finished saga left: R1 goes
    assert hub.journal("R1") is None and hub.journal("R2") is not None and hub.journal("R3") is not None
    assert hub.bytes == 1000
    # A dropped journal does not come back with the saga's next events (they are not from seq 1).
    hub.publish([("R1", [sev("R1", 3)])])
    assert hub.journal("R1") is None and hub.bytes == 1000


def test_one_saga_larger_than_the_bound_is_not_kept():
    hub = bounded_hub(max_bytes=250)
    hub.publish([("F1", finished("F1"))])
    hub.publish([("BIG", [sev("BIG", i) for i in range(1, 4)])])
    assert hub.journal("BIG") is None and hub.journal("F1") is None and hub.bytes == 0


def test_past_its_saga_bound_the_journal_also_drops_finished_sagas_first():
    hub = bounded_hub(keep=2)
    hub.publish([("R1", [sev("R1", 1)])])
    hub.publish([("F1", finished("F1"))])
    hub.publish([("R2", [sev("R2", 1)])])
    assert hub.journals == 2 and hub.journal("F1") is None and hub.bytes == 200


def test_a_resumed_saga_counts_as_running_until_it_finishes_again():
    from invsaga.coordinator.v1 import coordinator_pb2 as pb

    hub = bounded_hub(max_bytes=700)
    hub.publish([("A", finished("A")), ("B", finished("B"))])
    hub.publish([("A", [sev("A", 3)])])  # resumed: running again
    hub.publish([("C", [sev("C", 1), sev("C", 2), sev("C", 3)])])  # 800 bytes: B (finished) goes, not A
    assert hub.journal("B") is None and len(hub.journal("A")) == 3
    hub.publish([("A", [sev("A", 4, pb.SAGA_EVENT_TYPE_SAGA_COMPENSATED)])])
    hub.publish([("D", [sev("D", 1)])])  # A finished again and is the only finished one: it goes
    assert hub.journal("A") is None and hub.journal("C") is not None and hub.bytes == 400


def test_a_finished_sagas_journal_goes_after_the_linger_time_and_a_running_ones_stays():
    clock = Clock()
    hub = bounded_hub(linger=30.0, clock=clock)
    hub.publish([("F1", finished("F1")), ("R1", [sev("R1", 1)])])
    clock.now += 29
    hub.publish([("F2", finished("F2"))])
    assert hub.journals == 3
    clock.now += 2
    hub.publish([("R1", [sev("R1", 2)])])
    assert hub.journal("F1") is None and hub.journal("F2") is not None and hub.journal("R1") is not None
    assert hub.bytes == 400


async def test_at_rest_the_linger_timer_empties_the_journal_without_further_publishes():
    hub = EventHub(linger=0.01)
    hub.publish([("F1", finished("F1"))])
    assert hub.journals == 1 and hub.bytes > 0
    for _ in range(200):
        if not hub.journals:
            break
        await asyncio.sleep(0.01)
    assert hub.journals == 0 and hub.bytes == 0


def test_the_estimate_counts_each_event_above_its_serialized_size():
    from coordinator.hub import EVENT_OVERHEAD

    hub = EventHub()
    events = finished("F1")
    events[1].detail.message = "x" * 500
    hub.publish([("F1", events)])
    assert hub.bytes == sum(e.ByteSize() for e in events) + 2 * EVENT_OVERHEAD


class FakeStore:
    """The database side of WatchSaga: every event of one saga, and whether it is at rest."""

    def __init__(self, events, status):
        self.events, self.status, self.reads = events, status, 0

    async def status_of(self, saga_id, tenant=None):
        return self.status

    async def events_after(self, saga_id, after, limit=None):
        self.reads += 1
        found = [e for e in self.events if e.seq > after]
        return found[:limit] if limit else found


async def test_a_watcher_of_a_saga_whose_journal_was_dropped_gets_every_event_from_the_database():
    from coordinator.server import CoordinatorServicer
    from invsaga.coordinator.v1 import coordinator_pb2 as pb

    saga = [sev("S1", 1), sev("S1", 2), sev("S1", 3, pb.SAGA_EVENT_TYPE_SAGA_COMPLETED)]
    for e in saga:
        e.status = pb.SAGA_STATUS_COMPLETED if e.seq == 3 else pb.SAGA_STATUS_RUNNING
    hub = bounded_hub(max_bytes=300)
    store = FakeStore(saga, pb.SAGA_STATUS_COMPLETED)
    servicer = CoordinatorServicer(SimpleNamespace(known=set()), store, hub, None)

    async def watch(after):
        request = pb.WatchSagaRequest(saga_id="S1", after_seq=after)
        return [r.event.seq async for r in servicer.WatchSaga(request, None)]

    hub.publish([("S1", saga)])
    assert await watch(1) == [2, 3] and store.reads == 0  # from the journal
    hub.publish([("S2", [sev("S2", 1)])])  # past the bound: S1's journal goes
    assert hub.journal("S1") is None
    assert await watch(1) == [2, 3] and store.reads >= 1
    assert await watch(0) == [1, 2, 3]
