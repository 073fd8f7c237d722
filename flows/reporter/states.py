"""The pipeline's words in Prefect's: which flow a kind of attempt shows up as, which state an
outcome is, and what a run carries besides (labels with its real times, its log lines). The
reporter is the only place that knows Prefect's vocabulary; the outbox stays in the pipeline's
own (`AttemptKind`, `AttemptOutcome`)."""

from __future__ import annotations

import logging
import uuid
from datetime import UTC, datetime
from typing import Any

from models.statuses import AttemptKind, AttemptOutcome
from models.tables import RunRecord

IDEMPOTENCY_PREFIX = "tendsocial-run-record:"
LOGGER_NAME = "tendsocial"
#: The `tendsocial.timing` label of a run whose Prefect times are shipping times.
AFTER_THE_FACT = "after-the-fact"

#: The Prefect flow each kind of attempt shows up as.
FLOW_NAMES: dict[AttemptKind, str] = {
    AttemptKind.PUBLISH: "publish-post",
    AttemptKind.SYNC: "sync-analytics",
    AttemptKind.SYNC_PLATFORM: "sync-platform-analytics",
    AttemptKind.SWEEP: "enqueue-due-posts",
    AttemptKind.TOKEN_REFRESH: "refresh-expiring-tokens",
    AttemptKind.STAGE_MEDIA: "stage-media",
}

#: The Prefect state type of each final outcome (`RETRYING` is a SCHEDULED state by name).
#: Red (FAILED, CRASHED) means someone has to act; what needs nobody is never red
#: (docs/prefect.md, "Red means act").
STATE_TYPES: dict[AttemptOutcome, str] = {
    AttemptOutcome.SUCCEEDED: "COMPLETED",
    AttemptOutcome.FAILED: "FAILED",
    AttemptOutcome.CRASHED: "CRASHED",
    AttemptOutcome.CANCELLED: "CANCELLED",
    AttemptOutcome.RETRYING: "SCHEDULED",
    AttemptOutcome.NOT_AVAILABLE: "COMPLETED",
    AttemptOutcome.SUPERSEDED: "CANCELLED",
}

#: The state name of outcomes that share a type with another (Prefect shows the name; a
#: state's name is free text: `StateCreate.name` in `prefect/server/schemas/actions.py`).
STATE_NAMES: dict[AttemptOutcome, str] = {
    AttemptOutcome.NOT_AVAILABLE: "Not available",
    AttemptOutcome.SUPERSEDED: "Superseded",
}

#: The state names a run or task run keeps once final (an earlier shipment may have set one).
FINAL_STATE_NAMES = (
    "Completed",
    "Failed",
    "Crashed",
    "Cancelled",
    "AwaitingRetry",
    "Not available",
    "Superseded",
)


def flow_name(record: RunRecord) -> str:
    return FLOW_NAMES[AttemptKind(record.kind)]


def idempotency_key(run_id: uuid.UUID) -> str:
    """The Prefect run's idempotency key: from the run id (the record id of a run recorded
    whole), so a start and its end, or a retried shipment, find the same run."""
    return f"{IDEMPOTENCY_PREFIX}{run_id}"


def final_state(record: RunRecord) -> dict[str, Any]:
    """The record's final state as a Prefect `StateCreate`."""
    if record.outcome == AttemptOutcome.RETRYING:
        when = record.next_run_at or record.ended_at or datetime.now(UTC)
        return {
            "type": "SCHEDULED",
            "name": "AwaitingRetry",
            "message": record.state_message,
            "state_details": {"scheduled_time": when.isoformat()},
        }
    outcome = AttemptOutcome(record.outcome)
    state = {"type": STATE_TYPES[outcome], "message": record.state_message}
    if outcome in STATE_NAMES:
        state["name"] = STATE_NAMES[outcome]
    return state


def base_labels(record: RunRecord) -> dict[str, Any]:
    return {
        "tendsocial.started_at": record.started_at.isoformat(),
        "tendsocial.run_record": str(record.run_id),
    }


def end_labels(record: RunRecord) -> dict[str, Any]:
    """The real end and duration (a run created at its end has no Prefect duration of its own)."""
    if record.ended_at is None:
        return {}
    duration = (record.ended_at - record.started_at).total_seconds() * 1000
    return {
        "tendsocial.ended_at": record.ended_at.isoformat(),
        "tendsocial.duration_ms": round(duration, 1),
    }


def late_labels(record: RunRecord, lag: float) -> dict[str, Any]:
    """What a run shipped after the fact carries: Prefect's own times are then shipping times,
    so the real ones travel as labels (and in the closing log line)."""
    return {
        "tendsocial.timing": AFTER_THE_FACT,
        "tendsocial.shipping_lag_s": round(lag, 1),
        "tendsocial.started_at": record.started_at.isoformat(),
    } | end_labels(record)


def log_lines(record: RunRecord, flow_run_id: str, *, lag: float | None) -> list[dict[str, Any]]:
    """The end record's log lines for `POST /logs/`, plus a closing line with the real times
    (and, when shipped after the fact, saying that Prefect's own times are not them)."""
    name = f"{LOGGER_NAME}.{flow_name(record)}"
    ended_at = record.ended_at or record.started_at
    lines = [
        {
            "name": name,
            "level": int(line.get("level", logging.INFO)),
            "message": str(line.get("message", "")),
            "timestamp": line.get("timestamp") or ended_at.isoformat(),
            "flow_run_id": flow_run_id,
        }
        for line in record.logs
    ]
    duration = (ended_at - record.started_at).total_seconds() * 1000
    closing = (
        f"ran {record.started_at.isoformat()} → {ended_at.isoformat()} "
        f"({duration:.0f} ms), outcome {record.outcome}"
    )
    if lag is not None:
        closing += (
            f"; shipped {lag:.1f} s after the fact (reporter backlog): Prefect's start, end and "
            "duration of this run are shipping times, the real ones are these"
        )
    lines.append(
        {
            "name": name,
            "level": logging.INFO if lag is None else logging.WARNING,
            "message": closing,
            "timestamp": ended_at.isoformat(),
            "flow_run_id": flow_run_id,
        }
    )
    return lines
