"""The reporter: ships run records (the Prefect visibility outbox) to the Prefect API.

Why an outbox: a Prefect task run costs ~33 ms and a process tops out near 35 runs/s, an
unreachable server stops the body from running, and a server lost mid-run fails the call after the
work was done (measured on Prefect 3.9.1). So the request path only INSERTs a `run_records` row in
the transaction that commits its outcome, and this loop, off the critical path, turns each row into
a Prefect flow run. Prefect slow or down delays the UI, never a publish.

Order and durability. Records are claimed oldest `sequence` first, in batches, row-locked with
`FOR UPDATE SKIP LOCKED` (several reporters split the backlog); a batch stops at the first record
Prefect does not take, the ones before it are marked shipped, and the rest wait for the next round
(exponential back-off while Prefect is down, so an outage is caught up, in order, when it returns).
A record Prefect rejects as invalid (4xx other than 408/409/429) is marked shipped with its error
instead of blocking the queue forever.

No duplicates. Prefect 3.9.1 does not let a client choose a flow run's id, but `POST /flow_runs/`
takes an `idempotency_key`, unique per flow on the server: the key is derived from the record id,
so a reporter that crashed after creating the run and before marking the record shipped gets the
same run back (HTTP 200 instead of 201) and only finishes what is missing: the state transitions
still due (read from the returned run's state) and the log lines (sent again only when the run has
none; all log lines of a batch go in one request after its runs).

Real start and end times. Prefect 3.9.1's API stamps every state with the *server's* clock
(`StateCreate` forbids `timestamp`; `FlowRunCreate`/`FlowRunUpdate` have no start/end fields), so
the run's `start_time`/`end_time` can only be "when the reporter shipped it". The real instants
therefore travel where the API accepts client values:
- real start → the run's `expected_start_time`: it is created in a Scheduled state whose
  `scheduled_time` is `started_at` (UI: the run's scheduled start; lateness = reporter lag);
- real start, end, duration → labels `tendsocial.started_at`, `tendsocial.ended_at`,
  `tendsocial.duration_ms`, and a closing log line;
- every log line keeps the timestamp it was written at (`LogCreate.timestamp` is the client's).
The states themselves are Scheduled → Running → final (Completed / Failed with the error message /
Crashed / AwaitingRetry scheduled at `next_run_at`), i.e. what a real run goes through.

Client: plain httpx against `PREFECT_API_URL` (`PREFECT_API_KEY` as bearer for Prefect Cloud), a
short timeout and no hidden retries: the loop's back-off is the retry policy, and status codes
(201 vs 200) are visible.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx
from sqlalchemy.engine import URL
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker, create_async_engine

from models.outbox import (
    claim_unshipped_run_records,
    mark_run_record_shipped,
    note_run_record_failure,
)
from models.settings import ReporterSettings
from models.statuses import AttemptKind, AttemptOutcome
from models.tables import RunRecord

log = logging.getLogger(__name__)

IDEMPOTENCY_PREFIX = "tendsocial-run-record:"
LOGGER_NAME = "tendsocial"


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


def flow_name(record: RunRecord) -> str:
    return FLOW_NAMES[AttemptKind(record.kind)]


def idempotency_key(record_id: uuid.UUID) -> str:
    return f"{IDEMPOTENCY_PREFIX}{record_id}"


def _final_state(record: RunRecord) -> dict[str, Any]:
    """The record's final state as a Prefect `StateCreate`."""
    if record.outcome == AttemptOutcome.RETRYING:
        when = record.next_run_at or record.ended_at
        return {
            "type": "SCHEDULED",
            "name": "AwaitingRetry",
            "message": record.state_message,
            "state_details": {"scheduled_time": when.isoformat()},
        }
    return {"type": STATE_TYPES[AttemptOutcome(record.outcome)], "message": record.state_message}


def _labels(record: RunRecord) -> dict[str, Any]:
    duration = (record.ended_at - record.started_at).total_seconds() * 1000
    return {
        "tendsocial.started_at": record.started_at.isoformat(),
        "tendsocial.ended_at": record.ended_at.isoformat(),
        "tendsocial.duration_ms": round(duration, 1),
        "tendsocial.run_record": str(record.id),
    }


