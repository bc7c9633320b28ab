"""The one retry policy type, and the client interceptor that applies it to a call.

Exponential backoff with full jitter; which status codes are retried is part of the policy
(SPEC §2 gives each step its own), and INVALID_ARGUMENT and FAILED_PRECONDITION never are.
A caller states the policy, the call's overall deadline and an observer (``planned``) and
calls the typed stub; ``RetryInterceptor``, on the channel, retries under that plan and
propagates the deadline: each attempt's own is cut to what is left of the whole. So one
channel serves every step, each with its own policy. The same interceptor objects run over
a transport that is not a channel (``Intercepted``: the participants' ExecuteStream).
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import inspect
import random
import time
from dataclasses import dataclass
from typing import Any, Awaitable, Callable, Iterator, Sequence

import grpc

TRANSPORT = frozenset(
    {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.RESOURCE_EXHAUSTED}
)
NEVER = frozenset({grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.FAILED_PRECONDITION})
# Transient faults: the participant unreachable (a restart, a rollout) or an attempt out of
# time. Under a deadline they are retried until it passes, not a fixed number of times, and
# the wait between tries is capped at TRANSIENT_BACKOFF_CAP so that a participant that comes
# back is used within about a second. Business faults keep the policy's attempt count.
TRANSIENT = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED})
TRANSIENT_BACKOFF_CAP = 1.0
ALL = frozenset(grpc.StatusCode) - NEVER - {grpc.StatusCode.OK, grpc.StatusCode.CANCELLED}


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int = 3
    initial_interval: float = 1.0
    max_interval: float = 30.0
    retryable: frozenset[grpc.StatusCode] = TRANSPORT
    # Transient faults retried until the deadline (else: by count, like the rest). Off for a
    # step whose failure does not fail the saga (Notify: the notice outbox sends it later).
    transient_until_deadline: bool = True

    def should_retry(self, code: grpc.StatusCode) -> bool:
        return code in self.retryable and code not in NEVER

    def backoff(self, attempt: int, rng: random.Random = random._inst) -> float:
        """Full jitter: uniform in [0, min(max_interval, initial · 2^(attempt-1))]."""
        return rng.uniform(0.0, min(self.max_interval, self.initial_interval * (2 ** (attempt - 1))))


# observer(attempt, error, will_retry, delay) is told of every failed attempt.
Observer = Callable[[int, grpc.RpcError, bool, float], None]


def journaled(attempt: int, policy: RetryPolicy) -> bool:
    """Whether the retry after failed ``attempt`` goes into the saga's event journal.

    Every retry within the policy's attempt count does (business faults never go past it);
    past it, only transient faults are still retried, about two a second under the capped
    backoff, and only attempts 4, 8, 16, … are journaled: a 10 s outage adds a handful of
    events to a saga, one lasting the whole 3 min deadline about ten, not hundreds. The step's
    attempt count and the retry metric still count every attempt.
    """
    return attempt <= policy.max_attempts or attempt & (attempt - 1) == 0


class DeadlineReached(Exception):
    """The overall deadline passed before an attempt could start."""


@dataclass(frozen=True)
class CallPlan:
    """What a call carries down the interceptor chain: its retry policy, its overall deadline
    (``time.monotonic()`` based; None: each attempt's timeout only) and who hears of retries."""

    policy: RetryPolicy
    deadline: float | None = None
    observer: Observer | None = None


_PLAN: contextvars.ContextVar[CallPlan | None] = contextvars.ContextVar("invsaga_call_plan", default=None)


@contextlib.contextmanager
def planned(policy: RetryPolicy, deadline: float | None = None, observer: Observer | None = None) -> Iterator[None]:
    """The calls made inside are retried under ``policy`` within ``deadline``, by ``RetryInterceptor``."""
    token = _PLAN.set(CallPlan(policy, deadline, observer))
    try:
        yield
    finally:
        _PLAN.reset(token)


class RetryInterceptor(grpc.aio.UnaryUnaryClientInterceptor):
    """Retries a planned call (``planned``) under its policy and propagates its deadline.

    Each attempt's timeout is the call's, cut to what is left of the plan's deadline (so the
    participant gets the saga's deadline, not a longer one); past the deadline no attempt
    starts (``DeadlineReached``). A call made without a plan passes through untouched.
    """

    async def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        plan = _PLAN.get()
        if plan is None:
            return await continuation(details, request)
        policy, deadline = plan.policy, plan.deadline
        timeout = details.timeout
        attempt = 1
        while True:
            attempt_timeout = timeout
            if deadline is not None:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise DeadlineReached(f"deadline passed before attempt {attempt}")
                attempt_timeout = min(timeout, left) if timeout else left
            token = _PLAN.set(None)  # a call beneath (a transport's fallback) is not retried again
            try:
                call = await continuation(details._replace(timeout=attempt_timeout), request)
                return await call if inspect.isawaitable(call) else call
            except grpc.aio.AioRpcError as error:
                code = error.code()
                delay = policy.backoff(attempt)
                transient = (
                    policy.transient_until_deadline
                    and deadline is not None
                    and code in TRANSIENT
                    and policy.should_retry(code)
                )
                if transient:
                    delay = min(delay, TRANSIENT_BACKOFF_CAP)
                will_retry = (transient or attempt < policy.max_attempts) and policy.should_retry(code)
                if will_retry and deadline is not None and time.monotonic() + delay >= deadline:
                    will_retry = False
                if plan.observer is not None:
                    plan.observer(attempt, error, will_retry, delay)
                if not will_retry:
                    raise
            finally:
                _PLAN.reset(token)
            await asyncio.sleep(delay)
            attempt += 1


class Intercepted:
    """``await intercepted(request, timeout=...)``: ``method`` (any coroutine function called
    like a stub's method) beneath client interceptors, as a channel would run them."""

    def __init__(self, interceptors: Sequence[grpc.aio.UnaryUnaryClientInterceptor], method: Any, name: str = ""):
        self.method = method
        self.name = name

        async def send(details: Any, request: Any) -> Any:
            return self.method(request, timeout=details.timeout)  # awaited by the interceptor

        chain = send
        for interceptor in reversed(interceptors):
            chain = _bind(interceptor, chain)
        self.chain = chain

    async def __call__(self, request: Any, timeout: float | None = None) -> Any:
        details = grpc.aio.ClientCallDetails(self.name, timeout, None, None, None)
        result = await self.chain(details, request)
        return await result if inspect.isawaitable(result) else result


def _bind(interceptor: grpc.aio.UnaryUnaryClientInterceptor, continuation: Any) -> Any:
    async def run(details: Any, request: Any) -> Any:
        return await interceptor.intercept_unary_unary(continuation, details, request)

    return run


# The chain every participant call passes (``coordinator.participants``).
STEP_INTERCEPTORS: tuple[grpc.aio.UnaryUnaryClientInterceptor, ...] = (RetryInterceptor(),)


async def call_with_retry(
    method: Callable[..., Awaitable[Any]],
    request: Any,
    *,
    timeout: float | None,
    policy: RetryPolicy,
    deadline: float | None = None,
    observer: Observer | None = None,
) -> Any:
    """``await method(request)`` through ``RetryInterceptor``, retried under ``policy``.

    ``deadline`` (``time.monotonic()`` based) bounds all attempts together; each attempt's own
    timeout is ``timeout``, cut to what is left of the deadline.
    """
    with planned(policy, deadline, observer):
        return await Intercepted(STEP_INTERCEPTORS, method)(request, timeout=timeout)
