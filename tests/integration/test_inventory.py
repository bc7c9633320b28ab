"""The inventory service as the coordinator, logistics and operators use it: real processes
over gRPC, on PostgreSQL."""

from __future__ import annotations

import asyncio
import random
import uuid
from datetime import UTC, datetime, timedelta

import grpc
import psycopg
import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from invsaga.common.v1 import common_pb2
from invsaga.inventory.v1 import inventory_pb2 as pb
from invsaga.inventory.v1 import inventory_pb2_grpc as pb_grpc
from invsaga.notify.v1 import notify_pb2_grpc
from invsaga.runtime.config import load_settings
from invsaga.runtime.convert import to_timestamp
from invsaga.runtime.db import create_engine, open_service_database
from invsaga.runtime.errors import RpcFailure
from services.inventory import models
from tests.support import new_pg_database, start_mesh

SERVICES = ("inventory", "notify")
FAST_STOP = {"INVSAGA_GRACE_PERIOD": "1s"}
SHORT_EXPIRY = {"INVSAGA_EXPIRY_LOCK": "1s", "INVSAGA_EXPIRY_CLEANUP_INTERVAL": "1s"}
LOCK = common_pb2.SAGA_STEP_LOCK_INVENTORY
CHECK = common_pb2.SAGA_STEP_CHECK_AVAILABILITY


@pytest.fixture(scope="module")
def meshes(tmp_path_factory):
    """Meshes shared by this module's tests, one per (expiry, services), started on demand."""
    started = {}

    def get(env: dict[str, str] | None = None, services: tuple[str, ...] = SERVICES):
        key = (tuple(sorted((env or {}).items())), services)
        if key not in started:
            workdir = tmp_path_factory.mktemp("inventory")
            started[key] = start_mesh(workdir, services=services, env={**FAST_STOP, **(env or {})})
        return started[key]

    yield get
    for mesh in started.values():
        mesh.stop()


class Client:
    def __init__(self, channel: grpc.aio.Channel, notify_channel: grpc.aio.Channel) -> None:
        self.steps = pb_grpc.InventoryStepServiceStub(channel)
        self.admin = pb_grpc.InventoryServiceStub(channel)
        self.notify = notify_pb2_grpc.NotifyServiceStub(notify_channel)

    async def stock(self, warehouse_id: str, sku: str) -> common_pb2.StockLevel:
        return (await self.admin.GetStock(pb.GetStockRequest(warehouse_id=warehouse_id, sku=sku))).stock

    async def locks(self, **filters) -> list[common_pb2.InventoryLock]:
        return list((await self.admin.ListLocks(pb.ListLocksRequest(page_size=1000, **filters))).locks)

    def lock(self, saga_id: str, *lines: tuple[str, str, int], expires_at: datetime | None = None):
        request = pb.ExecuteRequest(
            context=common_pb2.StepContext(saga_id=saga_id, step=LOCK, idempotency_key=f"{saga_id}:lock"),
            lock_inventory=pb.LockInventoryInput(
                allocation_id=f"alloc-{saga_id}",
                order_id=f"order-{saga_id}",
                lines=[common_pb2.AllocationLine(warehouse_id=w, sku=s, quantity=q) for w, s, q in lines],
            ),
        )
        if expires_at is not None:
            request.lock_inventory.expires_at.FromDatetime(expires_at)
        return self.steps.Execute(request, timeout=60)

    def unlock(self, saga_id: str, step: int = LOCK):
        context = common_pb2.StepContext(saga_id=saga_id, step=step, idempotency_key=f"{saga_id}:{step}:undo")
        return self.steps.Compensate(pb.CompensateRequest(context=context), timeout=30)

    def check(self, saga_id: str, warehouse_ids: list[str], items: list[tuple[str, int]]):
        return self.steps.Execute(
            pb.ExecuteRequest(
                context=common_pb2.StepContext(saga_id=saga_id, step=CHECK, idempotency_key=f"{saga_id}:check"),
                check_availability=pb.CheckAvailabilityInput(
                    warehouse_ids=warehouse_ids,
                    items=[common_pb2.Item(sku=s, quantity=q, product_id=f"P-{s}") for s, q in items],
                ),
            ),
            timeout=30,
        )

    async def set_stock(self, warehouse_id: str, sku: str, on_hand: int, bin: str = "A-01-01"):
        request = pb.SetStockRequest(
            warehouse_id=warehouse_id, sku=sku, product_id=f"P-{sku}", on_hand=on_hand, bin=bin
        )
        return (await self.admin.SetStock(request)).stock


