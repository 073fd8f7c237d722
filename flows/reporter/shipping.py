"""Shipping: how outbox records become Prefect objects, in two layers.

- `RunShipper` decides, for one run's records (a `Shipment`), which Prefect calls to make: open
  the run live, close it, or create it whole in its final state, labelled after the fact when
  Prefect's own times would be off.
- `ship_batch` is what a batch does with whatever it ships: claim the records under row locks,
  ship them `concurrency` at a time, send the batch's log lines in one request, and mark the
  records shipped in the same transaction (or leave them queued for the next round).

Another kind of outbox record gets a shipper of its own beside `RunShipper`, and its step in
`ship_batch`; the claim, the locks and the marking stay here. The runs' table artifacts
(`run_artifacts`) are the first: `ArtifactShipper`, shipped by `_ship_artifacts` in a
transaction of its own right after the runs' (an artifact waits until its run's flow run exists,
so the runs go first, and artifacts of runs shipped in this batch go in the next round).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from flows.reporter.client import PrefectRuns, is_rejection
from flows.reporter.states import (
    FINAL_STATE_NAMES,
    base_labels,
    end_labels,
    final_state,
    late_labels,
    log_lines,
)
from models.outbox import (
    claim_unshipped_run_records,
    note_run_record_failure,
    shipped_flow_run_ids,
)
from models.outbox_shipping import (
    claim_run_artifacts,
    claim_run_ends,
    mark_run_artifacts_shipped,
    mark_run_records_shipped,
    note_run_artifact_failure,
)
from models.statuses import AttemptOutcome, RunPhase
from models.tables import RunArtifact, RunRecord

log = logging.getLogger(__name__)

#: What shipping one run gives back: its Prefect flow run id and the log lines still to send.
Shipped = tuple[str, list[dict[str, Any]]]


@dataclass(frozen=True, slots=True)
class Shipment:
    """One run's records in a batch: its start, its end, or both (shipped as one run)."""

    start: RunRecord | None = None
    end: RunRecord | None = None

    @property
    def record(self) -> RunRecord:
        """What the run is named, tagged and timed after (the end's words win)."""
        record = self.end or self.start
        assert record is not None
        return record

    @property
    def records(self) -> list[RunRecord]:
        return [r for r in (self.start, self.end) if r is not None]

    @property
    def retried(self) -> bool:
        """An earlier attempt may have reached Prefect (a crash before marking shipped)."""
        return any(r.attempts > 0 for r in self.records)


def shipments(records: Sequence[RunRecord]) -> list[Shipment]:
    """Group a batch's records by run, in claim order (a start and its end become one)."""
    by_run: dict[uuid.UUID, Shipment] = {}
    for record in records:
        known = by_run.get(record.run_id, Shipment())
        if record.phase == RunPhase.START:
            by_run[record.run_id] = Shipment(start=record, end=known.end)
        else:
            by_run[record.run_id] = Shipment(start=known.start, end=record)
    return list(by_run.values())


