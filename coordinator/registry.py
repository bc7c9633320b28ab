"""Which definition runs a saga: one per ``SagaKind``, looked up from the saga itself.

The engine never picks a saga by name; a driver asks ``definition_of(saga)``. A saga stored
before kinds existed has none, and is a reservation. A saga of kind RESERVATION whose request
is of type ALLOCATION runs the allocation-only definition (it plans, it does not lock).
"""

from __future__ import annotations

from coordinator.definition import SagaDefinition
from coordinator.inventory_saga import ALLOCATION_SAGA, INVENTORY_SAGA
from coordinator.transfer_saga import TRANSFER_SAGA
from invsaga.coordinator.v1 import coordinator_pb2 as pb

DEFINITIONS: dict[int, SagaDefinition] = {d.kind: d for d in (INVENTORY_SAGA, TRANSFER_SAGA)}


def definition_of(saga: pb.Saga) -> SagaDefinition:
    if saga.kind in (pb.SAGA_KIND_UNSPECIFIED, pb.SAGA_KIND_RESERVATION):
        return for_request(saga.request)
    return DEFINITIONS[saga.kind]


def for_request(request: pb.InventoryRequest) -> SagaDefinition:
    """A StartSaga's definition: an ALLOCATION request plans only (no lock), any other reserves."""
    return ALLOCATION_SAGA if request.request_type == pb.REQUEST_TYPE_ALLOCATION else INVENTORY_SAGA