async def _client(mesh):
    channel = grpc.aio.insecure_channel(mesh.address("inventory"))
    notify_channel = grpc.aio.insecure_channel(mesh.address("notify"))
    return Client(channel, notify_channel), (channel, notify_channel)


@pytest.fixture
async def inv(meshes):
    client, channels = await _client(meshes())
    yield client
    for channel in channels:
        await channel.close()


@pytest.fixture
async def inv_short_expiry(meshes):
    client, channels = await _client(meshes(SHORT_EXPIRY))
    yield client
    for channel in channels:
        await channel.close()


def _ids(prefix: str = "WH") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


async def _failure(call) -> RpcFailure:
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await call
    return RpcFailure.from_error(raised.value)


def _assert_consistent(level: common_pb2.StockLevel) -> None:
    assert level.on_hand >= 0 and level.locked >= 0 and level.available >= 0
    assert level.on_hand == level.available + level.locked


async def test_200_concurrent_locks_on_50_units_exactly_50_succeed(inv: Client):
    warehouse, sku = _ids(), _ids("SKU")
    await inv.set_stock(warehouse, sku, 50)
    done = asyncio.Event()
    observed: list[common_pb2.StockLevel] = []

    async def watch_stock() -> None:
        while not done.is_set():
            observed.append(await inv.stock(warehouse, sku))
            await asyncio.sleep(0.01)

    watcher = asyncio.create_task(watch_stock())
    results = await asyncio.gather(
        *(inv.lock(f"saga-{uuid.uuid4().hex}", (warehouse, sku, 1)) for _ in range(200)), return_exceptions=True
    )
    done.set()
    await watcher

    succeeded = [r for r in results if isinstance(r, pb.ExecuteResponse)]
    failed = [RpcFailure.from_error(r) for r in results if isinstance(r, grpc.aio.AioRpcError)]
    assert len(succeeded) == 50
    assert len(failed) == 150
    assert {f.code for f in failed} == {grpc.StatusCode.ABORTED}
    assert {f.reason for f in failed} == {"LOCK_CONFLICT"}
    assert failed[0].metadata["warehouse_id"] == warehouse and failed[0].metadata["required"] == "1"

    assert observed, "the stock was never read during the run"
    for level in observed:
        _assert_consistent(level)
    final = await inv.stock(warehouse, sku)
    _assert_consistent(final)
    assert (final.on_hand, final.locked, final.available) == (50, 50, 0)
    held = await inv.locks(warehouse_id=warehouse, status=common_pb2.LOCK_STATUS_HELD)
    assert len(held) == 50
    assert len({lock.saga_id for lock in held}) == 50


async def test_each_execute_and_compensate_sent_three_times_has_one_effect(inv: Client):
    warehouse, sku = _ids(), _ids("SKU")
    await inv.set_stock(warehouse, sku, 10)
    saga = f"saga-{uuid.uuid4().hex}"

    checks = await asyncio.gather(*(inv.check(saga, [warehouse], [(sku, 4)]) for _ in range(3)))
    assert checks[0] == checks[1] == checks[2]
    assert checks[0].check_availability.sufficient

    locks = await asyncio.gather(*(inv.lock(saga, (warehouse, sku, 3)) for _ in range(3)))
    assert locks[0] == locks[1] == locks[2]
    assert len(locks[0].lock_inventory.locks) == 1
    assert (await inv.stock(warehouse, sku)).locked == 3
    assert len(await inv.locks(saga_id=saga)) == 1

    undone = await asyncio.gather(*(inv.unlock(saga) for _ in range(3)))
    assert undone[0] == undone[1] == undone[2]
    assert undone[0].released_units == 3 and not undone[0].null_compensation
    level = await inv.stock(warehouse, sku)
    assert (level.on_hand, level.locked, level.available) == (10, 0, 10)
    [lock] = await inv.locks(saga_id=saga)
    assert lock.status == common_pb2.LOCK_STATUS_RELEASED

    # The step is over: a late duplicate Execute gets its first answer back and locks nothing.
    assert await inv.lock(saga, (warehouse, sku, 3)) == locks[0]
    assert (await inv.stock(warehouse, sku)).locked == 0

    check_undone = await asyncio.gather(*(inv.unlock(saga, CHECK) for _ in range(3)))
    assert check_undone[0] == check_undone[1] == check_undone[2]
    assert not check_undone[0].null_compensation and check_undone[0].released_units == 0


