"""The coordinator's notices: built to fit the notify limit, owed through a durable outbox
written with the saga's terminal state, delivered until acknowledged, stored exactly once.

Run as a script, the outage scenario runs at full size and prints its figures::

    .venv/bin/python -m tests.integration.test_notices 500 500
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
import time
import uuid
from collections import Counter, defaultdict
from pathlib import Path

import psycopg
import pytest

from coordinator import inventory_saga as S
from coordinator import notices as N
from invsaga.common.v1 import common_pb2
from invsaga.coordinator.v1 import coordinator_pb2 as pb
from invsaga.notify.v1 import notify_pb2
from services.notify import logic as notify_logic
from tests.saga_support import WH, MeshClient, step_statuses
from tests.support import logs_tail, start_mesh

CONFIRMED = common_pb2.NOTIFICATION_KIND_RESERVATION_CONFIRMED
FAILED = common_pb2.NOTIFICATION_KIND_RESERVATION_FAILED
KIND = {"reservation_confirmed": CONFIRMED, "reservation_failed": FAILED}
# Steps retried quickly: during the notify outage a Notify step gives up within a second.
ENV = {"INVSAGA_RETRY_INITIAL_INTERVAL": "20ms", "INVSAGA_RETRY_MAX_INTERVAL": "200ms"}
WAREHOUSES = [WH("WH-N1", priority=9), WH("WH-N2", priority=5)]
ON_HAND = 5_000
SKU = "SKU-N1"
TOO_MANY = 2 * ON_HAND + 1  # more than all warehouses hold: the saga fails and is compensated


# -- the text, without a mesh --------------------------------------------------------------


def test_the_notice_limit_is_the_notify_services():
    assert N.NOTICE_TEXT_LIMIT == notify_logic.MAX_TEXT


@pytest.mark.parametrize("length", [8, 199, 200, 230, 256])
def test_a_long_order_id_is_shortened_in_the_text_with_an_ellipsis(length):
    order_id = "O" * (length - 1) + "Z"
    text = N.notice_text("reservation confirmed for order ", order_id, ": 3 units from WH-1, WH-2")

    assert len(text) <= N.NOTICE_TEXT_LIMIT
    assert text.startswith("reservation confirmed for order O") and text.endswith(": 3 units from WH-1, WH-2")
    if len(text) < 32 + length + 25:
        assert N.ELLIPSIS + ":" in text and "Z" not in text  # the order id's end gave way
    else:
        assert order_id in text


def test_the_failure_detail_gives_way_before_the_order_id_and_nothing_is_ever_too_long():
    detail = " insufficient inventory: " + ", ".join(f"SKU-{i} needs 9, has 0" for i in range(50))
    short = N.notice_text("reservation failed for order ", "ORD-1", ": INSUFFICIENT_INVENTORY", detail)
    long = N.notice_text("reservation failed for order ", "O" * 256, ": INSUFFICIENT_INVENTORY", detail)
    huge_tail = N.notice_text("reservation confirmed for order ", "O" * 256, ": " + "W" * 400)
    nul = N.notice_text("order ", "A\x00B", "", "")

    assert short.startswith("reservation failed for order ORD-1: INSUFFICIENT_INVENTORY insufficient")
    assert len(short) == N.NOTICE_TEXT_LIMIT and short.endswith(N.ELLIPSIS)
    assert long.endswith(N.ELLIPSIS + ": INSUFFICIENT_INVENTORY") and len(long) <= N.NOTICE_TEXT_LIMIT
    assert len(huge_tail) <= N.NOTICE_TEXT_LIMIT and huge_tail.startswith("reservation confirmed for order OOOO")
    assert "\x00" not in nul


def test_every_field_of_either_notice_fits_the_notify_services_checks():
    saga = pb.Saga(saga_id=uuid.uuid4().hex, status=pb.SAGA_STATUS_COMPENSATED)
    saga.request.order_id = "Ö" * 256
    saga.request.customer_id = "C\x00" * 128
    for i in range(60):
        saga.allocation.lines.add(warehouse_id=f"WAREHOUSE-{i:03d}-" + "x" * 40, sku="S", quantity=1)
    saga.failure.CopyFrom(pb.SagaFailure(step="CheckAvailability", reason="R" * 128, message="m" * 1024))

    for confirmed in (True, False):
        notice = S.notify_input(saga, confirmed)
        notify_logic.validate_notification(notice, "notify.")  # raises if any field is refused


# -- a mesh --------------------------------------------------------------------------------


def libpq(url: str) -> str:
    return url.replace("postgresql+psycopg://", "postgresql://", 1)


class Books:
    """What the notify service stored and the coordinator still owes, read from their schemas."""

    def __init__(self, mesh) -> None:
        self.url = libpq(mesh.database_url)

    async def _rows(self, sql: str, params=None) -> list:
        async with await psycopg.AsyncConnection.connect(self.url, autocommit=True) as conn:
            return await (await conn.execute(sql, params)).fetchall()

    async def notices(self, saga_ids) -> dict[str, Counter]:
        """Per saga, the notifications stored of each kind."""
        found: dict[str, Counter] = defaultdict(Counter)
        rows = await self._rows(
            "SELECT saga_id, kind, count(*) FROM notify.notifications WHERE saga_id = ANY(%s) GROUP BY saga_id, kind",
            (list(saga_ids),),
        )
        for saga_id, kind, n in rows:
            found[saga_id][KIND[kind]] += n
        return found

    async def stored(self, saga_id: str) -> list:
        return await self._rows(
            "SELECT kind, order_id, customer_id, message, attributes FROM notify.notifications WHERE saga_id = %s",
            (saga_id,),
        )

    async def owed(self) -> Counter:
        """Rows of the coordinator's outbox by state."""
        rows = await self._rows("SELECT state, count(*) FROM coordinator.notice_outbox GROUP BY state")
        return Counter(dict(rows))

    async def until_settled(self, timeout: float = 120.0) -> Counter:
        deadline = time.monotonic() + timeout
        while (owed := await self.owed())["pending"] and time.monotonic() < deadline:
            await asyncio.sleep(0.2)
        return owed


