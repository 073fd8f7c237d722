"""The reporter: ships run records (the Prefect visibility outbox) to the Prefect API.

Why an outbox: a Prefect task run costs ~33 ms and a process tops out near 35 runs/s, an
unreachable server stops the body from running, and a server lost mid-run fails the call after the
work was done (measured on Prefect 3.9.1). So the request path only INSERTs a `run_records` row in
the transaction that commits its outcome, and this loop, off the critical path, turns the rows into
Prefect flow runs. Prefect slow or down delays the UI, never a publish.

Real start and end times. Prefect 3.9.1 stamps every state with the *server's* clock
(`StateCreate` forbids `timestamp`; `FlowRunCreate` has no start/end fields), so Prefect's
`start_time`/`end_time` are the instants the reporter ships. Hence live shipping: a run's start
record is committed with the claim, PostgreSQL `NOTIFY` wakes the reporter, and the run is created
in Running at once (Prefect stamps the real start); its end record sets the final state (the real
end). While the reporter keeps up, Prefect's times are the real ones within a second.

Cost per run (Prefect's server is the expensive part: ~13 ms of its CPU to create a run, ~10 ms
per state change, ~0.5 ms per log line, measured on this 2-core box with services on):
- live: 2 requests (create in Running, set the final state) + a share of the batch's logs request;
- behind (the start and the end both wait in the outbox): ONE request, the run created directly in
  its final state (its Prefect times are shipping times either way; the real ones travel as labels
  and in the closing log line, and the run is labelled `tendsocial.timing: after-the-fact`). So a
  backlog costs Prefect about half of what live shipping does, and catches up twice as fast;
- a sync child: one more request (the task run in its parent that links it), two when live;
- a retry (AwaitingRetry) keeps Running → AwaitingRetry: a run created Scheduled would read as one
  that never ran.
All log lines of a batch go in one `POST /logs/` (it takes a list), the records of a batch are
marked shipped in one UPDATE, and one keep-alive HTTP client is reused.

Order and durability. Records are claimed oldest `sequence` first, in batches, row-locked with
`FOR UPDATE SKIP LOCKED` (several reporters split the backlog), never an end before its start nor
a child before its parent, except that a claimed start brings its run's committed end along
(`models/outbox_shipping.py`). A record Prefect does not take stays queued for the next round
(exponential back-off while Prefect is down, so an outage is caught up when it returns); a record
Prefect rejects as invalid (4xx other than 408/409/429) is marked shipped with its error instead of
blocking the queue forever.

No duplicates. Prefect 3.9.1 does not let a client choose a flow run's id, but `POST /flow_runs/`
takes an `idempotency_key`, unique per flow on the server: the key derives from the run id, so a
reporter that crashed after creating the run and before marking the record shipped gets the same
run back (HTTP 200 instead of 201) and only finishes what is missing (the final state, read from
the returned run; the log lines, sent again only when the run has none).

Behind. Every `behind_check_seconds` the reporter measures its backlog (unshipped records, age of
the oldest); past `behind_records` or `behind_seconds` it logs a WARNING and emits the Prefect event
`tendsocial.reporter.behind` (payload: the backlog), and `tendsocial.reporter.caught-up` once the
backlog is below half of both. Prefect's open-source automations match events, not labels: the
automation "reporter behind" (`deployments/prefect_views.py`) notifies on it.

Client: plain httpx against `PREFECT_API_URL` (`PREFECT_API_AUTH_STRING` as basic auth for a
self-hosted server, `PREFECT_API_KEY` as bearer for Prefect Cloud), a short timeout and no
hidden retries: the loop's back-off is the retry policy, and status codes (201 vs 200) are
visible.
"""

from __future__ import annotations

import asyncio
import base64
import collections
import contextlib
import logging
import threading
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import httpx
from sqlalchemy.engine import URL
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker, create_async_engine

from models.outbox import (
    NOTIFY_CHANNEL,
    claim_unshipped_run_records,
    note_run_record_failure,
    shipped_flow_run_ids,
)
from models.outbox_shipping import (
    Backlog,
    claim_run_ends,
    mark_run_records_shipped,
    outbox_backlog,
)
from models.settings import ReporterSettings
from models.statuses import AttemptKind, AttemptOutcome, RunPhase
from models.tables import RunRecord