async def test_a_repeated_lock_gets_its_first_answer_after_its_expiry_passed(inv: Client):
    warehouse, sku = _ids(), _ids("SKU")
    await inv.set_stock(warehouse, sku, 5)
    saga = f"saga-{uuid.uuid4().hex}"
    expires_at = datetime.now(UTC) + timedelta(seconds=1)
    first = await inv.lock(saga, (warehouse, sku, 2), expires_at=expires_at)
    await asyncio.sleep(1.2)
    # Sent fresh, this request would be refused (the lock would expire before it is taken);
    # as a repeat of a step that ran, it gets the step's first answer and takes nothing.
    assert await inv.lock(saga, (warehouse, sku, 2), expires_at=expires_at) == first
    assert len(await inv.locks(saga_id=saga)) == 1


async def test_compensate_before_execute_is_null_and_the_late_execute_is_refused(inv: Client):
    warehouse, sku = _ids(), _ids("SKU")
    await inv.set_stock(warehouse, sku, 5)
    saga = f"saga-{uuid.uuid4().hex}"

    undone = await asyncio.gather(*(inv.unlock(saga) for _ in range(3)))
    assert all(u.null_compensation and u.released_units == 0 for u in undone)

    for _ in range(3):
        failure = await _failure(inv.lock(saga, (warehouse, sku, 2)))
        assert failure.code == grpc.StatusCode.FAILED_PRECONDITION
        assert failure.reason == "COMPENSATED_BEFORE_EXECUTE"
    level = await inv.stock(warehouse, sku)
    assert (level.locked, level.available) == (0, 5)
    assert await inv.locks(saga_id=saga) == []


async def test_lock_is_all_or_nothing(inv: Client):
    w1, w2, sku = _ids(), _ids(), _ids("SKU")
    await inv.set_stock(w1, sku, 5)
    await inv.set_stock(w2, sku, 1)
    saga = f"saga-{uuid.uuid4().hex}"

    failure = await _failure(inv.lock(saga, (w1, sku, 4), (w2, sku, 2)))
    assert failure.code == grpc.StatusCode.ABORTED and failure.reason == "LOCK_CONFLICT"
    assert failure.metadata == {"warehouse_id": w2, "sku": sku, "required": "2", "available": "1"}
    assert (await inv.stock(w1, sku)).locked == 0
    assert await inv.locks(saga_id=saga) == []

    # The conflict rolled the barrier back too: a retry once stock arrived succeeds.
    await inv.set_stock(w2, sku, 2)
    locked = await inv.lock(saga, (w1, sku, 4), (w2, sku, 2))
    assert sorted(lock.quantity for lock in locked.lock_inventory.locks) == [2, 4]
    assert (await inv.stock(w1, sku)).available == 1
    assert (await inv.stock(w2, sku)).available == 0


