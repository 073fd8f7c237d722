"""The run-record outbox. A run record is one instant of a run (a publish attempt, an analytics
sync, a sweep, a token refresh): its start, written in the SAME transaction as the claim that
starts the work (`add_run_start`), and its end, written in the SAME transaction as the outcome
(`add_run_record`). So the Prefect UI shows exactly what the database committed, and the reporter
(`flows/reporter/`), woken by the `NOTIFY` each insert sends, can ship each instant as it
happens: Prefect's own start and end times are then the real ones. Nothing on the request path
ever talks to Prefect.

A run recorded only by its end (no start row) is shipped whole, after the fact; so is every run
while the reporter works through a backlog. The reporter says so on the run.

A run may also carry table artifacts (`add_run_artifact`, the `run_artifacts` outbox): written
in the transaction of what they sum up, shipped after the run they belong to."""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Exists, and_, func, or_, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import aliased

from models.statuses import AccountStatus, AttemptKind, AttemptOutcome, RunPhase, TargetStatus
from models.tables import PublishTarget, RunArtifact, RunRecord, SocialAccount

#: The channel every insert into `run_records` notifies (trigger of migration 0004).
NOTIFY_CHANNEL = "run_records"
_RUN_NAMESPACE = uuid.UUID("6f1c8a52-54a4-4c3e-9a56-0e4f3b1f8d10")


