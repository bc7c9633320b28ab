"""Who may call what: the caller of an RPC and the one access table of the mesh.

``ACCESS`` maps every RPC but health and reflection to a ``Rule``; ``AccessInterceptor``
(invsaga/runtime/security.py) enforces it and sets ``CURRENT_CALLER`` for each admitted call.
docs/security.md shows the same table.
"""

from __future__ import annotations

from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

from invsaga.runtime.settings_base import PARTICIPANTS

# Methods anyone may call: Kubernetes probes, `grpcurl list` (reflection).
PUBLIC_PREFIXES = ("/grpc.health.v1.Health/", "/grpc.reflection.")
STEP_METHODS = ("Execute", "Compensate", "ExecuteStream")


@dataclass(frozen=True)
class Caller:
    """Who made a call, as the security interceptor established it.

    ``role``: ``admin`` (every RPC but the steps), ``client`` (the public coordinator API,
    scoped to ``tenant`` when it has one), ``coordinator`` (the saga steps), ``service`` (a
    participant: reads, and the calls its code makes to another), or ``anonymous``. With
    authentication off every caller is an admin.
    """

    identity: str = "anonymous"
    role: str = "admin"
    tenant: str = ""

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"


OPEN_MESH = Caller(identity="anonymous", role="admin")
# Set by the security interceptor for the duration of each RPC's handler.
CURRENT_CALLER: ContextVar[Caller] = ContextVar("invsaga_caller", default=OPEN_MESH)


def caller(context: Any = None) -> Caller:
    """The caller of the RPC being served (every caller is an admin when auth is off)."""
    return CURRENT_CALLER.get()


# -- the access table -------------------------------------------------------------------------
@dataclass(frozen=True)
class Rule:
    """Who may call one RPC: callers of ``roles``, and the ``services`` named (role service)."""

    roles: frozenset[str]
    services: frozenset[str] = frozenset()

    def allows(self, who: Caller) -> bool:
        return who.role in self.roles or (who.role == "service" and who.identity in self.services)


STEP = Rule(frozenset({"coordinator"}))
PUBLIC_API = Rule(frozenset({"client", "admin"}))
# What the coordinator calls on a participant's operator service (the reservation after its
# saga, SPEC §9), and an admin may call by hand.
COORDINATOR_OR_ADMIN = Rule(frozenset({"admin", "coordinator"}))
READ = Rule(frozenset({"admin", "service"}))
# Reads the coordinator makes too, before it writes anything: StartTransfer checks both ends
# and the source's stock (coordinator/transfer_checks.py), StartSaga the plan an allocation_id
# names (coordinator/plans.py).
CHECKED_BY_COORDINATOR = Rule(frozenset({"admin", "service", "coordinator"}))
ADMIN = Rule(frozenset({"admin"}))


def _admin_and(*services: str) -> Rule:
    """An admin RPC that the code of ``services`` also calls (and no other participant)."""
    return Rule(frozenset({"admin"}), frozenset(services))


def _service(area: str, name: str) -> str:
    return f"invsaga.{area}.v1.{name}"


_COORDINATOR = _service("coordinator", "SagaCoordinatorService")

# Every RPC of the mesh but health and reflection. A method missing here is admin-only, and
# tests/integration/test_access.py fails until it is added (here and in docs/security.md).
ACCESS: dict[str, Rule] = {
    **{
        f"/{_COORDINATOR}/{m}": PUBLIC_API
        for m in (
            "StartSaga",
            "GetSaga",
            "ListSagas",
            "WatchSaga",
            "CancelSaga",
            "ResumeSaga",
            "ExtendReservation",
            "StartTransfer",
            "ReceiveTransfer",
        )
    },
    **{f"/{_service(p, p.capitalize() + 'StepService')}/{m}": STEP for p in PARTICIPANTS for m in STEP_METHODS},
    f"/{_service('warehouse', 'WarehouseService')}/UpsertWarehouse": ADMIN,
    f"/{_service('warehouse', 'WarehouseService')}/AddAssortment": ADMIN,
    f"/{_service('warehouse', 'WarehouseService')}/GetWarehouse": CHECKED_BY_COORDINATOR,
    f"/{_service('warehouse', 'WarehouseService')}/ListWarehouses": READ,
    f"/{_service('inventory', 'InventoryService')}/SetStock": ADMIN,
    f"/{_service('inventory', 'InventoryService')}/AdjustStock": ADMIN,
    f"/{_service('inventory', 'InventoryService')}/GetStock": CHECKED_BY_COORDINATOR,
    f"/{_service('inventory', 'InventoryService')}/ListStock": READ,
    f"/{_service('inventory', 'InventoryService')}/ListLocks": READ,
    # A picklist's status moves the stock of its locks (services/logistics/server.py).
    f"/{_service('inventory', 'InventoryService')}/HoldLocks": _admin_and("logistics"),
    f"/{_service('inventory', 'InventoryService')}/CommitLocks": _admin_and("logistics"),
    f"/{_service('inventory', 'InventoryService')}/ReleaseLocks": _admin_and("logistics"),
    f"/{_service('inventory', 'InventoryService')}/ExtendLocks": COORDINATOR_OR_ADMIN,
    # The coordinator's ReceiveTransfer books the receipt here (or an admin by hand).
    f"/{_service('inventory', 'InventoryService')}/ReceiveTransfer": COORDINATOR_OR_ADMIN,
    f"/{_service('inventory', 'InventoryService')}/ListTransfers": READ,
    f"/{_service('allocation', 'AllocationService')}/GetAllocation": CHECKED_BY_COORDINATOR,
    f"/{_service('allocation', 'AllocationService')}/ListAllocations": READ,
    f"/{_service('allocation', 'AllocationService')}/CancelAllocation": ADMIN,
    f"/{_service('allocation', 'AllocationService')}/SettleAllocation": COORDINATOR_OR_ADMIN,
    f"/{_service('allocation', 'AllocationService')}/ExtendAllocation": COORDINATOR_OR_ADMIN,
    f"/{_service('logistics', 'LogisticsService')}/GetPicklist": READ,
    f"/{_service('logistics', 'LogisticsService')}/ListPicklists": READ,
    f"/{_service('logistics', 'LogisticsService')}/UpdatePicklistStatus": ADMIN,
    f"/{_service('logistics', 'LogisticsService')}/CancelPicklists": COORDINATOR_OR_ADMIN,
    # The coordinator's feed of picklist changes: acknowledging one is consuming it.
    f"/{_service('logistics', 'LogisticsService')}/ListPicklistChanges": STEP,
    f"/{_service('logistics', 'LogisticsService')}/AckPicklistChanges": STEP,
    # No process sends notices this way any more: the coordinator's go through its notify step
    # (the notice outbox), expiries included (docs/lifecycle.md).
    f"/{_service('notify', 'NotifyService')}/SendNotification": ADMIN,
    f"/{_service('notify', 'NotifyService')}/ListNotifications": READ,
}


def is_public(method: str) -> bool:
    return method.startswith(PUBLIC_PREFIXES)


def rule_for(method: str) -> Rule:
    """The rule of ``method`` ("/package.Service/Method"); an unknown method is admin-only."""
    return ACCESS.get(method, ADMIN)