@pytest.fixture(scope="module")
def mesh(tmp_path_factory):
    started = start_mesh(tmp_path_factory.mktemp("notices"), env=ENV)
    yield started
    started.stop()


@pytest.fixture
async def client(mesh):
    c = MeshClient(mesh)
    if not await c.stock():
        await c.seed(WAREHOUSES, [(w.warehouse_id, SKU, ON_HAND) for w in WAREHOUSES])
    yield c
    await c.close()


async def wait_for(check, timeout: float = 30.0, every: float = 0.1):
    deadline = time.monotonic() + timeout
    while True:
        found = await check()
        if found or time.monotonic() > deadline:
            return found
        await asyncio.sleep(every)


async def test_a_230_character_order_id_still_gets_its_confirmation_and_its_failure_notice(mesh, client):
    books = Books(mesh)
    order_id = "ORD-" + "7" * 225 + "X"  # 230 characters
    completed = await client.run({SKU: 2}, order_id=order_id)
    failed = await client.run({SKU: TOO_MANY}, order_id=order_id)

    assert completed.status == pb.SAGA_STATUS_COMPLETED, completed
    assert step_statuses(completed)["Notify"] == "SUCCEEDED"  # sent inline, nothing refused
    assert failed.status == pb.SAGA_STATUS_COMPENSATED, failed
    (confirmation,) = await books.stored(completed.saga_id)
    (failure,) = await wait_for(lambda: books.stored(failed.saga_id))
    for notice, kind in ((confirmation, "reservation_confirmed"), (failure, "reservation_failed")):
        kind_stored, order_stored, _, message, attributes = notice
        assert kind_stored == kind
        assert order_stored == order_id  # the field keeps the whole id; only the text shortens it
        assert len(message) <= notify_logic.MAX_TEXT and "…" in message and "X" not in message
        assert attributes["saga_id"] in (completed.saga_id, failed.saga_id)
    assert confirmation[3].endswith(": 2 units from WH-N1")
    assert failure[3].endswith(": INSUFFICIENT_INVENTORY")
    # The notify service stores a notice before the outbox marks its row sent: wait for the mark.
    assert (await books.until_settled(timeout=30))["pending"] == 0
    await client.check_books()