async def test_availability_is_summed_across_warehouses_and_reports_loads(inv: Client):
    w1, w2, w_empty, a, b, other = (_ids(), _ids(), _ids(), _ids("SKU"), _ids("SKU"), _ids("SKU"))
    await inv.set_stock(w1, a, 3)
    await inv.set_stock(w2, a, 4)
    await inv.set_stock(w2, b, 2)
    await inv.set_stock(w1, other, 10)
    await inv.lock(f"saga-{uuid.uuid4().hex}", (w1, other, 6), (w2, a, 1))

    out = (await inv.check(f"saga-{uuid.uuid4().hex}", [w1, w2, w_empty], [(a, 6), (b, 5)])).check_availability

    assert {(s.warehouse_id, s.sku): (s.available, s.bin) for s in out.stock} == {
        (w1, a): (3, "A-01-01"),
        (w2, a): (3, "A-01-01"),
        (w2, b): (2, "A-01-01"),
    }
    assert {load.warehouse_id: load.locked_units for load in out.loads} == {w1: 6, w2: 1, w_empty: 0}
    assert {i.sku: (i.required, i.available) for i in out.items} == {a: (6, 6), b: (5, 2)}
    assert [(s.sku, s.required, s.available) for s in out.shortages] == [(b, 5, 2)]
    assert not out.sufficient


async def test_locks_do_not_expire_here_and_extend_locks_pushes_out_only_unpicked_ones(inv_short_expiry: Client):
    """The coordinator alone expires a reservation (docs/lifecycle.md): past its 1 s time to
    live a lock stays HELD here until the coordinator releases it, and ExtendLocks moves the
    expiry of the held locks whose picking has not started."""
    inv = inv_short_expiry
    warehouse, sku = _ids(), _ids("SKU")
    await inv.set_stock(warehouse, sku, 10)
    saga, picking_saga = f"saga-{uuid.uuid4().hex}", f"saga-{uuid.uuid4().hex}"
    await inv.lock(saga, (warehouse, sku, 4))
    await inv.lock(picking_saga, (warehouse, sku, 3))
    await inv.admin.HoldLocks(pb.HoldLocksRequest(saga_id=picking_saga))
    await asyncio.sleep(2.0)  # both locks' 1 s time to live passed
    assert {lock.status for lock in await inv.locks(saga_id=saga)} == {common_pb2.LOCK_STATUS_HELD}
    level = await inv.stock(warehouse, sku)
    assert (level.on_hand, level.locked, level.available) == (10, 7, 3)

    until = datetime.now(UTC) + timedelta(hours=1)
    stamp = to_timestamp(until)
    assert (await inv.admin.ExtendLocks(pb.ExtendLocksRequest(saga_id=saga, until=stamp))).extended == 1
    [extended] = await inv.locks(saga_id=saga)
    assert extended.expires_at == stamp
    # Picking started: nothing to extend (and nothing that expires).
    assert (await inv.admin.ExtendLocks(pb.ExtendLocksRequest(saga_id=picking_saga, until=stamp))).extended == 0
    past = await _failure(
        inv.admin.ExtendLocks(
            pb.ExtendLocksRequest(saga_id=saga, until=to_timestamp(datetime.now(UTC) - timedelta(seconds=1)))
        )
    )
    assert past.code == grpc.StatusCode.INVALID_ARGUMENT
    # Released by the coordinator's path (a picklist cancelled), the units come back once.
    await inv.admin.ReleaseLocks(pb.ReleaseLocksRequest(saga_id=saga, reason="reservation expired"))
    assert (await inv.stock(warehouse, sku)).available == 7


