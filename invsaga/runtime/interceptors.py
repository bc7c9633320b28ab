"""The base of the server interceptors that wrap a method's handler."""

from __future__ import annotations

from typing import Any

import grpc


class WrappingInterceptor(grpc.aio.ServerInterceptor):
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
