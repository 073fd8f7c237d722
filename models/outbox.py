"""The run-record outbox. A run record describes one finished attempt (a publish attempt, an
analytics sync) and is written in the SAME transaction as the outcome it describes, so the
Prefect UI shows exactly what the database committed; `flows/reporter.py` ships the records in
`sequence` order, and nothing on the request path ever talks to Prefect."""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import (
    func,
    select,
    update,
)
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from models.statuses import AttemptKind, AttemptOutcome
from models.tables import RunRecord


@dataclass(frozen=True, slots=True)
class LogLine:
    """One line of an attempt's log, kept for its run record."""

    level: int
    message: str
    at: datetime

    def as_json(self) -> dict[str, Any]:
        return {"level": self.level, "message": self.message, "timestamp": self.at.isoformat()}


@dataclass(frozen=True, slots=True)
class AttemptRecord:
    """One finished attempt as the pipeline saw it, in its own words (`AttemptKind`,
    `AttemptOutcome`); the reporter alone turns it into a Prefect flow run.

    - `name`: readable, e.g. `linkedin · 3f2a9c1e`;
    - `tags`: e.g. `company:<id>`, `platform:<name>`, `post:<id>`;
    - `parameters`: JSON-able inputs (non-JSON values are stringified);
    - `message`: the error of a failure, or what was published;
    - `started_at` / `ended_at`: the real instants (timezone-aware);
    - `next_attempt_at`: for `RETRYING`, when the next attempt is due (None: the queue decides).
    """

    kind: AttemptKind
    name: str
    outcome: AttemptOutcome
    started_at: datetime
    ended_at: datetime
    tags: Sequence[str] = ()
    parameters: dict[str, Any] = field(default_factory=dict)
    message: str | None = None
    next_attempt_at: datetime | None = None
    logs: Sequence[LogLine] = ()

    def row(self) -> dict[str, Any]:
        if self.started_at.tzinfo is None or self.ended_at.tzinfo is None:
            raise ValueError("attempt record instants must be timezone-aware")
        return {
            "kind": AttemptKind(self.kind),
            "run_name": self.name[:200],
            "tags": list(dict.fromkeys(self.tags)),
            "parameters": json.loads(json.dumps(self.parameters, default=str)),
            "outcome": AttemptOutcome(self.outcome),
            "state_message": self.message,
            "started_at": self.started_at,
            "ended_at": max(self.ended_at, self.started_at),
            "next_run_at": self.next_attempt_at,
            "logs": [line.as_json() for line in self.logs],
        }


_INSERT_RUN_RECORD = insert(RunRecord.__table__).returning(RunRecord.__table__.c.id)


async def add_run_record(session: AsyncSession, record: AttemptRecord) -> uuid.UUID:
    """Queue one finished attempt for the Prefect UI, inside the caller's open transaction.

    Call it in the same transaction that commits the attempt's outcome: then the run shows in
    Prefect if and only if the outcome committed. Returns the record id (the reporter derives the
    Prefect run's idempotency key from it).
    """
    return (await session.execute(_INSERT_RUN_RECORD, record.row())).scalar_one()


async def claim_unshipped_run_records(session: AsyncSession, *, limit: int) -> list[RunRecord]:
    """The oldest unshipped records, row-locked for this transaction (`SKIP LOCKED`: several
    reporters split the backlog instead of queueing behind each other)."""
    rows = await session.scalars(
        select(RunRecord)
        .where(RunRecord.shipped_at.is_(None))
        .order_by(RunRecord.sequence)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    return list(rows.all())


async def mark_run_record_shipped(
    session: AsyncSession,
    *,
    record_id: uuid.UUID,
    flow_run_id: uuid.UUID | None,
    error: str | None = None,
) -> None:
    """Done with a record: shipped as `flow_run_id`, or given up on with `error` (rejected)."""
    await session.execute(
        update(RunRecord)
        .where(RunRecord.id == record_id)
        .values(
            shipped_at=func.now(),
            prefect_flow_run_id=flow_run_id,
            attempts=RunRecord.attempts + 1,
            last_error=error,
        )
    )


async def note_run_record_failure(
    session: AsyncSession, *, record_id: uuid.UUID, error: str
) -> None:
    """A shipping attempt failed (Prefect down, timeout): keep the record queued, note why."""
    await session.execute(
        update(RunRecord)
        .where(RunRecord.id == record_id)
        .values(attempts=RunRecord.attempts + 1, last_error=error[:2000])
    )