log = logging.getLogger(__name__)

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
}

#: The Prefect state type of each final outcome (`RETRYING` is a SCHEDULED state by name).
STATE_TYPES: dict[AttemptOutcome, str] = {
    AttemptOutcome.SUCCEEDED: "COMPLETED",
    AttemptOutcome.FAILED: "FAILED",
    AttemptOutcome.CRASHED: "CRASHED",
    AttemptOutcome.CANCELLED: "CANCELLED",
    AttemptOutcome.RETRYING: "SCHEDULED",
}


#: Events the reporter emits (Prefect's open-source automations match events, not labels).
BEHIND_EVENT = "tendsocial.reporter.behind"
CAUGHT_UP_EVENT = "tendsocial.reporter.caught-up"
REPORTER_RESOURCE_ID = "tendsocial.reporter"


def flow_name(record: RunRecord) -> str:
    return FLOW_NAMES[AttemptKind(record.kind)]


def idempotency_key(run_id: uuid.UUID) -> str:
    """The Prefect run's idempotency key: from the run id (the record id of a run recorded
    whole), so a start and its end, or a retried shipment, find the same run."""
    return f"{IDEMPOTENCY_PREFIX}{run_id}"


def _final_state(record: RunRecord) -> dict[str, Any]:
    """The record's final state as a Prefect `StateCreate`."""
    if record.outcome == AttemptOutcome.RETRYING:
        when = record.next_run_at or record.ended_at or datetime.now(UTC)
        return {
            "type": "SCHEDULED",
            "name": "AwaitingRetry",
            "message": record.state_message,
            "state_details": {"scheduled_time": when.isoformat()},
        }
    return {"type": STATE_TYPES[AttemptOutcome(record.outcome)], "message": record.state_message}


def _base_labels(record: RunRecord) -> dict[str, Any]:
    return {
        "tendsocial.started_at": record.started_at.isoformat(),
        "tendsocial.run_record": str(record.run_id),
    }


def _end_labels(record: RunRecord) -> dict[str, Any]:
    """The real end and duration (a run created at its end has no Prefect duration of its own)."""
    if record.ended_at is None:
        return {}
    duration = (record.ended_at - record.started_at).total_seconds() * 1000
    return {
        "tendsocial.ended_at": record.ended_at.isoformat(),
        "tendsocial.duration_ms": round(duration, 1),
    }


def _late_labels(record: RunRecord, lag: float) -> dict[str, Any]:
    """What a run shipped after the fact carries: Prefect's own times are then shipping times,
    so the real ones travel as labels (and in the closing log line)."""
    return {
        "tendsocial.timing": AFTER_THE_FACT,
        "tendsocial.shipping_lag_s": round(lag, 1),
        "tendsocial.started_at": record.started_at.isoformat(),
    } | _end_labels(record)


def _log_lines(record: RunRecord, flow_run_id: str, *, lag: float | None) -> list[dict[str, Any]]:
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


def is_rejection(error: Exception) -> bool:
    """Prefect refused the record itself (retrying cannot help), not a transient failure."""
    if not isinstance(error, httpx.HTTPStatusError):
        return False
    code = error.response.status_code
    return 400 <= code < 500 and code not in (408, 409, 429)


_FINAL_STATE_NAMES = ("Completed", "Failed", "Crashed", "Cancelled", "AwaitingRetry")


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