def derived_run_id(name: str) -> uuid.UUID:
    """A run id derived from a stable name (e.g. `sync-job:<id>`), so another unit of work can
    refer to the run (a sync child to its parent) without reading it."""
    return uuid.uuid5(_RUN_NAMESPACE, name)


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
    - `next_attempt_at`: for `RETRYING`, when the next attempt is due (None: the queue decides);
    - `run_id`: the run whose end this is (the id its `RunStart` carried); None: a run recorded
      whole, identified by the record's own id;
    - `parent_run_id`: the run this one belongs to (a sync child's parent), linked in Prefect.
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
    run_id: uuid.UUID | None = None
    parent_run_id: uuid.UUID | None = None

    def row(self) -> dict[str, Any]:
        if self.started_at.tzinfo is None or self.ended_at.tzinfo is None:
            raise ValueError("attempt record instants must be timezone-aware")
        record_id = uuid.uuid4()
        return {
            "id": record_id,
            "run_id": self.run_id or record_id,
            "parent_run_id": self.parent_run_id,
            "phase": RunPhase.END,
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


@dataclass(frozen=True, slots=True)
class RunStart:
    """A run that starts now: written with the claim that starts the work, so the reporter can
    open the Prefect run while the work runs. The run's `AttemptRecord` (its end) carries the
    same `run_id`; name, tags and parameters are those of the end unless the end changes them."""

    run_id: uuid.UUID
    kind: AttemptKind
    name: str
    started_at: datetime
    tags: Sequence[str] = ()
    parameters: dict[str, Any] = field(default_factory=dict)
    parent_run_id: uuid.UUID | None = None

    def row(self) -> dict[str, Any]:
        if self.started_at.tzinfo is None:
            raise ValueError("run start instants must be timezone-aware")
        return {
            "id": uuid.uuid4(),
            "run_id": self.run_id,
            "parent_run_id": self.parent_run_id,
            "phase": RunPhase.START,
            "kind": AttemptKind(self.kind),
            "run_name": self.name[:200],
            "tags": list(dict.fromkeys(self.tags)),
            "parameters": json.loads(json.dumps(self.parameters, default=str)),
            "outcome": None,
            "state_message": None,
            "started_at": self.started_at,
            "ended_at": None,
            "next_run_at": None,
            "logs": [],
        }


_INSERT_RUN_RECORD = insert(RunRecord.__table__).returning(RunRecord.__table__.c.id)


async def add_run_start(
    session: AsyncSession, start: RunStart, *, prefect_flow_run_id: uuid.UUID | None = None
) -> uuid.UUID:
    """Queue a run's start, inside the transaction that claims its work.

    `prefect_flow_run_id`: the run already IS a Prefect flow run (a deployment run executing
    the same use case): the row is stored as shipped, pointing at it, so the run's children are
    linked to it and nothing is created twice.
    """
    row = start.row()
    if prefect_flow_run_id is not None:
        row |= {"shipped_at": datetime.now(UTC), "prefect_flow_run_id": prefect_flow_run_id}
    return (await session.execute(_INSERT_RUN_RECORD, row)).scalar_one()


async def add_run_record(session: AsyncSession, record: AttemptRecord) -> uuid.UUID:
    """Queue one finished attempt for the Prefect UI, inside the caller's open transaction.

    Call it in the same transaction that commits the attempt's outcome: then the run shows in
    Prefect if and only if the outcome committed. Returns the record id (the Prefect run's
    idempotency key derives from the run id: `record.run_id`, or this id for a run recorded
    whole).
    """
    return (await session.execute(_INSERT_RUN_RECORD, record.row())).scalar_one()


def held_back(*, held: Sequence[uuid.UUID] | None = None) -> Exists:
    """Whether an earlier unshipped record of a `RunRecord`'s own run, or of its parent run,
    holds it back (a run's end never overtakes its start, a child never its parent's
    creation); records in `held` (already claimed by this transaction) hold nothing back."""
    earlier = aliased(RunRecord)
    conditions = [
        earlier.shipped_at.is_(None),
        earlier.sequence < RunRecord.sequence,
        or_(
            earlier.run_id == RunRecord.run_id,
            and_(RunRecord.parent_run_id.is_not(None), earlier.run_id == RunRecord.parent_run_id),
        ),
    ]
    if held is not None:
        conditions.append(earlier.id.not_in(list(held)))
    return select(earlier.id).where(*conditions).exists()


async def claim_unshipped_run_records(session: AsyncSession, *, limit: int) -> list[RunRecord]:
    """The oldest unshipped records that may ship now, row-locked for this transaction
    (`SKIP LOCKED`: several reporters split the backlog instead of queueing behind each other).

    A record waits while an earlier record of its own run, or of its parent run, is unshipped
    (a run's end never overtakes its start, a child never its parent's creation), so no two
    records of a batch depend on each other and a batch may be shipped concurrently.
    """
    rows = await session.scalars(
        select(RunRecord)
        .where(RunRecord.shipped_at.is_(None), ~held_back())
        .order_by(RunRecord.sequence)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    return list(rows.all())


async def shipped_flow_run_ids(
    session: AsyncSession, run_ids: Sequence[uuid.UUID]
) -> dict[uuid.UUID, uuid.UUID]:
    """The Prefect flow run of each of these runs that has one already."""
    if not run_ids:
        return {}
    rows = await session.execute(
        select(RunRecord.run_id, RunRecord.prefect_flow_run_id).where(
            RunRecord.run_id.in_(list(set(run_ids))),
            RunRecord.prefect_flow_run_id.is_not(None),
        )
    )
    return {run_id: flow_run_id for run_id, flow_run_id in rows.all()}


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


#: Prefect 3's artifact keys: "must only contain lowercase letters, numbers, and dashes"
#: (`prefect/types/names.py`, `ArtifactKey`, validated by `ArtifactCreate` in
#: `prefect/server/schemas/actions.py`); checked here, so a bad key fails its writer at once
#: rather than being rejected by Prefect later.
_ARTIFACT_KEY = re.compile(r"^[a-z0-9-]+$")


def artifact_key(*parts: object) -> str:
    """A Prefect artifact key from readable parts (`sync`, a job id, a day): lowercased, any
    other character turned into a dash."""
    key = re.sub(r"[^a-z0-9-]+", "-", "-".join(str(p) for p in parts).lower()).strip("-")
    if not _ARTIFACT_KEY.match(key) or len(key) > 200:
        raise ValueError(f"not a Prefect artifact key: {key!r}")
    return key


async def add_run_artifact(
    session: AsyncSession,
    *,
    run_id: uuid.UUID,
    key: str,
    description: str,
    rows: Sequence[dict[str, Any]],
) -> bool:
    """Queue a table artifact of the run `run_id`, inside the caller's open transaction; False
    when `key` was written already (each key is written, and shipped, once)."""
    if not _ARTIFACT_KEY.match(key):
        raise ValueError(f"not a Prefect artifact key: {key!r}")
    data = json.loads(json.dumps(list(rows), default=str))
    inserted = await session.scalar(
        insert(RunArtifact)
        .values(id=uuid.uuid4(), run_id=run_id, key=key, description=description, data=data)
        .on_conflict_do_nothing(index_elements=["key"])
        .returning(RunArtifact.id)
    )
    return inserted is not None


async def run_artifact_exists(session: AsyncSession, key: str) -> bool:
    """Whether an artifact of this key was written (shipped or not)."""
    found = await session.scalar(select(RunArtifact.id).where(RunArtifact.key == key))
    return found is not None


@dataclass(frozen=True, slots=True)
class PipelineHealth:
    """What the hourly health line reports (the log-based metrics of `deployments/cloud`)."""

    failed_targets: int
    accounts_needing_reconnect: int
    reporter_backlog: int
    reporter_lag_seconds: float


async def pipeline_health(session: AsyncSession) -> PipelineHealth:
    """Targets in the failed view, accounts to reconnect, and the run-record outbox's backlog and
    the age of its oldest unshipped record, in one round trip."""
    failed = (
        select(func.count())
        .select_from(PublishTarget)
        .where(PublishTarget.status == TargetStatus.FAILED)
        .scalar_subquery()
    )
    reconnect = (
        select(func.count())
        .select_from(SocialAccount)
        .where(SocialAccount.status == AccountStatus.NEEDS_RECONNECT)
        .scalar_subquery()
    )
    backlog = (
        select(func.count()).select_from(RunRecord).where(RunRecord.shipped_at.is_(None))
    ).scalar_subquery()
    oldest = (
        select(func.min(RunRecord.created_at)).where(RunRecord.shipped_at.is_(None))
    ).scalar_subquery()
    lag = func.coalesce(func.extract("epoch", func.now() - oldest), 0)
    row = (await session.execute(select(failed, reconnect, backlog, lag))).one()
    return PipelineHealth(
        failed_targets=int(row[0]),
        accounts_needing_reconnect=int(row[1]),
        reporter_backlog=int(row[2]),
        reporter_lag_seconds=round(float(row[3]), 1),
    )
