"""TLS, mutual TLS and bearer tokens for the mesh; all off unless configured.

- TLS: a process with ``INVSAGA_TLS_CERT``/``INVSAGA_TLS_KEY`` serves TLS, and its channels to
  the other processes verify their certificates against ``INVSAGA_TLS_CA`` (presenting its own
  certificate, so the same three files serve both directions).
- Mutual TLS (``INVSAGA_TLS_CLIENT_AUTH=require``): the server refuses a handshake without a
  client certificate signed by the CA. The saga steps (``Execute``/``ExecuteBatch``/``ExecuteStream``/``Compensate`` of
  every ``*StepService``) are served only to the identities in ``INVSAGA_TLS_STEP_CALLERS``
  (default ``coordinator``): the subject common name of the peer's certificate, which
  ``invsaga certs`` sets to the process name. Every other RPC — the admin and query APIs,
  health, reflection — is open to any client holding a certificate of the CA: operators and
  the participants' own calls to each other (inventory → notify, logistics → inventory).
- Bearer tokens (the coordinator only): with ``INVSAGA_AUTH=token`` every RPC needs
  ``authorization: Bearer <token>`` whose SHA-256 (hex) is one of
  ``INVSAGA_AUTH_TOKEN_HASHES``; anything else is UNAUTHENTICATED. Deny by default: only
  ``grpc.health.v1.Health`` and server reflection are exempt, so probes and ``grpcurl list``
  keep working. The participants are guarded by mutual TLS instead.

With none of this configured, no interceptor is installed and the ports are plaintext:
the hot path pays nothing.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
from pathlib import Path
from typing import Any, Iterable

import grpc

from invsaga.runtime.config import Settings

# Methods reachable without a token: Kubernetes probes and reflection (`grpcurl list`).
PUBLIC_PREFIXES = ("/grpc.health.v1.Health/", "/grpc.reflection.")
STEP_METHODS = ("Execute", "Compensate", "ExecuteBatch", "ExecuteStream")


def hash_token(token: str) -> str:
    """What the configuration stores for ``token``: its SHA-256 in hex."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def token_matches(token: str, hashes: Iterable[str]) -> bool:
    """Constant-time comparison against every stored hash (no early exit on a match)."""
    digest = hash_token(token)
    found = False
    for stored in hashes:
        found |= hmac.compare_digest(digest, stored)
    return found


def _read(path: str) -> bytes:
    return Path(path).read_bytes()


def server_credentials(settings: Settings) -> grpc.ServerCredentials | None:
    """TLS credentials for the server port, or None for plaintext."""
    if not settings.tls_cert:
        return None
    pair = [(_read(settings.tls_key), _read(settings.tls_cert))]
    if settings.tls_client_auth:
        return grpc.ssl_server_credentials(pair, root_certificates=_read(settings.tls_ca), require_client_auth=True)
    return grpc.ssl_server_credentials(pair)


@functools.lru_cache(maxsize=8)
def _channel_credentials(ca: str, cert: str, key: str) -> grpc.ChannelCredentials:
    return grpc.ssl_channel_credentials(
        root_certificates=_read(ca) if ca else None,
        private_key=_read(key) if key else None,
        certificate_chain=_read(cert) if cert else None,
    )


def channel_credentials(settings: Settings) -> grpc.ChannelCredentials | None:
    """Credentials of this process's channels to the others, or None for plaintext."""
    if not settings.tls_cert:
        return None
    return _channel_credentials(settings.tls_ca, settings.tls_cert, settings.tls_key)


def peer_identity(context: Any) -> str:
    """The subject common name of the peer's client certificate ('' without one)."""
    names = context.auth_context().get("x509_common_name") or []
    return names[0].decode("utf-8", "replace") if names else ""


def _is_step_method(method: str) -> bool:
    service, _, name = method.rpartition("/")
    return name in STEP_METHODS and service.endswith("StepService")


