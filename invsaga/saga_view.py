"""How the ``invsaga`` command shows a saga: its table of steps, a line per event, the
allocation, picklists, failure and reservation, and live progress until it ends."""

from __future__ import annotations

import re
from typing import Any

from rich.live import Live
from rich.table import Table

from invsaga import output
from invsaga.common.v1 import common_pb2
from invsaga.coordinator.v1 import coordinator_pb2 as pb

console = output.console()

STATUS_STYLE = {
    "SUCCEEDED": "green",
    "COMPLETED": "green",
    "COMPENSATED": "yellow",
    "FAILED": "red",
    "RUNNING": "cyan",
    "COMPENSATING": "magenta",
    "SKIPPED": "dim",
    "PENDING": "dim",
}


def short_name(enum_name: str) -> str:
    return re.sub(r"^(SAGA_STATUS_|STEP_STATUS_|SAGA_EVENT_TYPE_)", "", enum_name)


def saga_table(saga: pb.Saga) -> Table:
    status = short_name(pb.SagaStatus.Name(saga.status))
    table = Table(title=f"saga {saga.saga_id}  [{STATUS_STYLE.get(status, '')}]{status}[/]", title_justify="left")
    for column in ("step", "status", "attempts", "seconds", "error"):
        table.add_column(column)
    for step in saga.steps:
        st = short_name(pb.StepStatus.Name(step.status))
        seconds = ""
        if step.HasField("started_at") and step.HasField("finished_at"):
            seconds = f"{(step.finished_at.ToNanoseconds() - step.started_at.ToNanoseconds()) / 1e9:.3f}"
        table.add_row(step.name, f"[{STATUS_STYLE.get(st, '')}]{st}[/]", str(step.attempts), seconds, step.error)
    return table


def describe(saga: pb.Saga) -> None:
    console.print(saga_table(saga))
    if saga.allocation.lines:
        strategy = saga.allocation.strategy
        console.print(
            f"allocation {saga.allocation.allocation_id} ({strategy_name(strategy)}, cost {saga.allocation.total_cost:.2f}"
            f"{'' if saga.allocation.optimal or strategy != 4 else ', not proven optimal'}): "
            + ", ".join(f"{l.warehouse_id}:{l.sku}×{l.quantity}" for l in saga.allocation.lines)
        )
    for picklist in saga.picklists:
        console.print(f"picklist {picklist.picklist_id} @ {picklist.warehouse_id}: {len(picklist.lines)} lines")
    if saga.failure.reason:
        f = saga.failure
        console.print(f"[yellow]failure[/] at {f.step or '-'}: {f.reason} {f.code} {f.message}")
        for s in f.shortages:
            console.print(f"  short {s.sku}: required {s.required}, available {s.available}")
    if saga.compensation_failure.reason:
        console.print(
            f"[red]compensation failed[/] at {saga.compensation_failure.step}: {saga.compensation_failure.message}"
        )
    if saga.kind == pb.SAGA_KIND_TRANSFER:
        from invsaga.transfer_cli import transfer_line

        console.print(transfer_line(saga))
    elif saga.HasField("reservation"):
        console.print(reservation_line(saga))
    if saga.cancel_reason:
        console.print(f"cancelled: {saga.cancel_reason}")
    console.print(f"created {output.local_time(saga.created_at)}, updated {output.local_time(saga.updated_at)}")


def strategy_name(value: int) -> str:
    return common_pb2.AllocationStrategy.Name(value).removeprefix("ALLOCATION_STRATEGY_")


async def follow(client: Any, saga_id: str, fmt: str = "table", follow_reservation: bool = False) -> pb.Saga:
    """Per-step progress until the saga ends (live on a terminal, a line per event when piped,
    a JSON line or YAML document per event for -o json/yaml); returns the final saga.
    The client's watch resumes after the last event if the stream breaks."""
    events = client.watch(saga_id, follow_reservation=follow_reservation)
    if fmt != "table":
        async for ev in events:
            output.emit_stream_item(ev, fmt)
    elif console.is_terminal:
        with Live(saga_table(await client.get(saga_id)), console=console, refresh_per_second=10) as live:
            async for _ in events:
                live.update(saga_table(await client.get(saga_id)))
    else:
        async for ev in events:
            print(event_line(ev), flush=True)
    return await client.get(saga_id)


def event_line(ev: pb.SagaEvent) -> str:
    detail = ""
    if ev.detail.code or ev.detail.message:
        detail = f" {ev.detail.code} {ev.detail.reason} {' '.join(ev.detail.message.split())}".rstrip()
    step_status = short_name(pb.StepStatus.Name(ev.step_status)) if ev.step_status else ""
    reservation = output.enum_name(common_pb2.ReservationState, ev.reservation_state, "RESERVATION_STATE_")
    return (
        f"{ev.seq:>3} {output.local_time(ev.time):<24} {short_name(pb.SagaEventType.Name(ev.type)):<22} "
        f"{ev.step or ev.warehouse_id:<18} {step_status or reservation:<12} {short_name(pb.SagaStatus.Name(ev.status))}"
        f"{detail}"
    )


def reservation_line(saga: pb.Saga) -> str:
    r = saga.reservation
    name = lambda state: common_pb2.ReservationState.Name(state).removeprefix("RESERVATION_STATE_")  # noqa: E731
    parts = ", ".join(f"{w.warehouse_id} {name(w.state)}" for w in r.warehouses)
    until = output.local_time(r.expires_at, present=r.HasField("expires_at")) or "-"
    return f"reservation {name(r.state)} (expires {until}): {parts}"
