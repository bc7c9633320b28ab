"""The saga's definition: its six steps in order, where each runs, and how each is retried."""

from __future__ import annotations

from dataclasses import dataclass

import grpc

from invsaga.common.v1 import common_pb2
from invsaga.runtime.retry import ALL, TRANSPORT


@dataclass(frozen=True)
class StepDef:
    name: str  # as StepState.name shows it
    key: str  # its configuration key (steps.<key>.timeout)
    service: str  # the process hosting it
    step: int  # common.v1.SagaStep value, the barrier key
    compensable: bool
    retryable: frozenset[grpc.StatusCode]
    rolls_back: bool = True  # False: its failure does not roll the saga back


STEPS: tuple[StepDef, ...] = (
    StepDef(
        "QueryWarehouses", "query_warehouses", "warehouse", common_pb2.SAGA_STEP_QUERY_WAREHOUSES, False, TRANSPORT
    ),
    StepDef(
        "CheckAvailability",
        "check_availability",
        "inventory",
        common_pb2.SAGA_STEP_CHECK_AVAILABILITY,
        False,
        TRANSPORT | {grpc.StatusCode.ABORTED, grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN},
    ),
    StepDef(
        "AllocateInventory",
        "allocate_inventory",
        "allocation",
        common_pb2.SAGA_STEP_ALLOCATE_INVENTORY,
        True,
        TRANSPORT,
    ),
    StepDef(
        "LockInventory",
        "lock_inventory",
        "inventory",
        common_pb2.SAGA_STEP_LOCK_INVENTORY,
        True,
        TRANSPORT | {grpc.StatusCode.ABORTED},
    ),
    StepDef("GeneratePicklist", "generate_picklist", "logistics", common_pb2.SAGA_STEP_GENERATE_PICKLIST, True, ALL),
    StepDef("Notify", "notify", "notify", common_pb2.SAGA_STEP_NOTIFY, False, ALL, rolls_back=False),
)
STEP_INDEX = {s.name: i for i, s in enumerate(STEPS)}
NOTIFY_FAILURE = StepDef(
    "NotifyFailure", "notify", "notify", common_pb2.SAGA_STEP_NOTIFY_FAILURE, False, ALL, rolls_back=False
)