async def test_a_failure_notice_is_owed_from_the_terminal_save_and_stored_once(mesh, client):
    books = Books(mesh)
    saga = await client.run({SKU: TOO_MANY})

    notices = await wait_for(lambda: books.notices([saga.saga_id]))
    await books.until_settled()
    again = await books.notices([saga.saga_id])

    assert saga.status == pb.SAGA_STATUS_COMPENSATED
    assert notices[saga.saga_id] == again[saga.saga_id] == Counter({FAILED: 1})
    assert await books.owed() == Counter()  # acknowledged: the row is gone
    await client.check_books()


async def test_notices_owed_during_a_notify_outage_survive_a_coordinator_restart(mesh, client):
    """Notify down; sagas end (their notices owed); the coordinator is SIGKILLed; both come back."""
    books = Books(mesh)
    mesh.kill("notify")
    try:
        sagas = [await client.run({SKU: TOO_MANY}) for _ in range(3)]
        sagas.append(await client.run({SKU: 1}))
        owed_before = await books.owed()
        assert mesh.kill("coordinator") != 0
    finally:
        mesh.start_one("notify")
        await asyncio.to_thread(mesh.wait_ready, "notify", 60)
    mesh.start_one("coordinator")
    await asyncio.to_thread(mesh.wait_ready, "coordinator", 60)

    owed_after = await books.until_settled()
    found = await books.notices([s.saga_id for s in sagas])

    assert [s.status for s in sagas] == [pb.SAGA_STATUS_COMPENSATED] * 3 + [pb.SAGA_STATUS_COMPLETED]
    assert step_statuses(sagas[-1])["Notify"] == "FAILED"  # the confirmation could not go inline
    assert owed_before == Counter({"pending": 4}), owed_before
    assert owed_after == Counter(), (owed_after, logs_tail(mesh))
    assert [found[s.saga_id] for s in sagas] == [Counter({FAILED: 1})] * 3 + [Counter({CONFIRMED: 1})]
    async with _fresh(mesh) as fresh:
        await fresh.check_books()


async def test_a_notice_the_notify_service_refuses_for_good_is_kept_as_failed_not_retried(mesh, client):
    """A row whose request can never be accepted (written here by hand; the coordinator's own
    notices always fit) is given up after one refusal; the notices beside it still go out."""
    books = Books(mesh)
    saga_id = uuid.uuid4().hex
    bad = notify_pb2.ExecuteRequest(
        context=common_pb2.StepContext(saga_id=saga_id, step=common_pb2.SAGA_STEP_NOTIFY_FAILURE),
        notify=notify_pb2.NotifyInput(kind=common_pb2.NOTIFICATION_KIND_UNSPECIFIED),
    )
    now = int(time.time() * 1000)
    await books._rows(
        "INSERT INTO coordinator.notice_outbox (saga_id, step, request, next_attempt_at, created_at)"
        " VALUES (%s, %s, %s, %s, %s) RETURNING 1",
        (saga_id, common_pb2.SAGA_STEP_NOTIFY_FAILURE, bad.SerializeToString(), now, now),
    )
    failed = await client.run({SKU: TOO_MANY})  # its terminal save wakes the outbox

    owed = await books.until_settled(timeout=30)
    (row,) = await books._rows(
        "SELECT state, attempts, last_error FROM coordinator.notice_outbox WHERE saga_id = %s", (saga_id,)
    )
    found = await wait_for(lambda: books.notices([failed.saga_id]))

    assert owed == Counter({"failed": 1})
    assert row == ("failed", 1, "INVALID_ARGUMENT")
    assert found[failed.saga_id] == Counter({FAILED: 1})
    assert await books.notices([saga_id]) == {}
    await books._rows("DELETE FROM coordinator.notice_outbox WHERE saga_id = %s RETURNING 1", (saga_id,))


class _fresh:
    """A client on the restarted processes' new connections."""

    def __init__(self, mesh) -> None:
        self.client = MeshClient(mesh)

    async def __aenter__(self) -> MeshClient:
        return self.client

    async def __aexit__(self, *exc) -> None:
        await self.client.close()


# -- the outage ----------------------------------------------------------------------------


