"""Which definition runs a saga: one per ``SagaKind``, looked up from the saga itself.

The engine never picks a saga by name; a driver asks ``definition_of(saga)``. A saga stored
before kinds existed has none, and is a reservation.
"""

from __future__ import annotations

from coordinator.definition import SagaDefinition
from coordinator.inventory_saga import INVENTORY_SAGA
from coordinator.transfer_saga import TRANSFER_SAGA
from invsaga.coordinator.v1 import coordinator_pb2 as pb

DEFINITIONS: dict[int, SagaDefinition] = {d.kind: d for d in (INVENTORY_SAGA, TRANSFER_SAGA)}


def definition_of(saga: pb.Saga) -> SagaDefinition:
    return DEFINITIONS[saga.kind or pb.SAGA_KIND_RESERVATION]