def _denied_handler(handler: grpc.RpcMethodHandler, code: grpc.StatusCode, message: str) -> grpc.RpcMethodHandler:
    """A handler of the same shape as ``handler`` that refuses without reading the request."""

    async def deny_unary(request, context):
        await context.abort(code, message)

    async def deny_stream(request, context):
        await context.abort(code, message)
        yield  # pragma: no cover - makes this an async generator

    if handler.unary_unary:
        return grpc.unary_unary_rpc_method_handler(deny_unary, response_serializer=handler.response_serializer)
    if handler.unary_stream:
        return grpc.unary_stream_rpc_method_handler(deny_stream, response_serializer=handler.response_serializer)
    if handler.stream_unary:
        return grpc.stream_unary_rpc_method_handler(deny_unary, response_serializer=handler.response_serializer)
    return grpc.stream_stream_rpc_method_handler(deny_stream, response_serializer=handler.response_serializer)


class TokenAuthInterceptor(grpc.aio.ServerInterceptor):
    """Bearer tokens on every method but health and reflection; UNAUTHENTICATED otherwise."""

    def __init__(self, token_hashes: Iterable[str]) -> None:
        self.hashes = tuple(token_hashes)

    def _authorised(self, metadata: Iterable[Any] | None) -> bool:
        for item in metadata or ():
            key, value = item[0], item[1]
            if key == "authorization" and isinstance(value, str):
                scheme, _, token = value.partition(" ")
                if scheme.lower() == "bearer" and token:
                    return token_matches(token.strip(), self.hashes)
        return False

    async def intercept_service(self, continuation, handler_call_details):
        handler = await continuation(handler_call_details)
        if handler is None or handler_call_details.method.startswith(PUBLIC_PREFIXES):
            return handler
        if self._authorised(handler_call_details.invocation_metadata):
            return handler
        return _denied_handler(
            handler, grpc.StatusCode.UNAUTHENTICATED, "a valid 'authorization: Bearer <token>' is required"
        )


class StepCallerInterceptor(grpc.aio.ServerInterceptor):
    """Under mutual TLS, saga steps are served only to the coordinator's certificate identity."""

    def __init__(self, allowed: Iterable[str]) -> None:
        self.allowed = frozenset(allowed)

    async def intercept_service(self, continuation, handler_call_details):
        handler = await continuation(handler_call_details)
        if handler is None or not _is_step_method(handler_call_details.method):
            return handler
        allowed = self.allowed

        async def check(context) -> None:
            identity = peer_identity(context)
            if identity not in allowed:
                await context.abort(
                    grpc.StatusCode.PERMISSION_DENIED,
                    f"saga steps are served only to {', '.join(sorted(allowed))}; the client is {identity or 'anonymous'!r}",
                )

        if handler.unary_unary:
            behavior = handler.unary_unary

            async def guarded(request, context):
                await check(context)
                return await behavior(request, context)

            return grpc.unary_unary_rpc_method_handler(
                guarded,
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        if handler.stream_stream:  # ExecuteStream
            stream_behavior = handler.stream_stream

            async def guarded_stream(request_iterator, context):
                await check(context)
                async for item in stream_behavior(request_iterator, context):
                    yield item

            return grpc.stream_stream_rpc_method_handler(
                guarded_stream,
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        return handler


def server_interceptors(settings: Settings) -> list[grpc.aio.ServerInterceptor]:
    """The security interceptors this process needs; none when security is off."""
    interceptors: list[grpc.aio.ServerInterceptor] = []
    if settings.service == "coordinator" and settings.auth_token_hashes:
        interceptors.append(TokenAuthInterceptor(settings.auth_token_hashes))
    if settings.tls_client_auth:
        interceptors.append(StepCallerInterceptor(settings.step_callers))
    return interceptors


__all__ = [
    "StepCallerInterceptor",
    "TokenAuthInterceptor",
    "channel_credentials",
    "hash_token",
    "peer_identity",
    "server_credentials",
    "server_interceptors",
    "token_matches",
]