async def test_invalid_admin_input_is_refused_with_details_and_changes_nothing(inv: Client):
    warehouse, sku = _ids(), _ids("SKU")
    await inv.set_stock(warehouse, sku, 10, bin="B-02-07")
    await inv.lock(f"saga-{uuid.uuid4().hex}", (warehouse, sku, 4))
    before = await inv.stock(warehouse, sku)

    negative = await _failure(inv.admin.SetStock(pb.SetStockRequest(warehouse_id=warehouse, sku=sku, on_hand=-1)))
    assert negative.code == grpc.StatusCode.INVALID_ARGUMENT
    assert ("on_hand", "must be ≥ 0") in negative.violations

    no_ids = await _failure(inv.admin.SetStock(pb.SetStockRequest(warehouse_id="", sku="x" * 300, on_hand=1)))
    assert no_ids.code == grpc.StatusCode.INVALID_ARGUMENT
    assert {field for field, _ in no_ids.violations} == {"warehouse_id", "sku"}

    below_locked = await _failure(inv.admin.SetStock(pb.SetStockRequest(warehouse_id=warehouse, sku=sku, on_hand=3)))
    assert below_locked.code == grpc.StatusCode.FAILED_PRECONDITION
    assert below_locked.reason == "STOCK_BELOW_LOCKED" and below_locked.metadata["locked"] == "4"

    adjust = pb.AdjustStockRequest(warehouse_id=warehouse, sku=sku, delta=-7, reason="damaged")
    too_far = await _failure(inv.admin.AdjustStock(adjust))
    assert too_far.code == grpc.StatusCode.FAILED_PRECONDITION
    assert too_far.reason == "STOCK_BELOW_LOCKED"
    assert too_far.metadata["delta"] == "-7" and too_far.metadata["on_hand"] == "10"

    adjust.delta = -11
    assert (await _failure(inv.admin.AdjustStock(adjust))).reason == "NEGATIVE_STOCK"
    adjust.delta = 0
    zero = await _failure(inv.admin.AdjustStock(adjust))
    assert zero.code == grpc.StatusCode.INVALID_ARGUMENT and zero.violations[0][0] == "delta"

    missing = await _failure(inv.admin.AdjustStock(pb.AdjustStockRequest(warehouse_id=_ids(), sku=sku, delta=1)))
    assert missing.code == grpc.StatusCode.NOT_FOUND and missing.reason == "STOCK_NOT_FOUND"

    bad_lock = await _failure(inv.lock(f"saga-{uuid.uuid4().hex}", (warehouse, sku, 0), ("", sku, 1)))
    assert bad_lock.code == grpc.StatusCode.INVALID_ARGUMENT
    assert {field for field, _ in bad_lock.violations} == {
        "lock_inventory.lines[0].quantity",
        "lock_inventory.lines[1].warehouse_id",
    }
    empty = await _failure(inv.lock(f"saga-{uuid.uuid4().hex}"))
    assert empty.violations == [("lock_inventory.lines", "at least one line")]
    no_input = await _failure(
        inv.steps.Execute(pb.ExecuteRequest(context=common_pb2.StepContext(saga_id="s", step=LOCK)))
    )
    assert no_input.code == grpc.StatusCode.INVALID_ARGUMENT and no_input.violations[0][0] == "input"

    assert await inv.stock(warehouse, sku) == before
    assert before.bin == "B-02-07"

    adjust.delta = -6
    after = (await inv.admin.AdjustStock(adjust)).stock
    assert (after.on_hand, after.locked, after.available, after.bin) == (4, 4, 0, "B-02-07")
    missing_stock = await _failure(inv.admin.GetStock(pb.GetStockRequest(warehouse_id=warehouse, sku="nope")))
    assert missing_stock.code == grpc.StatusCode.NOT_FOUND