class PrefectRuns:
    """The few Prefect REST calls the reporter makes (see the module docstring for how many per
    run); `requests` counts them, for the pace."""

    def __init__(self, http: httpx.AsyncClient, *, live_tolerance_seconds: float = 1.0) -> None:
        self.http = http
        self.live_tolerance_seconds = live_tolerance_seconds
        self.requests = 0
        self.late = 0
        self._flow_ids: dict[str, str] = {}

    async def _call(self, method: str, path: str, json: Any = None) -> httpx.Response:
        self.requests += 1
        response = await self.http.request(method, path, json=json)
        response.raise_for_status()
        return response

    async def flow_id(self, name: str) -> str:
        """`POST /flows/` returns the existing flow for a known name."""
        if name not in self._flow_ids:
            self._flow_ids[name] = (await self._call("POST", "/flows/", {"name": name})).json()[
                "id"
            ]
        return self._flow_ids[name]

    async def create_run(
        self,
        record: RunRecord,
        *,
        labels: dict[str, Any],
        state: dict[str, Any],
        parent_task_run_id: str | None = None,
    ) -> tuple[dict[str, Any], bool]:
        """Create the record's flow run in `state` (Prefect stamps it now), or get the one an
        earlier attempt created; True when created now."""
        body: dict[str, Any] = {
            "flow_id": await self.flow_id(flow_name(record)),
            "name": record.run_name,
            "parameters": record.parameters,
            "tags": list(record.tags),
            "labels": labels,
            "idempotency_key": idempotency_key(record.run_id),
            "state": state,
        }
        if parent_task_run_id:
            body["parent_task_run_id"] = parent_task_run_id
        response = await self._call("POST", "/flow_runs/", body)
        return response.json(), response.status_code == 201

    async def link_task_run(
        self, *, parent_flow_run_id: str, record: RunRecord, state: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        """The task run in the parent's flow run that stands for this child run (Prefect links
        a child flow run to its parent through `parent_task_run_id`; the parent's page then
        lists it). Idempotent: (flow run, task key, dynamic key) is unique on the server, which
        then returns the existing task run (in whatever state it is)."""
        body: dict[str, Any] = {
            "flow_run_id": parent_flow_run_id,
            "task_key": f"{flow_name(record)}-child",
            "dynamic_key": str(record.run_id),
            "name": record.run_name,
            "tags": list(record.tags),
            "state": state or {"type": "RUNNING"},
        }
        return (await self._call("POST", "/task_runs/", body)).json()

    async def set_state(self, flow_run_id: str, state: dict[str, Any]) -> None:
        await self._call(
            "POST", f"/flow_runs/{flow_run_id}/set_state", {"state": state, "force": True}
        )

    async def set_task_state(self, task_run_id: str, state: dict[str, Any]) -> None:
        await self._call(
            "POST", f"/task_runs/{task_run_id}/set_state", {"state": state, "force": True}
        )

    async def read_run(self, flow_run_id: str) -> dict[str, Any]:
        return (await self._call("GET", f"/flow_runs/{flow_run_id}")).json()

    async def add_labels(self, flow_run_id: str, labels: dict[str, Any]) -> None:
        await self._call("PATCH", f"/flow_runs/{flow_run_id}/labels", labels)

    async def has_logs(self, flow_run_id: str) -> bool:
        body = {"logs": {"flow_run_id": {"any_": [flow_run_id]}}, "limit": 1}
        return bool((await self._call("POST", "/logs/filter", body)).json())

    async def create_logs(self, lines: Sequence[dict[str, Any]]) -> None:
        if lines:
            await self._call("POST", "/logs/", list(lines))

    async def emit_event(self, event: str, *, payload: dict[str, Any]) -> None:
        """One Prefect event about the reporter itself (`POST /events`, in the open-source
        server too: `prefect/server/api/events.py`), for automations to match."""
        body = {
            "id": str(uuid.uuid4()),
            "occurred": datetime.now(UTC).isoformat(),
            "event": event,
            "resource": {
                "prefect.resource.id": REPORTER_RESOURCE_ID,
                "prefect.resource.name": "tendsocial reporter",
            },
            "payload": payload,
        }
        await self._call("POST", "/events", [body])

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
    ) -> tuple[str, list[dict[str, Any]]]:
        """Ship one run's records; returns the run's id and the log lines still to send.

        A start alone opens the run in Running (Prefect stamps the start). An end closes the
        run its start opened. An end whose run is not in Prefect yet (its start came along, or a
        run recorded whole) creates the run in its final state, in one request.
        """
        record = shipment.record
        if shipment.end is None:  # the run is under way
            if flow_run_id:  # the run is a Prefect run already (a deployment's)
                return flow_run_id, []
            lag = self.lag_since(record.started_at)
            labels = _base_labels(record) | (_late_labels(record, lag) if lag is not None else {})
            parent_task = None
            if parent_flow_run_id:
                task = await self.link_task_run(
                    parent_flow_run_id=parent_flow_run_id, record=record
                )
                parent_task = task["id"]
            run, _ = await self.create_run(
                record, labels=labels, state={"type": "RUNNING"}, parent_task_run_id=parent_task
            )
            return run["id"], []
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

    async def _ship_whole(
        self, record: RunRecord, *, parent_flow_run_id: str | None, retried: bool
    ) -> tuple[str, list[dict[str, Any]]]:
        """Create the run at its end: Prefect stamps its start now, so it is after the fact as
        soon as its real start is further back than the tolerance."""
        lag = self.lag_since(record.started_at)
        labels = _base_labels(record) | _end_labels(record)
        if lag is not None:
            labels |= _late_labels(record, lag)
        final = _final_state(record)
        # A retry keeps Running → AwaitingRetry: created Scheduled it would read as not run yet.
        opening = {"type": "RUNNING"} if record.outcome == AttemptOutcome.RETRYING else final
        parent_task = None
        if parent_flow_run_id:
            task = await self.link_task_run(
                parent_flow_run_id=parent_flow_run_id, record=record, state=final
            )
            parent_task = task["id"]
            if (task.get("state") or {}).get("name") not in _FINAL_STATE_NAMES:
                await self.set_task_state(parent_task, final)
        run, created = await self.create_run(
            record, labels=labels, state=opening, parent_task_run_id=parent_task
        )
        state_name = (run.get("state") or {}).get("name")
        if opening is not final or (not created and state_name not in _FINAL_STATE_NAMES):
            await self.set_state(run["id"], final)
        if (retried or not created) and await self.has_logs(run["id"]):
            return run["id"], []
        return run["id"], _log_lines(record, run["id"], lag=lag)

    async def _close(
        self,
        record: RunRecord,
        *,
        flow_run_id: str,
        parent_flow_run_id: str | None,
        retried: bool,
    ) -> tuple[str, list[dict[str, Any]]]:
        """The end of a run whose start is in Prefect: set its final state (Prefect stamps the
        end now), saying so when that is late."""
        lag = self.lag_since(record.ended_at or record.started_at)
        final = _final_state(record)
        state_name = "Running"
        if retried:
            state_name = ((await self.read_run(flow_run_id)).get("state") or {}).get("name")
        if lag is not None:
            await self.add_labels(flow_run_id, _late_labels(record, lag))
        if state_name not in _FINAL_STATE_NAMES:
            await self.set_state(flow_run_id, final)
        if parent_flow_run_id:  # close the task run standing for this child in its parent
            task = await self.link_task_run(
                parent_flow_run_id=parent_flow_run_id, record=record, state=final
            )
            if (task.get("state") or {}).get("name") not in _FINAL_STATE_NAMES:
                await self.set_task_state(task["id"], final)
        if retried and await self.has_logs(flow_run_id):
            return flow_run_id, []
        return flow_run_id, _log_lines(record, flow_run_id, lag=lag)


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


