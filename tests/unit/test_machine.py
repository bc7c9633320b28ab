"""coordinator.machine: the saga state machine, driven without any process or database.

A fake transport answers each command as a script says; a participant model keeps what a
real participant's barrier keeps (an Execute's effect happens once; a Compensate before the
Execute fences it off), so the tests can check what the books would say: a saga that rolled
back leaves no effect behind, a completed one leaves all of them, whatever failed or crashed.
"""

from __future__ import annotations

import dataclasses
import itertools

import grpc
import pytest
from hypothesis import HealthCheck, given, settings as hsettings, strategies as st

from coordinator.definition import BusinessFailure, SagaDefinition
from coordinator.inventory_saga import INVENTORY_SAGA
from coordinator.commands import TERMINAL_EVENTS, Call, Finished, Save, new_saga
from coordinator.machine import SagaMachine
from invsaga.coordinator.v1 import coordinator_pb2 as pb
from invsaga.runtime.config import Settings
from invsaga.runtime.errors import RpcFailure

DEADLINE = 10_000_000
NOW = 1_000


def _apply(saga: pb.Saga, payload: object) -> None:
    if payload == "business":
        raise BusinessFailure(pb.SagaFailure(code="FAILED_PRECONDITION", reason="INSUFFICIENT_INVENTORY"))


# The inventory saga's shape (what runs where, what is compensated, what rolls back) with
# answers the tests choose.
DEFINITION = SagaDefinition(
    "inventory",
    tuple(dataclasses.replace(s, apply=_apply) for s in INVENTORY_SAGA.steps),
    failure_notice=INVENTORY_SAGA.failure_notice,
)
STEPS = DEFINITION.steps
N = len(STEPS)
SETTINGS = Settings(service="coordinator", port=0)

OK, BUSINESS, ERROR, LOST, TIMEOUT = "ok", "business", "error", "lost", "timeout"
C_OK, C_ERROR, C_TIMEOUT = "c_ok", "c_error", "c_timeout"


class Participants:
    """What the participants' barriers hold: each step's effect applied, undone or fenced."""

    def __init__(self) -> None:
        self.applied: set[int] = set()
        self.fenced: set[int] = set()  # compensated (after or before its Execute)

    def execute(self, i: int) -> bool:
        """True if the Execute took effect (now or earlier)."""
        if i in self.fenced:
            return False
        if STEPS[i].compensable:
            self.applied.add(i)
        return True

    def compensate(self, i: int) -> bool:
        """True for a null compensation (nothing had happened)."""
        self.fenced.add(i)
        if i in self.applied:
            self.applied.discard(i)
            return False
        return True


class Run:
    """One driver's run of a machine against ``Participants``, answering as ``script`` says."""

    def __init__(self, machine: SagaMachine, participants: Participants, script=None, cancel_at=None, now=NOW):
        self.m, self.p = machine, participants
        self.script = script or {}
        self.cancel_at = cancel_at
        self.now = now
        self.calls: list[int] = []
        self.compensations: list[int] = []
        self.saves: list[Save] = []
        self.events: list[pb.SagaEvent] = []
        self.awaited_before_compensation = False

    def persist(self, save: Save) -> None:
        if save != Save.NONE:
            self.saves.append(save)
            self.events.extend(self.m.take_events())

    def step(self) -> Finished | None:
        command = self.m.next(self.now)
        self.persist(command.save)
        if isinstance(command, Finished):
            self.persist(Save.AWAIT)
            return command
        if isinstance(command, Call):
            self.calls.append(command.index)
            outcome = self.script.get(command.index, OK)
            if outcome == OK and self.p.execute(command.index):
                save = self.m.answered(command, "ok")
            elif outcome == BUSINESS:
                save = self.m.answered(command, "business")
            elif outcome == LOST:  # it took effect, but the answer never came
                self.p.execute(command.index)
                self.m.retrying(command, "UNAVAILABLE", "", 1, False)
                save = self.m.failed(command, RpcFailure(grpc.StatusCode.UNAVAILABLE, "gone"), self.now)
            elif outcome == TIMEOUT:
                save = self.m.timed_out(command)
            else:  # refused (a fenced-off Execute is refused too)
                save = self.m.failed(command, RpcFailure(grpc.StatusCode.ABORTED, "no"), self.now)
        else:
            if not self.compensations and self.saves and self.saves[-1] == Save.AWAIT:
                self.awaited_before_compensation = True
            self.compensations.append(command.index)
            outcome = self.script.get(("c", command.index), C_OK)
            if outcome == C_OK:
                save = self.m.compensated(command, self.p.compensate(command.index))
            else:
                code = grpc.StatusCode.DEADLINE_EXCEEDED if outcome == C_TIMEOUT else grpc.StatusCode.INTERNAL
                save = self.m.compensation_failed(command, RpcFailure(code, "compensation failed"))
        self.persist(save)
        if self.cancel_at is not None and len(self.calls) == self.cancel_at and self.m.wants_cancel_reason:
            self.m.cancel("customer changed their mind")
        return None

    def finish(self) -> Finished:
        self.persist(self.m.begin())
        if self.cancel_at == 0:
            self.m.cancel("customer changed their mind")
        for _ in range(200):
            done = self.step()
            if done is not None:
                return done
        raise AssertionError("the machine did not finish")


