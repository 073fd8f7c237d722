"""The reporter's decisions that need no server: when it is behind or caught up (with
hysteresis), how fast it ships (yielding to a burst for a bounded time), and how a batch's
records become runs (a start and its end shipped as one)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from flows.reporter import (
    BEHIND_EVENT,
    CAUGHT_UP_EVENT,
    BacklogWatch,
    pace_now,
    shipments,
)
from models.outbox_shipping import Backlog
from models.settings import ReporterSettings
from models.statuses import RunPhase
from models.tables import RunRecord


def test_behind_past_either_threshold_and_caught_up_only_below_half_of_both() -> None:
    watch = BacklogWatch(behind_records=100, behind_seconds=60)
    assert watch.observe(Backlog(records=99, oldest_seconds=59)) is None
    assert watch.observe(Backlog(records=10, oldest_seconds=60)) == BEHIND_EVENT
    assert watch.pending == BEHIND_EVENT
    assert watch.observe(Backlog(records=500, oldest_seconds=90)) is None  # once per crossing
    assert watch.observe(Backlog(records=49, oldest_seconds=31)) is None  # not below half of both
    assert watch.observe(Backlog(records=49, oldest_seconds=29)) == CAUGHT_UP_EVENT
    assert watch.peak_records == 500
    assert watch.payload()["backlog_records"] == 49


def test_the_pace_yields_to_a_burst_for_a_bounded_time() -> None:
    settings = ReporterSettings(
        REPORTER_MAX_RUNS_PER_SECOND=40,
        REPORTER_YIELD_RUNS_PER_SECOND=8,
        REPORTER_YIELD_SECONDS=120,
    )
    assert pace_now(settings, inflow=0, oldest_seconds=5) == 40  # quiet: full pace
    assert pace_now(settings, inflow=300, oldest_seconds=5) == 8  # a burst: yield
    assert pace_now(settings, inflow=300, oldest_seconds=121) == 40  # but not for ever


def _record(run_id: uuid.UUID, phase: RunPhase) -> RunRecord:
    now = datetime.now(UTC)
    return RunRecord(
        id=uuid.uuid4(),
        run_id=run_id,
        phase=phase,
        kind="publish",
        run_name="x",
        tags=[],
        parameters={},
        started_at=now,
        ended_at=None if phase == RunPhase.START else now,
        outcome=None if phase == RunPhase.START else "succeeded",
        logs=[],
        attempts=0,
    )


def test_a_start_and_its_end_in_one_batch_are_one_run() -> None:
    a, b, c = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    records = [
        _record(a, RunPhase.START),
        _record(b, RunPhase.END),
        _record(c, RunPhase.START),
        _record(a, RunPhase.END),
    ]
    batch = shipments(records)
    assert [(s.start is not None, s.end is not None) for s in batch] == [
        (True, True),
        (False, True),
        (True, False),
    ]
    assert batch[0].record is records[3]  # the end's words win
