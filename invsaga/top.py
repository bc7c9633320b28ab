"""``invsaga top``: a live summary of a coordinator — throughput, outcomes, sagas in flight,
step latency — read from its Prometheus ``/metrics`` (no database access, any replica)."""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass, field

import httpx
from prometheus_client.parser import text_string_to_metric_families
from rich.console import Console, Group
from rich.live import Live
from rich.table import Table

from invsaga.runtime.config import DEFAULT_PORTS, METRICS_PORT_OFFSET

OUTCOMES = ("completed", "compensated", "failed")


@dataclass
class Snapshot:
    """The coordinator metrics ``top`` shows, summed over label sets it does not break down."""

    at: float
    started: float = 0.0
    finished: dict[str, float] = field(default_factory=dict)  # outcome -> count
    reasons: dict[str, float] = field(default_factory=dict)  # failure reason -> count
    in_flight: float = 0.0
    oldest_age: float = 0.0
    retries: float = 0.0
    compensations: float = 0.0
    step_count: dict[str, float] = field(default_factory=dict)  # step -> Execute calls
    step_sum: dict[str, float] = field(default_factory=dict)  # step -> seconds


def parse(text: str, at: float) -> Snapshot:
    snap = Snapshot(at=at)
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            labels, value = s.labels, s.value
            if s.name == "invsaga_sagas_started_total":
                snap.started += value
            elif s.name == "invsaga_sagas_finished_total":
                snap.finished[labels["outcome"]] = snap.finished.get(labels["outcome"], 0.0) + value
                if labels.get("reason"):
                    snap.reasons[labels["reason"]] = snap.reasons.get(labels["reason"], 0.0) + value
            elif s.name == "invsaga_sagas_in_flight":
                snap.in_flight = value
            elif s.name == "invsaga_oldest_running_saga_age_seconds":
                snap.oldest_age = value
            elif s.name == "invsaga_step_retries_total":
                snap.retries += value
            elif s.name == "invsaga_compensations_total":
                snap.compensations += value
            elif s.name == "invsaga_step_duration_seconds_count":
                snap.step_count[labels["step"]] = snap.step_count.get(labels["step"], 0.0) + value
            elif s.name == "invsaga_step_duration_seconds_sum":
                snap.step_sum[labels["step"]] = snap.step_sum.get(labels["step"], 0.0) + value
    return snap


def _rate(now: float, before: float, seconds: float) -> float:
    # A counter that went down means the coordinator restarted: count from zero again.
    return max(0.0, now - before if now >= before else now) / seconds if seconds > 0 else 0.0


def render(now: Snapshot, before: Snapshot | None, source: str) -> Group:
    """Totals since the coordinator started, and rates over the last interval."""
    seconds = now.at - before.at if before else 0.0
    finished = sum(now.finished.values())

    def per_second(get) -> str:
        return f"{_rate(get(now), get(before), seconds):.1f}/s" if before else "…"

    head = Table(title=f"invsaga top — {source}", title_justify="left", show_header=True)
    for column in ("", "total", "rate"):
        head.add_column(column, justify="right" if column else "left")
    head.add_row("started", f"{now.started:.0f}", per_second(lambda s: s.started))
    head.add_row("finished", f"{finished:.0f}", per_second(lambda s: sum(s.finished.values())))
    for outcome in OUTCOMES:
        count = now.finished.get(outcome, 0.0)
        share = f" ({100 * count / finished:.0f}%)" if finished else ""
        head.add_row(f"  {outcome}", f"{count:.0f}{share}", per_second(lambda s, o=outcome: s.finished.get(o, 0.0)))
    head.add_row("in flight", f"{now.in_flight:.0f}", "")
    head.add_row("oldest running", f"{now.oldest_age:.1f}s", "")
    head.add_row("retries", f"{now.retries:.0f}", per_second(lambda s: s.retries))
    head.add_row("compensations", f"{now.compensations:.0f}", per_second(lambda s: s.compensations))

    steps = Table(title="step latency (mean: since start / last interval)", title_justify="left")
    for column in ("step", "calls", "mean", "recent"):
        steps.add_column(column, justify="left" if column == "step" else "right")
    for step, calls in now.step_count.items():
        mean = now.step_sum.get(step, 0.0) / calls if calls else 0.0
        recent = ""
        if before:
            d_calls = calls - before.step_count.get(step, 0.0)
            d_sum = now.step_sum.get(step, 0.0) - before.step_sum.get(step, 0.0)
            recent = f"{1000 * d_sum / d_calls:.1f} ms" if d_calls > 0 else "-"
        steps.add_row(step, f"{calls:.0f}", f"{1000 * mean:.1f} ms", recent)

    reasons = Table(title="why sagas rolled back", title_justify="left")
    reasons.add_column("reason")
    reasons.add_column("sagas", justify="right")
    for reason, count in sorted(now.reasons.items(), key=lambda kv: -kv[1]):
        reasons.add_row(reason, f"{count:.0f}")
    return Group(head, steps, reasons)


def metrics_url(args: argparse.Namespace) -> str:
    if args.metrics:
        return args.metrics
    host, _, port = args.coordinator.rpartition(":")
    return f"http://{host or 'localhost'}:{int(port) + METRICS_PORT_OFFSET}/metrics"


def scrape(client: httpx.Client, url: str) -> Snapshot:
    reply = client.get(url, timeout=5.0)
    reply.raise_for_status()
    return parse(reply.text, time.monotonic())


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--coordinator",
        default=f"localhost:{DEFAULT_PORTS['coordinator']}",
        help="gRPC address; /metrics is at its port + 1000",
    )
    parser.add_argument("--metrics", default="", help="the coordinator's /metrics URL (overrides --coordinator)")
    parser.add_argument("--interval", type=float, default=2.0, help="seconds between refreshes")
    parser.add_argument(
        "--once", action="store_true", help="print one summary (two scrapes an interval apart) and exit"
    )


def top(args: argparse.Namespace) -> int:
    url = metrics_url(args)
    console = Console()
    with httpx.Client() as client:
        try:
            before = scrape(client, url)
        except httpx.HTTPError as err:
            console.print(f"[red]cannot read {url}[/red]: {err}")
            return 1
        if args.once:
            time.sleep(args.interval)
            console.print(render(scrape(client, url), before, url))
            return 0
        with Live(render(before, None, url), console=console, refresh_per_second=4) as live:
            try:
                while True:
                    time.sleep(args.interval)
                    try:
                        now = scrape(client, url)
                    except httpx.HTTPError as err:
                        live.console.print(f"[yellow]scrape failed: {err}[/yellow]")
                        continue
                    live.update(render(now, before, url))
                    before = now
            except KeyboardInterrupt:
                return 0