def fresh(saga_id: str = "S-1") -> SagaMachine:
    saga = new_saga(saga_id, pb.InventoryRequest(request_id="R-1", order_id="O-1"), DEFINITION)
    return SagaMachine(DEFINITION, saga, 1, DEADLINE, SETTINGS, recovered=False)


def drive(script=None, cancel_at=None, now=NOW) -> tuple[Run, Finished]:
    run = Run(fresh(), Participants(), script, cancel_at, now)
    return run, run.finish()


def check(run: Run, done: Finished) -> None:
    """What must hold whatever happened."""
    saga, p = run.m.saga, run.p
    seqs = [e.seq for e in run.events]
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs))), "events are numbered without gaps"
    assert run.events[-1].type in TERMINAL_EVENTS and run.saves[-1] == Save.AWAIT
    assert sum(e.type in TERMINAL_EVENTS for e in run.events) == 1
    assert run.compensations == sorted(run.compensations, reverse=True), "compensation runs in reverse"
    if done.status == pb.SAGA_STATUS_COMPLETED:
        assert p.applied == {i for i in range(N) if STEPS[i].compensable}
    elif done.status == pb.SAGA_STATUS_COMPENSATED:
        assert p.applied == set(), "a rolled-back saga leaves no effect behind"
        assert run.awaited_before_compensation or not run.compensations
        for i, state in enumerate(saga.steps):
            if STEPS[i].compensable and i in run.calls:
                assert i in run.compensations, f"step {i} may have run and was not compensated"
            assert state.status != pb.STEP_STATUS_PENDING and state.status != pb.STEP_STATUS_RUNNING
    else:
        assert done.status == pb.SAGA_STATUS_FAILED and saga.HasField("compensation_failure")


def test_every_step_succeeds():
    run, done = drive()
    check(run, done)
    assert done.status == pb.SAGA_STATUS_COMPLETED and run.calls == list(range(N))
    assert [s.status for s in run.m.saga.steps] == [pb.STEP_STATUS_SUCCEEDED] * N
    assert run.compensations == [] and run.m.take_owed() == []


@pytest.mark.parametrize("outcome", [BUSINESS, ERROR, LOST, TIMEOUT])
@pytest.mark.parametrize("i", range(N))
def test_each_step_failing_each_way(i, outcome):
    run, done = drive({i: outcome})
    check(run, done)
    step = STEPS[i]
    if not step.rolls_back:  # Notify: the saga completes and the confirmation is owed
        assert done.status == pb.SAGA_STATUS_COMPLETED
        assert [s.step for s, _ in run.m.take_owed()] == [step.step]
        return
    assert done.status == pb.SAGA_STATUS_COMPENSATED
    assert run.m.saga.failure.step == step.name
    assert (
        run.m.saga.failure.reason
        == {BUSINESS: "INSUFFICIENT_INVENTORY", ERROR: "LOCK_CONFLICT", LOST: "STEP_FAILED", TIMEOUT: "SAGA_TIMEOUT"}[
            outcome
        ]
    )
    ran = [j for j in range(i + 1) if STEPS[j].compensable]
    assert run.compensations == sorted(ran, reverse=True)
    statuses = [s.status for s in run.m.saga.steps]
    assert statuses[i] == pb.STEP_STATUS_FAILED
    assert all(statuses[j] == pb.STEP_STATUS_SKIPPED for j in range(i + 1, N))
    assert [s.step for s, _ in run.m.take_owed()] == [DEFINITION.failure_notice.step]


