"""A fault injector for the participants' servers; off unless INVSAGA_FAULTS is set.

INVSAGA_FAULTS holds rules separated by ``;``, each a comma-separated list of ``key=value``:

- ``kind``: ``latency`` (sleep ``delay`` seconds, then serve), ``unavailable`` (refuse with
  UNAVAILABLE before any effect), ``error`` (refuse with ``code``, default INTERNAL) or
  ``drop_response`` (serve and commit, then answer UNAVAILABLE: the caller cannot tell
  whether the effect happened — the hardest case for exactly-once).
- ``method``: the RPC name (``Execute``, ``Compensate``, ``SetStock``...); default any. Each
  request of an ``ExecuteStream`` message is an ``Execute`` here; the stream itself is never struck.
- ``step``: the saga step in the request's context (``LOCK_INVENTORY``...); default any.
- ``rate``: probability of firing, default 1. ``times``: fire at most this often.

Example: ``kind=error,code=FAILED_PRECONDITION,method=Execute,step=LOCK_INVENTORY``.
"""

from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass, field

import grpc

from invsaga.common.v1 import common_pb2
from invsaga.runtime.interceptors import WrappingInterceptor, codec
from invsaga.runtime.config import ConfigError

KINDS = ("latency", "unavailable", "error", "drop_response")


@dataclass
class FaultRule:
    kind: str
    method: str = ""
    step: int = 0
    rate: float = 1.0
    times: int | None = None
    delay: float = 0.0
    code: grpc.StatusCode = grpc.StatusCode.INTERNAL
    fired: int = field(default=0, compare=False)

    def matches(self, method: str, request) -> bool:
        if self.method and method.rsplit("/", 1)[-1] != self.method:
            return False
        if self.step:
            context = getattr(request, "context", None)
            if context is None or getattr(context, "step", 0) != self.step:
                return False
        if self.times is not None and self.fired >= self.times:
            return False
        return random.random() < self.rate


def parse_faults(spec: str) -> list[FaultRule]:
    rules = []
    for text in filter(None, (part.strip() for part in spec.split(";"))):
        try:
            fields = dict(item.split("=", 1) for item in text.split(","))
        except ValueError:
            raise ConfigError(f"INVSAGA_FAULTS: expected key=value pairs in {text!r}") from None
        kind = fields.pop("kind", "")
        if kind not in KINDS:
            raise ConfigError(f"INVSAGA_FAULTS: kind must be one of {', '.join(KINDS)} in {text!r}")
        rule = FaultRule(kind=kind)
        try:
            for key, value in fields.items():
                if key == "method":
                    rule.method = value
                elif key == "step":
                    rule.step = common_pb2.SagaStep.Value(f"SAGA_STEP_{value.upper()}")
                elif key == "rate":
                    rule.rate = float(value)
                elif key == "times":
                    rule.times = int(value)
                elif key == "delay":
                    rule.delay = float(value)
                elif key == "code":
                    rule.code = grpc.StatusCode[value.upper()]
                else:
                    raise ConfigError(f"INVSAGA_FAULTS: unknown key {key!r} in {text!r}")
        except (ValueError, KeyError):
            raise ConfigError(f"INVSAGA_FAULTS: bad value in {text!r}") from None
        rules.append(rule)
    return rules


class FaultInjector(WrappingInterceptor):
    """Applies the rules to every unary call, and so to each request of an ExecuteStream message."""

    def __init__(self, rules: list[FaultRule]) -> None:
        super().__init__()
        self.rules = rules

    def wrap(self, method: str, handler):
        if not handler.unary_unary:
            return handler
        behavior = handler.unary_unary
        rules = self.rules

        async def faulty(request, context):
            drop = None
            for rule in rules:
                if not rule.matches(method, request):
                    continue
                rule.fired += 1
                if rule.kind == "latency":
                    await asyncio.sleep(rule.delay)
                elif rule.kind == "unavailable":
                    await context.abort(grpc.StatusCode.UNAVAILABLE, "injected fault: unavailable")
                elif rule.kind == "error":
                    await context.abort(rule.code, f"injected fault: {rule.code.name}")
                else:
                    drop = rule
            response = await behavior(request, context)
            if drop is not None:
                await context.abort(grpc.StatusCode.UNAVAILABLE, "injected fault: response dropped after commit")
            return response

        return grpc.unary_unary_rpc_method_handler(faulty, **codec(handler))
