"""Tracing and metrics hooks of the server bootstrap and the client channels.

Kept behind four functions so the bootstrap does not know which exporters are configured.
"""

from __future__ import annotations

from typing import Any

from invsaga.runtime.config import Settings


def setup(settings: Settings) -> None:
    """Configure tracing for this process (exporters from OTEL_* variables)."""


def server_interceptors(settings: Settings) -> list[Any]:
    return []


def client_interceptors() -> list[Any]:
    return []


def start_metrics_server(settings: Settings) -> None:
    """Serve Prometheus /metrics on settings.metrics_port."""


def shutdown() -> None:
    """Flush exporters."""