@pytest.mark.parametrize("i", [i for i in range(N) if STEPS[i].compensable])
@pytest.mark.parametrize("how", [C_ERROR, C_TIMEOUT])
def test_compensation_failing_parks_the_saga_failed_and_resume_finishes_it(i, how):
    participants = Participants()
    run = Run(fresh(), participants, {4: ERROR, ("c", i): how})
    done = run.finish()
    check(run, done)
    assert done.status == pb.SAGA_STATUS_FAILED
    assert run.m.saga.compensation_failure.code == ("DEADLINE_EXCEEDED" if how == C_TIMEOUT else "INTERNAL")
    before = [e.type for e in run.events]
    # ResumeSaga: the status column says COMPENSATING; the saga was FAILED.
    saga = pb.Saga.FromString(run.m.saga.SerializeToString())
    saga.status = pb.SAGA_STATUS_COMPENSATING
    resumed = SagaMachine(
        DEFINITION, saga, run.m.seq, DEADLINE, SETTINGS, recovered=True, previous_status=pb.SAGA_STATUS_FAILED
    )
    again = Run(resumed, participants)
    done = again.finish()
    assert done.status == pb.SAGA_STATUS_COMPENSATED
    assert again.events[0].type == pb.SAGA_EVENT_TYPE_SAGA_RESUMED and before[-1] == pb.SAGA_EVENT_TYPE_SAGA_FAILED
    assert not saga.HasField("compensation_failure")
    assert participants.applied == set()


@pytest.mark.parametrize("at", range(N + 1))
def test_cancel_at_each_point(at):
    run, done = drive(cancel_at=at)
    check(run, done)
    if at >= N:  # the last step answered: nothing left to cancel
        assert done.status == pb.SAGA_STATUS_COMPLETED
        return
    assert done.status == pb.SAGA_STATUS_COMPENSATED
    assert run.m.saga.failure.reason == "CANCELLED"
    assert run.m.saga.cancel_reason == "customer changed their mind"
    assert run.calls == list(range(at)), "no step goes after the cancel"
    assert run.m.saga.steps[at].status == pb.STEP_STATUS_SKIPPED, "a step announced but not sent did nothing"


@pytest.mark.parametrize("i", range(N))
def test_the_sagas_deadline_between_steps(i):
    run = Run(fresh(), Participants())
    run.persist(run.m.begin())
    for _ in range(i):
        run.step()
    run.now = DEADLINE
    done = None
    while done is None:
        done = run.step()
    check(run, done)
    assert done.status == pb.SAGA_STATUS_COMPENSATED and run.m.saga.failure.reason == "SAGA_TIMEOUT"


@pytest.mark.parametrize("status", [pb.SAGA_STATUS_COMPLETED, pb.SAGA_STATUS_COMPENSATED, pb.SAGA_STATUS_FAILED])
def test_a_terminal_saga_never_changes(status):
    saga = new_saga("S-T", pb.InventoryRequest(request_id="R"), DEFINITION)
    saga.status = status
    before = saga.SerializeToString()
    machine = SagaMachine(DEFINITION, saga, 9, DEADLINE, SETTINGS, recovered=True)
    assert machine.begin() == Save.NONE
    assert machine.next(NOW) == Finished(status)
    assert machine.take_events() == [] and saga.SerializeToString() == before


def test_cancel_of_a_completed_saga_compensates_everything():
    run, done = drive()
    saga = pb.Saga.FromString(run.m.saga.SerializeToString())
    saga.status = pb.SAGA_STATUS_COMPENSATING
    machine = SagaMachine(
        DEFINITION, saga, run.m.seq, DEADLINE, SETTINGS, recovered=True, previous_status=pb.SAGA_STATUS_COMPLETED
    )
    again = Run(machine, run.p)
    done = again.finish()
    assert done.status == pb.SAGA_STATUS_COMPENSATED and run.p.applied == set()
    assert again.events[0].type == pb.SAGA_EVENT_TYPE_CANCEL_REQUESTED
    assert again.compensations == [4, 3, 2] and again.saves[0] == Save.AWAIT


