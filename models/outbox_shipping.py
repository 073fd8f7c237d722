"""The reporter's side of the run-record outbox (`models/outbox.py` is the writers' side): what
it claims beyond `claim_unshipped_run_records`, how it marks a batch shipped in one statement,
and how far behind it is.

Why a claim of its own for ends. `claim_unshipped_run_records` holds back a run's end while its
start is unshipped (the end never overtakes the start). When the reporter is behind, both are
usually waiting: shipping them as two Prefect calls (create Running, then set the final state)
costs twice what one call costs (create the run in its final state), and Prefect's times are
shipping times either way. So once the reporter holds a run's start, it also claims that run's
end, if one is committed, and ships the two as one run.

Artifacts (`run_artifacts`) are claimed once the run they belong to has its Prefect flow run
(`claim_run_artifacts`), and marked in one statement like the records.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import and_, bindparam, exists, func, or_, select, text, update
from sqlalchemy.ext.asyncio import AsyncSession

from models.outbox import held_back
from models.statuses import RunPhase
from models.tables import RunArtifact, RunRecord


async def claim_run_ends(
    session: AsyncSession, *, run_ids: Sequence[uuid.UUID], held: Sequence[uuid.UUID]
) -> list[RunRecord]:
    """The unshipped ends of these runs (whose starts this transaction holds, `held`),
    row-locked with `SKIP LOCKED`, that nothing else holds back: no earlier unshipped record of
    the run other than the held ones, none of the parent run (a child never before its parent's
    creation)."""
    if not run_ids:
        return []
    rows = await session.scalars(
        select(RunRecord)
        .where(
            RunRecord.shipped_at.is_(None),
            RunRecord.phase == RunPhase.END,
            RunRecord.run_id.in_(list(set(run_ids))),
            ~held_back(held=held),
        )
        .order_by(RunRecord.sequence)
        .with_for_update(skip_locked=True)
    )
    return list(rows.all())


_MARK_SHIPPED = text(
    """
    UPDATE run_records AS r
       SET shipped_at = now(),
           prefect_flow_run_id = s.flow_run_id,
           attempts = r.attempts + 1,
           last_error = s.error
      FROM unnest(CAST(:ids AS uuid[]), CAST(:flow_run_ids AS uuid[]), CAST(:errors AS text[]))
           AS s(id, flow_run_id, error)
     WHERE r.id = s.id
    """
).bindparams(bindparam("ids"), bindparam("flow_run_ids"), bindparam("errors"))


async def mark_run_records_shipped(
    session: AsyncSession,
    shipped: Sequence[tuple[uuid.UUID, uuid.UUID | None, str | None]],
) -> None:
    """`mark_run_record_shipped` for a whole batch in one statement: (record id, the Prefect
    flow run it was shipped as or None, the rejection error or None) per record."""
    if not shipped:
        return
    ids, flow_run_ids, errors = zip(*shipped, strict=True)
    await session.execute(
        _MARK_SHIPPED,
        {
            "ids": [str(i) for i in ids],
            "flow_run_ids": [str(f) if f else None for f in flow_run_ids],
            "errors": [e[:2000] if e else None for e in errors],
        },
    )


@dataclass(frozen=True, slots=True)
class Backlog:
    """How far behind the reporter is: unshipped records and the age of the oldest."""

    records: int
    oldest_seconds: float


async def outbox_backlog(session: AsyncSession) -> Backlog:
    """One round trip over the partial index of unshipped records."""
    age = func.extract("epoch", func.now() - func.min(RunRecord.created_at))
    statement = select(func.count(), func.coalesce(age, 0)).where(RunRecord.shipped_at.is_(None))
    row = (await session.execute(statement)).one()
    return Backlog(records=int(row[0]), oldest_seconds=round(float(row[1]), 1))


async def claim_run_artifacts(
    session: AsyncSession, *, limit: int
) -> list[tuple[RunArtifact, uuid.UUID | None]]:
    """The oldest unshipped artifacts that may ship now, row-locked (`SKIP LOCKED`), each with
    its run's Prefect flow run: those whose run has one, and (with None) those whose run never
    will (its records all shipped without one: Prefect rejected them), to be given up on."""
    flow_run = (
        select(RunRecord.prefect_flow_run_id)
        .where(RunRecord.run_id == RunArtifact.run_id, RunRecord.prefect_flow_run_id.is_not(None))
        .limit(1)
        .scalar_subquery()
    )
    recorded = exists().where(RunRecord.run_id == RunArtifact.run_id)
    waiting = exists().where(RunRecord.run_id == RunArtifact.run_id, RunRecord.shipped_at.is_(None))
    rows = await session.execute(
        select(RunArtifact, flow_run)
        .where(
            RunArtifact.shipped_at.is_(None),
            or_(flow_run.is_not(None), and_(recorded, ~waiting)),
        )
        .order_by(RunArtifact.sequence)
        .limit(limit)
        .with_for_update(skip_locked=True, of=RunArtifact)
    )
    return [(artifact, flow_run_id) for artifact, flow_run_id in rows.all()]


_MARK_ARTIFACTS_SHIPPED = text(
    """
    UPDATE run_artifacts AS a
       SET shipped_at = now(),
           prefect_artifact_id = s.artifact_id,
           attempts = a.attempts + 1,
           last_error = s.error
      FROM unnest(CAST(:ids AS uuid[]), CAST(:artifact_ids AS uuid[]), CAST(:errors AS text[]))
           AS s(id, artifact_id, error)
     WHERE a.id = s.id
    """
).bindparams(bindparam("ids"), bindparam("artifact_ids"), bindparam("errors"))


async def mark_run_artifacts_shipped(
    session: AsyncSession,
    shipped: Sequence[tuple[uuid.UUID, uuid.UUID | None, str | None]],
) -> None:
    """(artifact row id, the Prefect artifact it was shipped as or None, the error of one
    given up on or None) per artifact, in one statement."""
    if not shipped:
        return
    ids, artifact_ids, errors = zip(*shipped, strict=True)
    await session.execute(
        _MARK_ARTIFACTS_SHIPPED,
        {
            "ids": [str(i) for i in ids],
            "artifact_ids": [str(a) if a else None for a in artifact_ids],
            "errors": [e[:2000] if e else None for e in errors],
        },
    )


async def note_run_artifact_failure(
    session: AsyncSession, *, artifact_ids: Sequence[uuid.UUID], error: str
) -> None:
    """A shipping attempt failed (Prefect down): the artifacts stay queued, their attempt
    counted (a retried shipment looks the key up before creating it again)."""
    if not artifact_ids:
        return
    await session.execute(
        update(RunArtifact)
        .where(RunArtifact.id.in_(list(artifact_ids)))
        .values(attempts=RunArtifact.attempts + 1, last_error=error[:2000])
    )