class RunShipper:
    """Turns one run's records into Prefect calls (`runs`); `late` counts the runs whose Prefect
    times are shipping times, off by more than `live_tolerance_seconds`."""

    def __init__(self, runs: PrefectRuns, *, live_tolerance_seconds: float = 1.0) -> None:
        self.runs = runs
        self.live_tolerance_seconds = live_tolerance_seconds
        self.late = 0

    def lag_since(self, instant: datetime) -> float | None:
        """Seconds between a real instant and now, when beyond the tolerance: Prefect stamping
        that instant now would be off by more than the tolerance (counted in `late`)."""
        lag = (datetime.now(UTC) - instant).total_seconds()
        if lag <= self.live_tolerance_seconds:
            return None
        self.late += 1
        return lag

    async def ship(
        self,
        shipment: Shipment,
        *,
        flow_run_id: str | None,
        parent_flow_run_id: str | None,
    ) -> Shipped:
        """Ship one run's records; returns the run's id and the log lines still to send.

        A start alone opens the run in Running (Prefect stamps the start). An end closes the
        run its start opened. An end whose run is not in Prefect yet (its start came along, or a
        run recorded whole) creates the run in its final state, in one request.
        """
        record = shipment.record
        if shipment.end is None:  # the run is under way
            if flow_run_id:  # the run is a Prefect run already (a deployment's)
                return flow_run_id, []
            return await self._open(record, parent_flow_run_id=parent_flow_run_id), []
        if flow_run_id is None:
            return await self._ship_whole(
                record, parent_flow_run_id=parent_flow_run_id, retried=shipment.retried
            )
        return await self._close(
            record,
            flow_run_id=flow_run_id,
            parent_flow_run_id=parent_flow_run_id,
            retried=shipment.retried,
        )

    async def _open(self, record: RunRecord, *, parent_flow_run_id: str | None) -> str:
        """Create the run in Running: Prefect stamps its start now."""
        lag = self.lag_since(record.started_at)
        labels = base_labels(record) | (late_labels(record, lag) if lag is not None else {})
        parent_task = None
        if parent_flow_run_id:
            task = await self.runs.link_task_run(
                parent_flow_run_id=parent_flow_run_id, record=record
            )
            parent_task = task["id"]
        run, _ = await self.runs.create_run(
            record, labels=labels, state={"type": "RUNNING"}, parent_task_run_id=parent_task
        )
        return run["id"]

    async def _ship_whole(
        self, record: RunRecord, *, parent_flow_run_id: str | None, retried: bool
    ) -> Shipped:
        """Create the run at its end: Prefect stamps its start now, so it is after the fact as
        soon as its real start is further back than the tolerance."""
        lag = self.lag_since(record.started_at)
        labels = base_labels(record) | end_labels(record)
        if lag is not None:
            labels |= late_labels(record, lag)
        final = final_state(record)
        # A retry keeps Running → AwaitingRetry: created Scheduled it would read as not run yet.
        opening = {"type": "RUNNING"} if record.outcome == AttemptOutcome.RETRYING else final
        parent_task = None
        if parent_flow_run_id:
            task = await self.runs.link_task_run(
                parent_flow_run_id=parent_flow_run_id, record=record, state=final
            )
            parent_task = task["id"]
            if (task.get("state") or {}).get("name") not in FINAL_STATE_NAMES:
                await self.runs.set_task_state(parent_task, final)
        run, created = await self.runs.create_run(
            record, labels=labels, state=opening, parent_task_run_id=parent_task
        )
        state_name = (run.get("state") or {}).get("name")
        if opening is not final or (not created and state_name not in FINAL_STATE_NAMES):
            await self.runs.set_state(run["id"], final)
        if (retried or not created) and await self.runs.has_logs(run["id"]):
            return run["id"], []
        return run["id"], log_lines(record, run["id"], lag=lag)

    async def _close(
        self,
        record: RunRecord,
        *,
        flow_run_id: str,
        parent_flow_run_id: str | None,
        retried: bool,
    ) -> Shipped:
        """The end of a run whose start is in Prefect: set its final state (Prefect stamps the
        end now), saying so when that is late."""
        lag = self.lag_since(record.ended_at or record.started_at)
        final = final_state(record)
        state_name = "Running"
        if retried:
            state_name = ((await self.runs.read_run(flow_run_id)).get("state") or {}).get("name")
        if lag is not None:
            await self.runs.add_labels(flow_run_id, late_labels(record, lag))
        if state_name not in FINAL_STATE_NAMES:
            await self.runs.set_state(flow_run_id, final)
        if parent_flow_run_id:  # close the task run standing for this child in its parent
            task = await self.runs.link_task_run(
                parent_flow_run_id=parent_flow_run_id, record=record, state=final
            )
            if (task.get("state") or {}).get("name") not in FINAL_STATE_NAMES:
                await self.runs.set_task_state(task["id"], final)
        if retried and await self.runs.has_logs(flow_run_id):
            return flow_run_id, []
        return flow_run_id, log_lines(record, flow_run_id, lag=lag)


