"""Structured logging: one JSON object per line, carrying saga_id, step and trace_id.

The saga context travels in context variables, so every line logged while a saga's step
runs carries it without threading it through each call.
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import logging
import sys
import time
from typing import Iterator

saga_id_var: contextvars.ContextVar[str] = contextvars.ContextVar("saga_id", default="")
step_var: contextvars.ContextVar[str] = contextvars.ContextVar("step", default="")


@contextlib.contextmanager
def log_context(*, saga_id: str | None = None, step: str | None = None) -> Iterator[None]:
    tokens = []
    if saga_id is not None:
        tokens.append((saga_id_var, saga_id_var.set(saga_id)))
    if step is not None:
        tokens.append((step_var, step_var.set(step)))
    try:
        yield
    finally:
        for var, token in reversed(tokens):
            var.reset(token)


def _trace_id() -> str:
    try:
        from opentelemetry import trace
    except ImportError:  # pragma: no cover - opentelemetry is a dependency
        return ""
    ctx = trace.get_current_span().get_span_context()
    return format(ctx.trace_id, "032x") if ctx.is_valid else ""


class JsonFormatter(logging.Formatter):
    def __init__(self, service: str) -> None:
        super().__init__()
        self.service = service

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "service": self.service,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        saga_id = getattr(record, "saga_id", None) or saga_id_var.get()
        if saga_id:
            entry["saga_id"] = saga_id
            entry["step"] = getattr(record, "step", None) or step_var.get()
            entry["trace_id"] = _trace_id()
        for key in ("event", "code", "attempt", "port", "status"):
            if hasattr(record, key):
                entry[key] = getattr(record, key)
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False, default=str)


def configure_logging(service: str, level: str = "INFO", fmt: str = "json") -> None:
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonFormatter(service))
    else:
        handler.setFormatter(logging.Formatter(f"%(asctime)s {service} %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
