"""Client channels between processes: one place for targets, load balancing and interceptors."""

from __future__ import annotations

import json
from typing import Any

import grpc

from invsaga.runtime import security, telemetry
from invsaga.runtime.config import Settings
from invsaga.runtime.server import MAX_MESSAGE_BYTES

_SERVICE_CONFIG = json.dumps({"loadBalancingConfig": [{"round_robin": {}}]})


def channel_options() -> list[tuple[str, Any]]:
    return [
        ("grpc.service_config", _SERVICE_CONFIG),
        ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
        ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
        ("grpc.keepalive_time_ms", 30_000),
        ("grpc.keepalive_timeout_ms", 10_000),
        ("grpc.enable_retries", 0),
    ]


def open_channel(
    target: str, interceptors: list[Any] | None = None, credentials: grpc.ChannelCredentials | None = None
) -> grpc.aio.Channel:
    """A channel to ``target`` (``host:port`` or ``dns:///name:port``), round-robin over its addresses.

    Plaintext unless ``credentials`` are given (TLS, with a client certificate for mutual TLS).
    """
    chained = [*telemetry.client_interceptors(), *(interceptors or [])]
    if credentials is not None:
        return grpc.aio.secure_channel(target, credentials, options=channel_options(), interceptors=chained)
    return grpc.aio.insecure_channel(target, options=channel_options(), interceptors=chained)


def channel_to(settings: Settings, service: str, interceptors: list[Any] | None = None) -> grpc.aio.Channel:
    """This process's channel to ``service``: its TLS certificate, or its service token, says who it is."""
    return open_channel(
        settings.endpoint(service),
        [*(interceptors or []), *security.client_interceptors(settings)],
        security.channel_credentials(settings),
    )