def _log_lines(record: RunRecord, flow_run_id: str) -> list[dict[str, Any]]:
    """The record's log lines for `POST /logs/`, plus a closing line with the real times."""
    name = f"{LOGGER_NAME}.{flow_name(record)}"
    lines = [
        {
            "name": name,
            "level": int(line.get("level", logging.INFO)),
            "message": str(line.get("message", "")),
            "timestamp": line.get("timestamp") or record.ended_at.isoformat(),
            "flow_run_id": flow_run_id,
        }
        for line in record.logs
    ]
    duration = (record.ended_at - record.started_at).total_seconds() * 1000
    lines.append(
        {
            "name": name,
            "level": logging.INFO,
            "message": (
                f"ran {record.started_at.isoformat()} → {record.ended_at.isoformat()} "
                f"({duration:.0f} ms), outcome {record.outcome}"
            ),
            "timestamp": record.ended_at.isoformat(),
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


class PrefectRuns:
    """The few Prefect REST calls the reporter makes."""

    def __init__(self, http: httpx.AsyncClient) -> None:
        self.http = http
        self._flow_ids: dict[str, str] = {}

    async def _call(self, method: str, path: str, json: Any = None) -> httpx.Response:
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

    async def create_run(self, record: RunRecord) -> tuple[dict[str, Any], bool]:
        """Create the record's flow run (Scheduled at the real start), or get the one an earlier
        attempt created; True when created now."""
        body = {
            "flow_id": await self.flow_id(flow_name(record)),
            "name": record.run_name,
            "parameters": record.parameters,
            "tags": list(record.tags),
            "labels": _labels(record),
            "idempotency_key": idempotency_key(record.id),
            "state": {
                "type": "SCHEDULED",
                "state_details": {"scheduled_time": record.started_at.isoformat()},
            },
        }
        response = await self._call("POST", "/flow_runs/", body)
        return response.json(), response.status_code == 201

    async def set_state(self, flow_run_id: str, state: dict[str, Any]) -> None:
        await self._call(
            "POST", f"/flow_runs/{flow_run_id}/set_state", {"state": state, "force": True}
        )

    async def has_logs(self, flow_run_id: str) -> bool:
        body = {"logs": {"flow_run_id": {"any_": [flow_run_id]}}, "limit": 1}
        return bool((await self._call("POST", "/logs/filter", body)).json())

    async def create_logs(self, lines: Sequence[dict[str, Any]]) -> None:
        if lines:
            await self._call("POST", "/logs/", list(lines))

    async def ship(self, record: RunRecord) -> tuple[str, list[dict[str, Any]]]:
        """Bring the record's run to its final state; returns its id and the log lines still
        to send (none when an earlier attempt already sent them)."""
        run, created = await self.create_run(record)
        run_id = run["id"]
        final = _final_state(record)
        state_name = (run.get("state") or {}).get("name") if not created else "Scheduled"
        if state_name in ("Scheduled", "Late", "Pending"):  # created, transitions still due
            await self.set_state(run_id, {"type": "RUNNING"})
            state_name = "Running"
        if state_name == "Running":
            await self.set_state(run_id, final)
        if created or not await self.has_logs(run_id):
            return run_id, _log_lines(record, run_id)
        return run_id, []


@dataclass
class BatchResult:
    shipped: int = 0
    rejected: int = 0
    error: Exception | None = None
    claimed: int = 0
    run_ids: list[str] = field(default_factory=list)


async def ship_batch(
    sessions: async_sessionmaker[AsyncSession], runs: PrefectRuns, *, batch_size: int
) -> BatchResult:
    """Ship up to `batch_size` records in order, in one transaction holding their row locks.

    Stops at the first record Prefect does not take (later ones wait, so order holds). The
    records before it are marked shipped when the transaction commits; a crash before that
    leaves them queued and the idempotency key makes the next round find the same runs.
    """
    result = BatchResult()
    async with sessions() as session, session.begin():
        records = await claim_unshipped_run_records(session, limit=batch_size)
        result.claimed = len(records)
        done: list[tuple[RunRecord, str | None, str | None]] = []
        lines: list[dict[str, Any]] = []
        for record in records:
            try:
                run_id, record_lines = await runs.ship(record)
            except Exception as error:
                if is_rejection(error):
                    reason = f"rejected by Prefect: {error}"[:2000]
                    log.error("run record %s %s", record.id, reason)
                    done.append((record, None, reason))
                    result.rejected += 1
                    continue
                result.error = error
                await note_run_record_failure(
                    session, record_id=record.id, error=f"{type(error).__name__}: {error}"
                )
                break
            lines.extend(record_lines)
            done.append((record, run_id, None))
        try:
            await runs.create_logs(lines)
        except Exception as error:  # the runs exist; the next round re-sends their log lines
            result.error = error
            return result
        for record, run_id, reason in done:
            await mark_run_record_shipped(
                session,
                record_id=record.id,
                flow_run_id=uuid.UUID(run_id) if run_id else None,
                error=reason,
            )
            if run_id:
                result.run_ids.append(run_id)
        result.shipped = len(done) - result.rejected
    return result


def prefect_http_client(settings: ReporterSettings) -> httpx.AsyncClient:
    if not settings.prefect_api_url:
        raise ValueError("PREFECT_API_URL is not set: the reporter has nowhere to ship runs")
    headers = (
        {"Authorization": f"Bearer {settings.prefect_api_key}"} if settings.prefect_api_key else {}
    )
    return httpx.AsyncClient(
        base_url=settings.prefect_api_url.rstrip("/"),
        timeout=settings.request_timeout_seconds,
        headers=headers,
    )


async def run_reporter(
    *,
    sessions: async_sessionmaker[AsyncSession],
    settings: ReporterSettings,
    stop: asyncio.Event,
) -> None:
    """Ship records until `stop` is set: full batches back to back, a short idle wait when the
    queue is empty, exponential back-off while Prefect is unreachable."""
    backoff = 0.0
    async with prefect_http_client(settings) as http:
        runs = PrefectRuns(http)
        while not stop.is_set():
            started = time.monotonic()
            try:
                result = await ship_batch(sessions, runs, batch_size=settings.paced_batch_size)
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
                wait = backoff
            else:
                backoff = 0.0
                full = result.claimed >= settings.paced_batch_size
                pace = result.claimed / settings.max_runs_per_second - (time.monotonic() - started)
                wait = max(pace, 0.0) if full else max(pace, settings.idle_seconds)
            if wait:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), timeout=wait)


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
        runs = PrefectRuns(http)
        while True:
            result = await ship_batch(sessions, runs, batch_size=settings.batch_size)
            if result.error is not None:
                raise result.error
            total += result.shipped
            if result.claimed < settings.batch_size:
                return total
