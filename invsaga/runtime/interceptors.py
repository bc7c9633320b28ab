"""The bases of the server interceptors that wrap a method's handler."""

from __future__ import annotations

from typing import Any

import grpc


class CachingInterceptor(grpc.aio.ServerInterceptor):
    """Wraps each method's handler once and hands out that wrapper on every call.

    grpc.aio asks the interceptors for the handler on every call, and what they are given
    is the same handler each time, so its wrapper is kept per method (and built again only
    if the handler beneath it changes).
    """

    def __init__(self) -> None:
        self._wrapped: dict[str, tuple[Any, Any]] = {}

    async def intercept_service(self, continuation, handler_call_details):
        handler = await continuation(handler_call_details)
        if handler is None:
            return None
        method = handler_call_details.method
        cached = self._wrapped.get(method)
        if cached is None or cached[0] is not handler:
            cached = self._wrapped[method] = (handler, self.wrap(method, handler))
        return cached[1]

    def wrap(self, method: str, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
        """``handler`` of ``method`` ("/package.Service/Method"), wrapped (or as it is)."""
        raise NotImplementedError


class WrappingInterceptor(CachingInterceptor):
    """A per-call layer: each request of an ExecuteStream message passes it too (server.py)."""


class Refusal(Exception):
    """Ends the call being served with ``status`` (its handler's wrapper answers with it)."""

    def __init__(self, status: grpc.Status) -> None:
        super().__init__("refused")
        self.status = status


def codec(handler: grpc.RpcMethodHandler) -> dict[str, Any]:
    """The (de)serializers of ``handler``, for a handler built around its behavior."""
    return dict(request_deserializer=handler.request_deserializer, response_serializer=handler.response_serializer)