async def test_commit_consumes_and_release_releases(inv: Client):
    w1, w2, sku = _ids(), _ids(), _ids("SKU")
    await inv.set_stock(w1, sku, 10)
    await inv.set_stock(w2, sku, 10)
    saga = f"saga-{uuid.uuid4().hex}"
    await inv.lock(saga, (w1, sku, 3), (w2, sku, 2))

    held = await inv.admin.HoldLocks(pb.HoldLocksRequest(saga_id=saga, warehouse_id=w1))
    assert [lock.picking for lock in held.locks] == [True]
    for _ in range(2):
        committed = await inv.admin.CommitLocks(pb.CommitLocksRequest(saga_id=saga, warehouse_id=w1))
        assert [lock.status for lock in committed.locks] == [common_pb2.LOCK_STATUS_CONSUMED]
        level = await inv.stock(w1, sku)
        assert (level.on_hand, level.locked, level.available) == (7, 0, 7)

    for _ in range(2):
        released = await inv.admin.ReleaseLocks(pb.ReleaseLocksRequest(saga_id=saga, warehouse_id=w2, reason="cancel"))
        assert [lock.status for lock in released.locks] == [common_pb2.LOCK_STATUS_RELEASED]
        level = await inv.stock(w2, sku)
        assert (level.on_hand, level.locked, level.available) == (10, 0, 10)

    too_late = await _failure(inv.admin.CommitLocks(pb.CommitLocksRequest(saga_id=saga, warehouse_id=w2)))
    assert too_late.code == grpc.StatusCode.FAILED_PRECONDITION and too_late.reason == "LOCKS_NOT_HELD"
    unknown = await _failure(inv.admin.HoldLocks(pb.HoldLocksRequest(saga_id=f"saga-{uuid.uuid4().hex}")))
    assert unknown.code == grpc.StatusCode.NOT_FOUND
    # Compensating the saga now finds nothing held: consumed stock stays consumed.
    assert (await inv.unlock(saga)).released_units == 0
    assert (await inv.stock(w1, sku)).on_hand == 7
    assert (await inv.stock(w2, sku)).on_hand == 10


async def test_the_database_itself_refuses_negative_stock():
    url = new_pg_database()
    settings = load_settings("inventory", env={}, database_url=url)
    db = await open_service_database(settings, models.metadata, models.__file__)
    engine = create_engine(url, settings.service, pool_size=1)
    try:
        async with engine.connect() as conn:
            drift = await conn.run_sync(
                lambda sync: compare_metadata(MigrationContext.configure(sync), models.metadata)
            )
        assert drift == [], "the migration and models.py disagree"
        await db.execute(
            "INSERT INTO stock (warehouse_id, sku, on_hand, locked, updated_at)" " VALUES ('W', 'S', 5, 2, %s)",
            (datetime.now(UTC),),
        )
        for change in ("on_hand = -1", "locked = -1", "locked = 6", "on_hand = 1"):
            with pytest.raises(psycopg.errors.CheckViolation):
                await db.execute(f"UPDATE stock SET {change}")
        row = await db.fetchone("SELECT * FROM stock")
        assert row[:5] == ("W", "S", "", 5, 2)
    finally:
        await engine.dispose()
        await db.close()


async def test_lock_answer_is_what_was_stored_and_repeated_lines_add_up(inv: Client):
    w1, w2, w3, a, b = _ids(), _ids(), _ids(), _ids("SKU"), _ids("SKU")
    await inv.set_stock(w1, a, 5)
    await inv.set_stock(w2, a, 3)
    await inv.set_stock(w3, b, 5)
    saga = f"saga-{uuid.uuid4().hex}"

    # The same stock row twice: both lines are locked, each as a lock of its own.
    answer = await inv.lock(saga, (w2, a, 1), (w1, a, 2), (w1, a, 3))
    stored = await inv.locks(saga_id=saga)
    assert sorted(answer.lock_inventory.locks, key=lambda lock: lock.lock_id) == sorted(
        stored, key=lambda lock: lock.lock_id
    )
    assert sorted((lock.warehouse_id, lock.quantity) for lock in answer.lock_inventory.locks) == sorted(
        [(w1, 2), (w1, 3), (w2, 1)]
    )
    assert (await inv.stock(w1, a)).available == 0
    assert (await inv.stock(w2, a)).available == 2

    # Two lines of one row that fit only one at a time: the second is the one refused,
    # with what the first left of the row.
    refused = f"saga-{uuid.uuid4().hex}"
    failure = await _failure(inv.lock(refused, (w3, b, 3), (w3, b, 3)))
    assert failure.code == grpc.StatusCode.ABORTED and failure.reason == "LOCK_CONFLICT"
    assert failure.metadata == {"warehouse_id": w3, "sku": b, "required": "3", "available": "2"}
    assert (await inv.stock(w3, b)).locked == 0
    assert await inv.locks(saga_id=refused) == []
    # No stock row at all: nothing is available.
    missing = await _failure(inv.lock(refused, (w3, b, 1), (w3, a, 1)))
    assert missing.metadata == {"warehouse_id": w3, "sku": a, "required": "1", "available": "0"}
    assert (await inv.stock(w3, b)).locked == 0

    undone = await inv.unlock(saga)
    assert undone.released_units == 6
    for warehouse in (w1, w2):
        level = await inv.stock(warehouse, a)
        assert level.locked == 0 and level.available == level.on_hand
    assert {lock.status for lock in await inv.locks(saga_id=saga)} == {common_pb2.LOCK_STATUS_RELEASED}


