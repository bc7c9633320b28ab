"""The one retry policy type, applied by a client interceptor.

Exponential backoff with full jitter; which status codes are retried is part of the policy
(SPEC §2 gives each step its own), and INVALID_ARGUMENT and FAILED_PRECONDITION never are.
The caller sets the policy, an overall deadline and an observer in context variables for the
call it makes, so one channel serves every step.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import random
import time
from dataclasses import dataclass
from typing import Callable, Iterator

import grpc

TRANSPORT = frozenset(
    {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.RESOURCE_EXHAUSTED}
)
NEVER = frozenset({grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.FAILED_PRECONDITION})
ALL = frozenset(grpc.StatusCode) - NEVER - {grpc.StatusCode.OK, grpc.StatusCode.CANCELLED}


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int = 3
    initial_interval: float = 1.0
    max_interval: float = 30.0
    retryable: frozenset[grpc.StatusCode] = TRANSPORT

    def should_retry(self, code: grpc.StatusCode) -> bool:
        return code in self.retryable and code not in NEVER

    def backoff(self, attempt: int, rng: random.Random = random._inst) -> float:  # type: ignore[attr-defined]
        """Full jitter: uniform in [0, min(max_interval, initial · 2^(attempt-1))]."""
        return rng.uniform(0.0, min(self.max_interval, self.initial_interval * (2 ** (attempt - 1))))


# observer(attempt, error, will_retry, delay) is told of every failed attempt.
Observer = Callable[[int, grpc.RpcError, bool, float], None]

_policy: contextvars.ContextVar[RetryPolicy | None] = contextvars.ContextVar("retry_policy", default=None)
_deadline: contextvars.ContextVar[float | None] = contextvars.ContextVar("retry_deadline", default=None)
_observer: contextvars.ContextVar[Observer | None] = contextvars.ContextVar("retry_observer", default=None)


@contextlib.contextmanager
def retrying(policy: RetryPolicy, *, deadline: float | None = None, observer: Observer | None = None) -> Iterator[None]:
    """Calls made inside are retried by ``RetryInterceptor`` under ``policy``.

    ``deadline`` (``time.monotonic()`` based) bounds all attempts together; each attempt's
    own timeout is the one passed to the stub, cut to what is left of the deadline.
    """
    tokens = (_policy.set(policy), _deadline.set(deadline), _observer.set(observer))
    try:
        yield
    finally:
        _observer.reset(tokens[2])
        _deadline.reset(tokens[1])
        _policy.reset(tokens[0])


class DeadlineReached(Exception):
    """The overall deadline passed before an attempt could start."""


class RetryInterceptor(grpc.aio.UnaryUnaryClientInterceptor):
    async def intercept_unary_unary(self, continuation, client_call_details, request):
        policy = _policy.get()
        if policy is None:
            return await continuation(client_call_details, request)
        deadline = _deadline.get()
        observer = _observer.get()
        attempt = 1
        while True:
            details = client_call_details
            if deadline is not None:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise DeadlineReached(f"deadline passed before attempt {attempt}")
                timeout = min(details.timeout, left) if details.timeout else left
                details = grpc.aio.ClientCallDetails(
                    details.method, timeout, details.metadata, details.credentials, details.wait_for_ready
                )
            call = await continuation(details, request)
            try:
                await call
                return call
            except grpc.aio.AioRpcError as error:
                delay = policy.backoff(attempt)
                will_retry = attempt < policy.max_attempts and policy.should_retry(error.code())
                if will_retry and deadline is not None and time.monotonic() + delay >= deadline:
                    will_retry = False
                if observer is not None:
                    observer(attempt, error, will_retry, delay)
                if not will_retry:
                    raise
                await asyncio.sleep(delay)
                attempt += 1