def test_a_recovered_saga_goes_on_where_its_save_left_it():
    run = Run(fresh(), Participants())
    run.persist(run.m.begin())
    for _ in range(3):
        run.step()
    saga = pb.Saga.FromString(run.m.saga.SerializeToString())
    machine = SagaMachine(DEFINITION, saga, run.m.seq, DEADLINE, SETTINGS, recovered=True)
    again = Run(machine, run.p)
    done = again.finish()
    assert done.status == pb.SAGA_STATUS_COMPLETED and again.calls == [3, 4, 5]
    assert again.events[0].type == pb.SAGA_EVENT_TYPE_SAGA_RECOVERED


def test_retries_are_journaled_and_counted():
    machine = fresh()
    machine.begin()
    call = machine.next(NOW)
    for attempt in range(1, 20):
        machine.retrying(call, "UNAVAILABLE", "x" * 5000, attempt, True)
    retrying = [e for e in machine.take_events() if e.type == pb.SAGA_EVENT_TYPE_STEP_RETRYING]
    assert [e.detail.attempt for e in retrying] == [1, 2, 3, 4, 8, 16]
    assert all(len(e.detail.message.encode()) <= 1024 for e in retrying)
    assert machine.saga.steps[0].attempts == 20


# -- random outcome sequences, with crashes ---------------------------------------------
OUTCOMES = st.sampled_from([OK, OK, OK, BUSINESS, ERROR, LOST, TIMEOUT])
COMP_OUTCOMES = st.sampled_from([C_OK, C_OK, C_OK, C_ERROR])


@hsettings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    calls=st.lists(OUTCOMES, min_size=N, max_size=N),
    comps=st.lists(COMP_OUTCOMES, min_size=N, max_size=N),
    crash_after=st.lists(st.integers(min_value=1, max_value=12), max_size=3),
    lost_saves=st.lists(st.booleans(), min_size=3, max_size=3),
    cancel_at=st.one_of(st.none(), st.integers(min_value=0, max_value=N)),
)
def test_random_outcomes_and_crashes_keep_the_books(calls, comps, crash_after, lost_saves, cancel_at):
    """Whatever the answers, wherever the coordinator crashes (losing its last pipelined save
    or not), the saga ends terminal, and the participants hold exactly what its outcome says."""
    script = {i: o for i, o in enumerate(calls)} | {("c", i): o for i, o in enumerate(comps)}
    participants = Participants()
    machine = fresh()
    durable = machine.saga.SerializeToString(), machine.seq, machine.saga.status
    crashes = iter(zip(crash_after, lost_saves))
    run = Run(machine, participants, script, cancel_at)
    run.persist(machine.begin())
    crash = next(crashes, None)
    for count in itertools.count():
        before = len(run.saves)
        done = run.step()
        if len(run.saves) > before:  # a save went out: it lands, unless it is the one the crash loses
            landed = run.saves[-1] == Save.AWAIT or crash is None or not crash[1]
            if landed:
                durable = machine.saga.SerializeToString(), machine.seq, machine.saga.status
        if done is not None:
            break
        if crash is not None and count + 1 >= crash[0]:
            saga = pb.Saga.FromString(durable[0])
            machine = SagaMachine(
                DEFINITION, saga, durable[1], DEADLINE, SETTINGS, recovered=True, previous_status=durable[2]
            )
            run = Run(machine, participants, script, None)
            run.persist(machine.begin())
            crash = next(crashes, None)
    if done.status == pb.SAGA_STATUS_FAILED:  # parked: ResumeSaga finishes the rollback
        saga = pb.Saga.FromString(machine.saga.SerializeToString())
        saga.status = pb.SAGA_STATUS_COMPENSATING
        machine = SagaMachine(
            DEFINITION, saga, machine.seq, DEADLINE, SETTINGS, recovered=True, previous_status=pb.SAGA_STATUS_FAILED
        )
        run = Run(machine, participants)
        done = run.finish()
    assert run.compensations == sorted(run.compensations, reverse=True)
    if done.status == pb.SAGA_STATUS_COMPLETED:
        assert participants.applied == {i for i in range(N) if STEPS[i].compensable}
    else:
        assert done.status == pb.SAGA_STATUS_COMPENSATED
        assert participants.applied == set(), "every step that may have reached its participant is undone"
