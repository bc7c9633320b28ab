"""A tiny order service: reserve stock for one order with invsaga.client, follow it to the end,
print the outcome.

    make run                                            # in another terminal: the mesh, demo data
    .venv/bin/python examples/order_service.py examples/order.yaml

The request_id is the order's own (``order-<order_id>`` unless the file or --request-id gives
one): run it twice and the second run follows the same saga instead of reserving again. The
coordinator's address, token and TLS files come from the environment (INVSAGA_COORDINATOR_ADDR,
INVSAGA_TOKEN, INVSAGA_TLS_CA, ...), as for the ``invsaga`` command.
"""

from __future__ import annotations

import argparse
import sys

import yaml

from invsaga.client import Client, InvsagaError
from invsaga.common.v1 import common_pb2
from invsaga.coordinator.v1 import coordinator_pb2 as pb


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("order", help="YAML file with the order (an InventoryRequest)")
    parser.add_argument("--request-id", help="idempotency key (default: order-<order_id>)")
    args = parser.parse_args()
    with open(args.order, encoding="utf-8") as f:
        order = yaml.safe_load(f)
    order["request_id"] = args.request_id or order.get("request_id") or f"order-{order['order_id']}"

    try:
        with Client() as client:
            saga = client.reserve(order)
            print(f"order {order['order_id']}: saga {saga.saga_id} (request_id {saga.request_id})")
            for event in client.watch(saga.saga_id):  # reconnects by itself if the coordinator restarts
                kind = pb.SagaEventType.Name(event.type).removeprefix("SAGA_EVENT_TYPE_")
                print(f"  {event.seq:>3} {kind:<20} {event.step} {event.detail.reason}".rstrip())
            saga = client.get(saga.saga_id)
    except InvsagaError as error:
        print(f"order {order['order_id']}: {error}", file=sys.stderr)
        for field, problem in error.violations:  # INVALID_ARGUMENT: which fields, and why
            if f"{field}: {problem}" not in error.message:
                print(f"  {field}: {problem}", file=sys.stderr)
        return 2 if error.code.name == "INVALID_ARGUMENT" else 1

    if saga.status == pb.SAGA_STATUS_COMPLETED:
        lines = ", ".join(f"{line.sku}×{line.quantity} at {line.warehouse_id}" for line in saga.allocation.lines)
        state = common_pb2.ReservationState.Name(saga.reservation.state).removeprefix("RESERVATION_STATE_")
        print(f"{state} (expires {saga.reservation.expires_at.ToDatetime():%Y-%m-%d %H:%M} UTC): {lines}")
        return 0
    failure = saga.compensation_failure if saga.status == pb.SAGA_STATUS_FAILED else saga.failure
    print(f"NOT RESERVED ({pb.SagaStatus.Name(saga.status)}): {failure.reason} {failure.message}")
    for shortage in failure.shortages:
        print(f"  {shortage.sku}: {shortage.required} wanted, {shortage.available} available")
    return 1


if __name__ == "__main__":
    sys.exit(main())