async def test_concurrent_multi_line_locks_and_releases_never_deadlock(inv: Client):
    rows = [(_ids(), _ids("SKU")) for _ in range(3)]
    rows += [(warehouse, _ids("SKU")) for warehouse, _ in rows]
    for warehouse, sku in rows:
        await inv.set_stock(warehouse, sku, 10_000)
    rng = random.Random(5)

    def lines() -> list[tuple[str, str, int]]:
        # Every saga names every row, in an order of its own.
        return rng.sample([(w, s, 1 + k % 3) for k, (w, s) in enumerate(rows)], len(rows))

    first = [f"saga-{uuid.uuid4().hex}" for _ in range(30)]
    await asyncio.gather(*(inv.lock(saga, *lines()) for saga in first))
    second = [f"saga-{uuid.uuid4().hex}" for _ in range(30)]
    results = await asyncio.gather(
        *(inv.lock(saga, *lines()) for saga in second), *(inv.unlock(saga) for saga in first), return_exceptions=True
    )
    assert not [r for r in results if isinstance(r, BaseException)]
    assert all(r.released_units == 12 for r in results[len(second) :])
    for k, (warehouse, sku) in enumerate(rows):
        level = await inv.stock(warehouse, sku)
        _assert_consistent(level)
        assert level.locked == len(second) * (1 + k % 3)


async def test_a_warehouse_without_the_skus_still_reports_its_load(inv: Client):
    w1, w2, a, other = _ids(), _ids(), _ids("SKU"), _ids("SKU")
    await inv.set_stock(w1, a, 4)
    await inv.set_stock(w2, other, 9)
    await inv.lock(f"saga-{uuid.uuid4().hex}", (w2, other, 7))

    out = (await inv.check(f"saga-{uuid.uuid4().hex}", [w2, w1], [(a, 5)])).check_availability

    assert [(s.warehouse_id, s.sku, s.available) for s in out.stock] == [(w1, a, 4)]
    assert [(load.warehouse_id, load.locked_units) for load in out.loads] == [(w2, 7), (w1, 0)]
    assert [(s.sku, s.required, s.available) for s in out.shortages] == [(a, 5, 4)]


async def test_a_lock_over_hundreds_of_stock_rows(inv: Client):
    warehouse, prefix = _ids(), _ids("SKU")
    skus = [f"{prefix}-{k:03d}" for k in range(250)]
    await asyncio.gather(*(inv.set_stock(warehouse, sku, 3) for sku in skus))
    saga = f"saga-{uuid.uuid4().hex}"
    wanted = {sku: 3 if k == 200 else 1 for k, sku in enumerate(skus)}

    answer = await inv.lock(saga, *((warehouse, sku, q) for sku, q in wanted.items()))
    assert len(answer.lock_inventory.locks) == len(skus)
    assert (await inv.stock(warehouse, skus[200])).available == 0

    # One short row, far down the lock order: nothing is locked.
    failure = await _failure(inv.lock(f"saga-{uuid.uuid4().hex}", *((warehouse, sku, 1) for sku in skus)))
    assert failure.reason == "LOCK_CONFLICT"
    assert (failure.metadata["sku"], failure.metadata["available"]) == (skus[200], "0")
    assert (await inv.stock(warehouse, skus[0])).locked == 1
    assert (await inv.stock(warehouse, skus[-1])).locked == 1

    undone = await inv.unlock(saga)
    assert undone.released_units == sum(wanted.values())
    for sku in (skus[0], skus[200], skus[-1]):
        assert (await inv.stock(warehouse, sku)).locked == 0
