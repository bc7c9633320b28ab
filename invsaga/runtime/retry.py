"""The one retry policy type, and the loop that applies it to a call.

Exponential backoff with full jitter; which status codes are retried is part of the policy
(SPEC §2 gives each step its own), and INVALID_ARGUMENT and FAILED_PRECONDITION never are.
The caller passes the policy, an overall deadline and an observer with each call, so one
channel serves every step.
"""

from __future__ import annotations

import asyncio
import random
import time
from dataclasses import dataclass
from typing import Any, Awaitable, Callable

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

    def backoff(self, attempt: int, rng: random.Random = random._inst) -> float:  # type: ignore[attr-defined]
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


async def call_with_retry(
    method: Callable[..., Awaitable[Any]],
    request: Any,
    *,
    timeout: float | None,
    policy: RetryPolicy,
    deadline: float | None = None,
    observer: Observer | None = None,
) -> Any:
    """``await method(request)``, retried under ``policy``.

    ``deadline`` (``time.monotonic()`` based) bounds all attempts together; each attempt's own
    timeout is ``timeout``, cut to what is left of the deadline. A plain loop around the stub
    rather than a client interceptor: grpc.aio runs every intercepted call as a task of its
    own, which on the saga's hot path costs more than the call's own Python side.
    """
    attempt = 1
    while True:
        attempt_timeout = timeout
        if deadline is not None:
            left = deadline - time.monotonic()
            if left <= 0:
                raise DeadlineReached(f"deadline passed before attempt {attempt}")
            attempt_timeout = min(timeout, left) if timeout else left
        try:
            return await method(request, timeout=attempt_timeout)
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
            if observer is not None:
                observer(attempt, error, will_retry, delay)
            if not will_retry:
                raise
            await asyncio.sleep(delay)
            attempt += 1