#: Artifacts claimed per round: one `POST /artifacts/filter` looks all their keys up, and
#: Prefect caps a filter's `limit` at PREFECT_SERVER_API_DEFAULT_LIMIT (200).
ARTIFACT_BATCH = 50


class ArtifactShipper:
    """Turns run artifacts into Prefect table artifacts on their runs' flow runs, never twice:
    the batch's keys are looked up first (one request), and only the missing ones created, so a
    reporter that crashed after creating and before marking finds them there."""

    def __init__(self, runs: PrefectRuns) -> None:
        self.runs = runs

    async def ship(
        self, artifacts: Sequence[tuple[RunArtifact, str]], *, concurrency: int
    ) -> list[tuple[RunArtifact, str | BaseException]]:
        """(artifact, its flow run id) -> (artifact, the Prefect artifact id or the error)."""
        existing = await self.runs.existing_artifacts([a.key for a, _ in artifacts])
        semaphore = asyncio.Semaphore(concurrency)

        async def one(artifact: RunArtifact, flow_run_id: str) -> str:
            if artifact.key in existing:
                return existing[artifact.key]
            async with semaphore:
                created = await self.runs.create_table_artifact(
                    key=artifact.key,
                    description=artifact.description,
                    rows=artifact.data,
                    flow_run_id=flow_run_id,
                )
            return str(created["id"])

        outcomes = await asyncio.gather(*(one(a, f) for a, f in artifacts), return_exceptions=True)
        return [(a, o) for (a, _), o in zip(artifacts, outcomes, strict=True)]


@dataclass
class BatchResult:
    shipped: int = 0
    rejected: int = 0
    error: Exception | None = None
    claimed: int = 0
    #: Runs the claimed records made (a start and its end shipped together are one).
    runs: int = 0
    run_ids: list[str] = field(default_factory=list)
    #: Shipments whose Prefect times are shipping times (labelled after-the-fact).
    late: int = 0
    #: Prefect requests the batch took (the pace counts these).
    requests: int = 0
    #: Age of the oldest record claimed (how long the backlog has been waiting).
    oldest_seconds: float = 0.0
    #: Table artifacts shipped (created, or found there from an earlier attempt).
    artifacts: int = 0


async def ship_batch(
    sessions: async_sessionmaker[AsyncSession],
    shipper: RunShipper,
    *,
    batch_size: int,
    concurrency: int = 8,
) -> BatchResult:
    """Ship up to `batch_size` records (and the ends of the runs whose starts they include) in
    one transaction holding their row locks.

    The claim only hands out records whose run's (and parent run's) earlier records are shipped
    or in the batch, so the runs of a batch are independent and go out `concurrency` at a time.
    Records Prefect does not take stay queued (their failure noted) and wait for the next round;
    the others are marked shipped when the transaction commits. A crash before that leaves them
    queued and the idempotency keys make the next round find the same runs.
    """
    result = BatchResult()
    requests, late = shipper.runs.requests, shipper.late
    with contextlib.suppress(_Rollback):
        await _ship_batch(sessions, shipper, result, batch_size=batch_size, concurrency=concurrency)
    if result.error is None:
        await _ship_artifacts(sessions, ArtifactShipper(shipper.runs), result, concurrency)
    result.requests, result.late = shipper.runs.requests - requests, shipper.late - late
    return result