async def run_outage(mesh, client: MeshClient, failing: int, succeeding: int, outage: float = 10.0) -> dict:
    """``failing`` + ``succeeding`` sagas spread over the run; notify SIGKILLed for ``outage`` s
    from 2 s in; then every saga's notices counted. Returns the figures."""
    books = Books(mesh)
    span = 2.0 + outage + 4.0  # sagas start before, during and after the outage
    kinds = [True] * succeeding + [False] * failing
    kinds.sort(key=lambda ok: uuid.uuid4().hex)  # interleaved
    spacing = span / max(1, len(kinds))
    began = time.monotonic()
    results: list[tuple[bool, pb.Saga]] = []
    pending_seen = 0

    async def one(k: int, ok: bool) -> None:
        await asyncio.sleep(k * spacing)
        saga_id = await client.start({SKU: 1 if ok else TOO_MANY})
        results.append((ok, await client.wait(saga_id, timeout=120)))

    async def outage_window() -> None:
        nonlocal pending_seen
        await asyncio.sleep(2.0)
        assert mesh.kill("notify") != 0
        down = time.monotonic()
        while time.monotonic() - down < outage:
            pending_seen = max(pending_seen, (await books.owed())["pending"])
            await asyncio.sleep(0.5)
        mesh.start_one("notify")
        await asyncio.to_thread(mesh.wait_ready, "notify", 60)

    await asyncio.gather(outage_window(), *(one(k, ok) for k, ok in enumerate(kinds)))
    driven = time.monotonic() - began
    owed = await books.until_settled()
    settled = time.monotonic() - began
    found = await books.notices([s.saga_id for _, s in results])

    wrong = []
    for ok, saga in results:
        expected = (
            (pb.SAGA_STATUS_COMPLETED, Counter({CONFIRMED: 1}))
            if ok
            else (pb.SAGA_STATUS_COMPENSATED, Counter({FAILED: 1}))
        )
        if (saga.status, found[saga.saga_id]) != expected:
            wrong.append((saga.saga_id, pb.SagaStatus.Name(saga.status), dict(found[saga.saga_id])))
    deferred = sum(1 for ok, s in results if ok and step_statuses(s)["Notify"] == "FAILED")
    return {
        "sagas": len(results),
        "notices": sum(sum(c.values()) for c in found.values()),
        "wrong": wrong,
        "owed_after": owed,
        "pending_seen": pending_seen,
        "confirmations_deferred": deferred,
        "driven_s": round(driven, 1),
        "settled_s": round(settled, 1),
    }


@pytest.mark.timeout(300)
async def test_notify_killed_for_10_s_during_1000_sagas_every_saga_gets_exactly_one_notice(mesh, client):
    figures = await run_outage(mesh, client, failing=500, succeeding=500)
    print(f"\nnotify outage: { {k: v for k, v in figures.items() if k != 'wrong'} }")

    assert figures["sagas"] == 1000
    assert figures["wrong"] == [], figures["wrong"][:10]
    assert figures["notices"] == 1000
    assert figures["owed_after"] == Counter(), figures
    # The outage was real: notices were owed while it lasted, confirmations among them.
    assert figures["pending_seen"] > 0 and figures["confirmations_deferred"] > 0, figures
    async with _fresh(mesh) as fresh:
        await fresh.check_books()


async def _main(failing: int, succeeding: int) -> None:
    with tempfile.TemporaryDirectory(prefix="invsaga-notices-") as tmp:
        mesh = start_mesh(Path(tmp), env=ENV)
        try:
            c = MeshClient(mesh)
            await c.seed(WAREHOUSES, [(w.warehouse_id, SKU, ON_HAND) for w in WAREHOUSES])
            figures = await run_outage(mesh, c, failing, succeeding)
            await c.close()
            async with _fresh(mesh) as fresh:
                await fresh.check_books()
        finally:
            mesh.stop()
    wrong = figures.pop("wrong")
    print({**figures, "wrong": len(wrong)})
    if wrong:
        print("wrong:", wrong[:20])
        sys.exit(1)


if __name__ == "__main__":
    asyncio.run(_main(*(int(a) for a in sys.argv[1:3])) if len(sys.argv) > 2 else _main(500, 500))
