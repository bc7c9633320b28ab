"""invsaga.runtime.retry: transient faults are retried until the deadline, business faults by count."""

from __future__ import annotations

import time

import grpc
import pytest

from invsaga.runtime.retry import ALL, TRANSPORT, DeadlineReached, RetryPolicy, call_with_retry, journaled


class Failing:
    """A stub method failing with ``codes`` in turn (the last one for ever), then answering."""

    def __init__(self, *codes: grpc.StatusCode, then_ok_after: int | None = None) -> None:
        self.codes = codes
        self.calls = 0
        self.ok_after = then_ok_after

    async def __call__(self, request, timeout=None):
        self.calls += 1
        if self.ok_after is not None and self.calls > self.ok_after:
            return "ok"
        code = self.codes[min(self.calls, len(self.codes)) - 1]
        raise grpc.aio.AioRpcError(code, grpc.aio.Metadata(), grpc.aio.Metadata(), details=code.name)


FAST = RetryPolicy(max_attempts=3, initial_interval=0.01, max_interval=0.02, retryable=TRANSPORT)


async def test_unavailable_is_retried_past_the_attempt_count_until_the_participant_is_back():
    method = Failing(grpc.StatusCode.UNAVAILABLE, then_ok_after=12)
    assert await call_with_retry(method, None, timeout=1, policy=FAST, deadline=time.monotonic() + 10) == "ok"
    assert method.calls == 13


async def test_a_transient_fault_ends_at_the_deadline_not_before():
    method = Failing(grpc.StatusCode.DEADLINE_EXCEEDED)
    began = time.monotonic()
    with pytest.raises((grpc.aio.AioRpcError, DeadlineReached)):
        await call_with_retry(method, None, timeout=1, policy=FAST, deadline=began + 0.5)
    assert time.monotonic() - began >= 0.45 and method.calls > FAST.max_attempts


async def test_without_a_deadline_the_attempt_count_still_bounds_transient_faults():
    method = Failing(grpc.StatusCode.UNAVAILABLE)
    with pytest.raises(grpc.aio.AioRpcError):
        await call_with_retry(method, None, timeout=1, policy=FAST)
    assert method.calls == FAST.max_attempts


@pytest.mark.parametrize(
    "code,calls",
    [
        (grpc.StatusCode.ABORTED, 3),  # retried by count (ALL includes it), not until the deadline
        (grpc.StatusCode.FAILED_PRECONDITION, 1),  # a business failure: at once
        (grpc.StatusCode.INVALID_ARGUMENT, 1),
    ],
)
async def test_business_faults_keep_their_count(code, calls):
    policy = RetryPolicy(max_attempts=3, initial_interval=0.01, max_interval=0.02, retryable=ALL)
    method = Failing(code)
    with pytest.raises(grpc.aio.AioRpcError):
        await call_with_retry(method, None, timeout=1, policy=policy, deadline=time.monotonic() + 10)
    assert method.calls == calls


async def test_a_policy_may_keep_transient_faults_to_its_count():
    """Notify's policy: its failure does not fail the saga, so it does not wait out an outage."""
    policy = RetryPolicy(
        max_attempts=3, initial_interval=0.01, max_interval=0.02, retryable=ALL, transient_until_deadline=False
    )
    method = Failing(grpc.StatusCode.UNAVAILABLE)
    with pytest.raises(grpc.aio.AioRpcError):
        await call_with_retry(method, None, timeout=1, policy=policy, deadline=time.monotonic() + 10)
    assert method.calls == 3


def test_a_long_outage_journals_a_few_retries_not_one_per_attempt():
    """3 min of UNAVAILABLE at about two attempts a second: every attempt counted, ~10 journaled."""
    logged = [attempt for attempt in range(1, 361) if journaled(attempt, FAST)]
    assert logged == [1, 2, 3, 4, 8, 16, 32, 64, 128, 256]
    # Within the policy's count (all a business fault ever gets), every retry is journaled.
    wide = RetryPolicy(max_attempts=6)
    assert all(journaled(attempt, wide) for attempt in range(1, 7))


async def test_the_observer_hears_of_every_attempt_of_a_transient_run():
    seen = []
    method = Failing(grpc.StatusCode.UNAVAILABLE, then_ok_after=20)
    await call_with_retry(
        method,
        None,
        timeout=1,
        policy=FAST,
        deadline=time.monotonic() + 10,
        observer=lambda attempt, error, will_retry, delay: seen.append((attempt, will_retry, delay)),
    )
    assert [a for a, _, _ in seen] == list(range(1, 21)) and all(w for _, w, _ in seen)
    assert all(0 <= d <= FAST.max_interval for _, _, d in seen)


async def test_transient_backoff_is_capped_so_a_participant_back_is_used_within_a_second(monkeypatch):
    """Under the default policy (backoff up to 30 s) a transient run waits at most the cap."""
    import invsaga.runtime.retry as retry

    async def no_wait(delay):
        return None

    monkeypatch.setattr(retry.asyncio, "sleep", no_wait)
    delays = []
    method = Failing(grpc.StatusCode.UNAVAILABLE, then_ok_after=12)
    await call_with_retry(
        method,
        None,
        timeout=1,
        policy=RetryPolicy(),
        deadline=time.monotonic() + 60,
        observer=lambda attempt, error, will_retry, delay: delays.append(delay),
    )
    assert len(delays) == 12 and max(delays) <= retry.TRANSIENT_BACKOFF_CAP