async def _ship_artifacts(
    sessions: async_sessionmaker[AsyncSession],
    shipper: ArtifactShipper,
    result: BatchResult,
    concurrency: int,
) -> None:
    """Ship the artifacts whose runs are in Prefect, in one transaction holding their row
    locks: shipped ones marked with their Prefect id, those Prefect rejects (or whose run it
    rejected) marked with the error, the others left queued for the next round."""
    async with sessions() as session, session.begin():
        claimed = await claim_run_artifacts(session, limit=ARTIFACT_BATCH)
        result.claimed += len(claimed)
        if not claimed:
            return
        done: list[tuple[uuid.UUID, uuid.UUID | None, str | None]] = [
            (a.id, None, "its run was not shipped (rejected by Prefect)")
            for a, flow_run_id in claimed
            if flow_run_id is None
        ]
        ready = [(a, str(f)) for a, f in claimed if f is not None]
        try:
            outcomes = await shipper.ship(ready, concurrency=concurrency) if ready else []
        except Exception as error:  # the look-up itself: Prefect is down
            result.error = result.error or error
            outcomes = [(a, error) for a, _ in ready]
        failed: list[uuid.UUID] = []
        for artifact, outcome in outcomes:
            if isinstance(outcome, BaseException):
                if not isinstance(outcome, Exception):
                    raise outcome
                if is_rejection(outcome):
                    reason = f"rejected by Prefect: {outcome}"
                    log.error("artifact %s %s", artifact.key, reason)
                    done.append((artifact.id, None, reason))
                else:
                    result.error = result.error or outcome
                    failed.append(artifact.id)
                continue
            done.append((artifact.id, uuid.UUID(outcome), None))
            result.artifacts += 1
        await mark_run_artifacts_shipped(session, done)
        if failed:
            error = result.error
            await note_run_artifact_failure(
                session, artifact_ids=failed, error=f"{type(error).__name__}: {error}"
            )


async def _claim(session: AsyncSession, *, batch_size: int) -> list[RunRecord]:
    records = await claim_unshipped_run_records(session, limit=batch_size)
    ended = {r.run_id for r in records if r.phase == RunPhase.END}
    starts = [r.run_id for r in records if r.phase == RunPhase.START and r.run_id not in ended]
    if starts:
        records += await claim_run_ends(session, run_ids=starts, held=[r.id for r in records])
    return records


async def _ship_batch(
    sessions: async_sessionmaker[AsyncSession],
    shipper: RunShipper,
    result: BatchResult,
    *,
    batch_size: int,
    concurrency: int,
) -> None:
    async with sessions() as session, session.begin():
        records = await _claim(session, batch_size=batch_size)
        result.claimed = len(records)
        if not records:
            return
        oldest = min(r.created_at for r in records)
        result.oldest_seconds = (datetime.now(UTC) - oldest).total_seconds()
        batch = shipments(records)
        result.runs = len(batch)
        wanted = {r.run_id for r in records} | {r.parent_run_id for r in records if r.parent_run_id}
        known = {k: str(v) for k, v in (await shipped_flow_run_ids(session, list(wanted))).items()}
        semaphore = asyncio.Semaphore(concurrency)

        async def one(shipment: Shipment) -> Shipped:
            record = shipment.record
            async with semaphore:
                parent = known.get(record.parent_run_id) if record.parent_run_id else None
                return await shipper.ship(
                    shipment, flow_run_id=known.get(record.run_id), parent_flow_run_id=parent
                )

        outcomes = await asyncio.gather(*(one(s) for s in batch), return_exceptions=True)
        done: list[tuple[uuid.UUID, uuid.UUID | None, str | None]] = []
        lines: list[dict[str, Any]] = []
        for shipment, outcome in zip(batch, outcomes, strict=True):
            if isinstance(outcome, BaseException):
                if not isinstance(outcome, Exception):
                    raise outcome
                if is_rejection(outcome):
                    reason = f"rejected by Prefect: {outcome}"[:2000]
                    log.error("run %s %s", shipment.record.run_id, reason)
                    done += [(r.id, None, reason) for r in shipment.records]
                    result.rejected += len(shipment.records)
                    continue
                result.error = result.error or outcome
                for record in shipment.records:
                    await note_run_record_failure(
                        session, record_id=record.id, error=f"{type(outcome).__name__}: {outcome}"
                    )
                continue
            run_id, record_lines = outcome
            lines.extend(record_lines)
            done += [(r.id, uuid.UUID(run_id), None) for r in shipment.records]
            result.run_ids.append(run_id)
        try:
            await shipper.runs.create_logs(lines)
        except Exception as error:  # the runs exist; the next round re-sends their log lines
            result.error = error
            raise _Rollback from error
        await mark_run_records_shipped(session, done)
        result.shipped = len(done) - result.rejected


class _Rollback(Exception):
    """Ends a batch's transaction without marking anything shipped."""