async def ship_batch(
    sessions: async_sessionmaker[AsyncSession],
    runs: PrefectRuns,
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
    requests, late = runs.requests, runs.late
    with contextlib.suppress(_Rollback):
        await _ship_batch(sessions, runs, result, batch_size=batch_size, concurrency=concurrency)
    result.requests, result.late = runs.requests - requests, runs.late - late
    return result


async def _claim(session: AsyncSession, *, batch_size: int) -> list[RunRecord]:
    records = await claim_unshipped_run_records(session, limit=batch_size)
    ended = {r.run_id for r in records if r.phase == RunPhase.END}
    starts = [r.run_id for r in records if r.phase == RunPhase.START and r.run_id not in ended]
    if starts:
        records += await claim_run_ends(session, run_ids=starts, held=[r.id for r in records])
    return records


async def _ship_batch(
    sessions: async_sessionmaker[AsyncSession],
    runs: PrefectRuns,
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

        async def one(shipment: Shipment) -> tuple[str, list[dict[str, Any]]]:
            record = shipment.record
            async with semaphore:
                parent = known.get(record.parent_run_id) if record.parent_run_id else None
                return await runs.ship(
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
            await runs.create_logs(lines)
        except Exception as error:  # the runs exist; the next round re-sends their log lines
            result.error = error
            raise _Rollback from error
        await mark_run_records_shipped(session, done)
        result.shipped = len(done) - result.rejected


class _Rollback(Exception):
    """Ends a batch's transaction without marking anything shipped."""


def prefect_authorization(settings: ReporterSettings) -> dict[str, str]:
    """The `Authorization` header Prefect's own client sends: `Basic base64(auth string)` for a
    self-hosted server protected by `PREFECT_SERVER_API_AUTH_STRING`, else `Bearer <key>` for
    Prefect Cloud; the auth string wins when both are set, as in Prefect 3.9.1's
    `PrefectClient.__init__` (prefect/client/orchestration/__init__.py) and its server's check
    (prefect/server/api/server.py, `token_validation`). Security review, finding 20."""
    if settings.prefect_api_auth_string:
        token = base64.b64encode(settings.prefect_api_auth_string.encode()).decode()
        return {"Authorization": f"Basic {token}"}
    if settings.prefect_api_key:
        return {"Authorization": f"Bearer {settings.prefect_api_key}"}
    return {}


def prefect_http_client(settings: ReporterSettings) -> httpx.AsyncClient:
    if not settings.prefect_api_url:
        raise ValueError("PREFECT_API_URL is not set: the reporter has nowhere to ship runs")
    headers = prefect_authorization(settings)
    return httpx.AsyncClient(
        base_url=settings.prefect_api_url.rstrip("/"),
        timeout=settings.request_timeout_seconds,
        headers=headers,
    )


def _listen_conninfo(sessions: async_sessionmaker[AsyncSession]) -> str | None:
    """The libpq URL of the sessions' database, for a LISTEN connection of our own."""
    bind = sessions.kw.get("bind")
    url = getattr(bind, "url", None)
    if url is None or not url.drivername.startswith("postgresql"):
        return None
    return url.set(drivername="postgresql").render_as_string(hide_password=False)


class Inflow:
    """Commits of new run records per second, from the NOTIFYs (one per transaction that wrote
    records: a publish commits two), over the last `window` seconds."""

    def __init__(self, window: float = 2.0) -> None:
        self.window = window
        self._seen: collections.deque[float] = collections.deque()

    def note(self) -> None:
        self._seen.append(time.monotonic())

    def per_second(self) -> float:
        horizon = time.monotonic() - self.window
        while self._seen and self._seen[0] < horizon:
            self._seen.popleft()
        return len(self._seen) / self.window


def pace_now(settings: ReporterSettings, *, inflow: float, oldest_seconds: float) -> float:
    """Prefect requests per second for the next batch. Shipping yields to publishing: while
    records arrive faster than the full pace could ship them (a burst), the reporter ships at
    `yield_runs_per_second` and lets the backlog grow, for as long as the oldest waiting record
    is younger than `yield_seconds`; then, and as soon as the burst is over, at the full pace."""
    busy = inflow > settings.max_runs_per_second
    if busy and oldest_seconds < settings.yield_seconds:
        return min(settings.yield_runs_per_second, settings.max_runs_per_second)
    return settings.max_runs_per_second


async def _listen(
    conninfo: str, wake: asyncio.Event, stop: asyncio.Event, inflow: Inflow | None = None
) -> None:
    """Set `wake` on every `NOTIFY run_records` (sent at the commit of each transaction that
    wrote run records); reconnects after a lost connection. Meanwhile the loop's idle poll is
    the fallback, so a lost listener delays the UI, never loses a record."""
    import psycopg

    delay = 0.5
    while not stop.is_set():
        try:
            async with await psycopg.AsyncConnection.connect(conninfo, autocommit=True) as conn:
                await conn.execute(f"LISTEN {NOTIFY_CHANNEL}")
                delay = 0.5
                wake.set()  # anything committed before LISTEN took effect
                async for _ in conn.notifies():
                    wake.set()
                    if inflow is not None:
                        inflow.note()
        except asyncio.CancelledError:
            raise
        except Exception as error:
            log.warning("reporter LISTEN connection lost (%s); retrying", type(error).__name__)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=delay)
        delay = min(delay * 2, 10.0)


@dataclass
class BacklogWatch:
    """Says when the reporter falls behind (backlog past either threshold) and when it caught up
    (below half of both: a backlog hovering at a threshold does not flap), and keeps the event
    still to emit until Prefect takes it (Prefect down is one way to fall behind)."""

    behind_records: int
    behind_seconds: float
    behind: bool = False
    peak_records: int = 0
    pending: str | None = None
    last: Backlog | None = None

    def observe(self, backlog: Backlog) -> str | None:
        """The event this backlog crosses into, if any (also left `pending`)."""
        self.last = backlog
        self.peak_records = max(self.peak_records, backlog.records)
        over = (
            backlog.records >= self.behind_records or backlog.oldest_seconds >= self.behind_seconds
        )
        under = (
            backlog.records < self.behind_records / 2
            and backlog.oldest_seconds < self.behind_seconds / 2
        )
        event = None
        if over and not self.behind:
            self.behind, event = True, BEHIND_EVENT
        elif under and self.behind:
            self.behind, event = False, CAUGHT_UP_EVENT
        if event is not None:
            self.pending = event
        return event

    def payload(self) -> dict[str, Any]:
        backlog = self.last or Backlog(records=0, oldest_seconds=0.0)
        return {
            "backlog_records": backlog.records,
            "oldest_unshipped_seconds": backlog.oldest_seconds,
            "peak_backlog_records": self.peak_records,
            "behind_records": self.behind_records,
            "behind_seconds": self.behind_seconds,
        }


async def check_backlog(
    sessions: async_sessionmaker[AsyncSession], runs: PrefectRuns, watch: BacklogWatch
) -> None:
    """Measure the backlog, log a crossing (WARNING when behind), and emit the pending event."""
    async with sessions() as session:
        backlog = await outbox_backlog(session)
    event = watch.observe(backlog)
    if event == BEHIND_EVENT:
        log.warning(
            "reporter behind: %d run record(s) unshipped, the oldest %.0f s old (thresholds "
            "%d records, %.0f s): Prefect shows these runs late, labelled after-the-fact",
            backlog.records,
            backlog.oldest_seconds,
            watch.behind_records,
            watch.behind_seconds,
        )
    elif event == CAUGHT_UP_EVENT:
        log.info(
            "reporter caught up: %d run record(s) unshipped, the oldest %.0f s old "
            "(peak backlog %d)",
            backlog.records,
            backlog.oldest_seconds,
            watch.peak_records,
        )
    if watch.pending is not None:
        try:
            await runs.emit_event(watch.pending, payload=watch.payload())
        except Exception as error:  # kept pending: emitted at a later check
            log.warning("could not emit %s: %s: %s", watch.pending, type(error).__name__, error)
        else:
            watch.pending = None


async def run_reporter(
    *,
    sessions: async_sessionmaker[AsyncSession],
    settings: ReporterSettings,
    stop: asyncio.Event,
    watch: BacklogWatch | None = None,
) -> None:
    """Ship records until `stop` is set: batches back to back while there is work (paced at
    `max_runs_per_second` Prefect requests), then sleep until PostgreSQL notifies a commit of
    new records (LISTEN/NOTIFY: a run's start reaches Prefect milliseconds after its claim
    commits), with an idle poll as the fallback; exponential back-off while Prefect is
    unreachable; the backlog checked every `behind_check_seconds` (`watch`)."""
    backoff = 0.0
    wake = asyncio.Event()
    inflow = Inflow()
    conninfo = _listen_conninfo(sessions)
    listener = asyncio.create_task(_listen(conninfo, wake, stop, inflow)) if conninfo else None
    watch = watch or BacklogWatch(
        behind_records=settings.behind_records, behind_seconds=settings.behind_seconds
    )
    next_check = 0.0
    try:
        async with prefect_http_client(settings) as http:
            runs = PrefectRuns(http, live_tolerance_seconds=settings.live_tolerance_seconds)
            while not stop.is_set():
                started = time.monotonic()
                if started >= next_check:
                    next_check = started + settings.behind_check_seconds
                    with contextlib.suppress(Exception):  # the database: the batch says it too
                        await check_backlog(sessions, runs, watch)
                wake.clear()
                try:
                    result = await ship_batch(
                        sessions,
                        runs,
                        batch_size=settings.paced_batch_size,
                        concurrency=settings.concurrency,
                    )
                except Exception as error:  # the database itself; keep going
                    result = BatchResult(error=error)
                if result.error is not None:
                    backoff = min(settings.max_backoff_seconds, max(0.25, backoff * 2))
                    log.warning(
                        "Prefect shipping paused %.1fs: %s: %s",
                        backoff,
                        type(result.error).__name__,
                        result.error,
                    )
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(stop.wait(), timeout=backoff)
                    continue
                backoff = 0.0
                if result.late:
                    log.info("shipped %d run(s) after the fact (backlog)", result.late)
                if result.claimed:  # more may be waiting (or just unblocked): go again, paced
                    rate = pace_now(
                        settings, inflow=inflow.per_second(), oldest_seconds=result.oldest_seconds
                    )
                    wait = result.requests / rate - (time.monotonic() - started)
                    if wait > 0:
                        with contextlib.suppress(TimeoutError):
                            await asyncio.wait_for(stop.wait(), timeout=wait)
                    continue
                waiters = [asyncio.ensure_future(wake.wait()), asyncio.ensure_future(stop.wait())]
                try:
                    await asyncio.wait(
                        waiters,
                        timeout=min(settings.idle_seconds, settings.behind_check_seconds),
                        return_when=asyncio.FIRST_COMPLETED,
                    )
                finally:
                    for waiter in waiters:
                        waiter.cancel()
    finally:
        if listener is not None:
            listener.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await listener


@dataclass
class ReporterThread:
    """A reporter running in a background thread of this process (`tendsocial dev`, tests)."""

    thread: threading.Thread
    _loop: asyncio.AbstractEventLoop | None = None
    _stop: asyncio.Event | None = None
    _ready: threading.Event = field(default_factory=threading.Event)

    def stop(self, timeout: float = 15.0) -> None:
        self._ready.wait(timeout)
        if self._loop is not None and self._stop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._stop.set)
        self.thread.join(timeout)


def start_reporter_thread(*, database_url: URL, settings: ReporterSettings) -> ReporterThread:
    """Start `run_reporter` in a daemon thread with its own event loop and a small engine."""
    prefect_http_client(settings)  # fail fast on a missing PREFECT_API_URL
    handle = ReporterThread(thread=threading.Thread(target=lambda: None))

    async def main() -> None:
        engine = create_async_engine(database_url, pool_size=2, max_overflow=0)
        handle._loop, handle._stop = asyncio.get_running_loop(), asyncio.Event()
        handle._ready.set()
        try:
            sessions = async_sessionmaker(engine, expire_on_commit=False)
            await run_reporter(sessions=sessions, settings=settings, stop=handle._stop)
        finally:
            await engine.dispose()

    handle.thread = threading.Thread(
        target=lambda: asyncio.run(main()), name="prefect-reporter", daemon=True
    )
    handle.thread.start()
    return handle


async def drain(*, sessions: async_sessionmaker[AsyncSession], settings: ReporterSettings) -> int:
    """Ship everything queued now and return how many runs were shipped (CLI `--once`)."""
    total = 0
    async with prefect_http_client(settings) as http:
        runs = PrefectRuns(http, live_tolerance_seconds=settings.live_tolerance_seconds)
        while True:
            result = await ship_batch(
                sessions, runs, batch_size=settings.batch_size, concurrency=settings.concurrency
            )
            if result.error is not None:
                raise result.error
            total += result.shipped
            if result.claimed == 0:
                return total
