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

Client: plain httpx against `PREFECT_API_URL` (`PREFECT_API_AUTH_STRING` as basic auth for a
self-hosted server, `PREFECT_API_KEY` as bearer for Prefect Cloud), a short timeout and no
hidden retries: the loop's back-off is the retry policy, and status codes (201 vs 200) are
visible.
"""

from __future__ import annotations

import asyncio
import base64
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
    mark_run_record_shipped,
    note_run_record_failure,
    shipped_flow_run_ids,
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


def _instant(record: RunRecord) -> datetime:
    """The real instant this record ships: the run's start, or its end."""
    if record.phase == RunPhase.START or record.ended_at is None:
        return record.started_at
    return record.ended_at


def _base_labels(record: RunRecord) -> dict[str, Any]:
    return {
        "tendsocial.started_at": record.started_at.isoformat(),
        "tendsocial.run_record": str(record.run_id),
    }


def _late_labels(record: RunRecord, lag: float) -> dict[str, Any]:
    """What a run shipped after the fact carries: Prefect's own times are then shipping times,
    so the real ones travel as labels (and in the closing log line)."""
    labels: dict[str, Any] = {
        "tendsocial.timing": AFTER_THE_FACT,
        "tendsocial.shipping_lag_s": round(lag, 1),
        "tendsocial.started_at": record.started_at.isoformat(),
    }
    if record.ended_at is not None:
        duration = (record.ended_at - record.started_at).total_seconds() * 1000
        labels |= {
            "tendsocial.ended_at": record.ended_at.isoformat(),
            "tendsocial.duration_ms": round(duration, 1),
        }
    return labels


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


class PrefectRuns:
    """The few Prefect REST calls the reporter makes: 1 for a run's start, 1 for its end (2 more
    for a sync child: the task run in its parent that links it), and 1 for all the log lines
    of a batch."""

    def __init__(self, http: httpx.AsyncClient, *, live_tolerance_seconds: float = 1.0) -> None:
        self.http = http
        self.live_tolerance_seconds = live_tolerance_seconds
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

    async def create_run(
        self,
        record: RunRecord,
        *,
        labels: dict[str, Any],
        parent_task_run_id: str | None = None,
    ) -> tuple[dict[str, Any], bool]:
        """Create the record's flow run directly in Running (Prefect stamps its start time
        now), or get the one an earlier attempt created; True when created now."""
        body: dict[str, Any] = {
            "flow_id": await self.flow_id(flow_name(record)),
            "name": record.run_name,
            "parameters": record.parameters,
            "tags": list(record.tags),
            "labels": labels,
            "idempotency_key": idempotency_key(record.run_id),
            "state": {"type": "RUNNING"},
        }
        if parent_task_run_id:
            body["parent_task_run_id"] = parent_task_run_id
        response = await self._call("POST", "/flow_runs/", body)
        return response.json(), response.status_code == 201

    async def link_task_run(
        self, *, parent_flow_run_id: str, record: RunRecord, state: dict[str, Any] | None = None
    ) -> str:
        """The task run in the parent's flow run that stands for this child run (Prefect links
        a child flow run to its parent through `parent_task_run_id`; the parent's page then
        lists it). Idempotent: (flow run, task key, dynamic key) is unique on the server."""
        body: dict[str, Any] = {
            "flow_run_id": parent_flow_run_id,
            "task_key": f"{flow_name(record)}-child",
            "dynamic_key": str(record.run_id),
            "name": record.run_name,
            "tags": list(record.tags),
            "state": state or {"type": "RUNNING"},
        }
        return (await self._call("POST", "/task_runs/", body)).json()["id"]

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

    def lag_of(self, record: RunRecord) -> float | None:
        """Seconds between the record's real instant and now, when beyond the tolerance."""
        lag = (datetime.now(UTC) - _instant(record)).total_seconds()
        return lag if lag > self.live_tolerance_seconds else None

    async def _open(
        self, record: RunRecord, *, parent_flow_run_id: str | None, lag: float | None
    ) -> tuple[dict[str, Any], bool]:
        labels = _base_labels(record) | (_late_labels(record, lag) if lag is not None else {})
        parent_task = None
        if parent_flow_run_id:
            parent_task = await self.link_task_run(
                parent_flow_run_id=parent_flow_run_id, record=record
            )
        return await self.create_run(record, labels=labels, parent_task_run_id=parent_task)

    async def ship(
        self,
        record: RunRecord,
        *,
        flow_run_id: str | None,
        parent_flow_run_id: str | None,
    ) -> tuple[str, list[dict[str, Any]]]:
        """Ship one record; returns the run's id and the log lines still to send.

        A start opens the run in Running. An end closes the run its start opened (or opens
        and closes it at once, a run recorded whole or after the fact), marks it after the fact
        when it is, and hands back its log lines (not again if an earlier attempt sent them).
        """
        lag = self.lag_of(record)
        if record.phase == RunPhase.START:
            if flow_run_id:  # the run is a Prefect run already (a deployment's), or was shipped
                return flow_run_id, []
            run, _ = await self._open(record, parent_flow_run_id=parent_flow_run_id, lag=lag)
            return run["id"], []
        final = _final_state(record)
        check_logs = record.attempts > 0
        if flow_run_id is None:
            run, created = await self._open(record, parent_flow_run_id=parent_flow_run_id, lag=lag)
            flow_run_id = run["id"]
            state_name = "Running" if created else (run.get("state") or {}).get("name")
            check_logs = check_logs or not created
        else:
            state_name = "Running"
            if check_logs:
                state_name = ((await self.read_run(flow_run_id)).get("state") or {}).get("name")
            if lag is not None:
                await self.add_labels(flow_run_id, _late_labels(record, lag))
        if state_name not in _FINAL_STATE_NAMES:
            await self.set_state(flow_run_id, final)
        if parent_flow_run_id:  # close the task run standing for this child in its parent
            task = await self.link_task_run(
                parent_flow_run_id=parent_flow_run_id, record=record, state=final
            )
            await self.set_task_state(task, final)
        if check_logs and await self.has_logs(flow_run_id):
            return flow_run_id, []
        return flow_run_id, _log_lines(record, flow_run_id, lag=lag)


@dataclass
class BatchResult:
    shipped: int = 0
    rejected: int = 0
    error: Exception | None = None
    claimed: int = 0
    run_ids: list[str] = field(default_factory=list)
    late: int = 0


async def ship_batch(
    sessions: async_sessionmaker[AsyncSession],
    runs: PrefectRuns,
    *,
    batch_size: int,
    concurrency: int = 8,
) -> BatchResult:
    """Ship up to `batch_size` records in one transaction holding their row locks.

    The claim only hands out records whose run's (and parent run's) earlier records are shipped,
    so the records of a batch are independent and go out `concurrency` at a time. Records
    Prefect does not take stay queued (their failure noted) and wait for the next round; the
    others are marked shipped when the transaction commits. A crash before that leaves them
    queued and the idempotency keys make the next round find the same runs.
    """
    result = BatchResult()
    with contextlib.suppress(_Rollback):
        await _ship_batch(sessions, runs, result, batch_size=batch_size, concurrency=concurrency)
    return result


async def _ship_batch(
    sessions: async_sessionmaker[AsyncSession],
    runs: PrefectRuns,
    result: BatchResult,
    *,
    batch_size: int,
    concurrency: int,
) -> None:
    async with sessions() as session, session.begin():
        records = await claim_unshipped_run_records(session, limit=batch_size)
        result.claimed = len(records)
        if not records:
            return
        wanted = {r.run_id for r in records} | {r.parent_run_id for r in records if r.parent_run_id}
        known = {k: str(v) for k, v in (await shipped_flow_run_ids(session, list(wanted))).items()}
        semaphore = asyncio.Semaphore(concurrency)

        async def one(record: RunRecord) -> tuple[str, list[dict[str, Any]]]:
            async with semaphore:
                parent = known.get(record.parent_run_id) if record.parent_run_id else None
                return await runs.ship(
                    record, flow_run_id=known.get(record.run_id), parent_flow_run_id=parent
                )

        outcomes = await asyncio.gather(*(one(r) for r in records), return_exceptions=True)
        done: list[tuple[RunRecord, str | None, str | None]] = []
        lines: list[dict[str, Any]] = []
        for record, outcome in zip(records, outcomes, strict=True):
            if isinstance(outcome, BaseException):
                if not isinstance(outcome, Exception):
                    raise outcome
                if is_rejection(outcome):
                    reason = f"rejected by Prefect: {outcome}"[:2000]
                    log.error("run record %s %s", record.id, reason)
                    done.append((record, None, reason))
                    result.rejected += 1
                    continue
                result.error = result.error or outcome
                await note_run_record_failure(
                    session, record_id=record.id, error=f"{type(outcome).__name__}: {outcome}"
                )
                continue
            run_id, record_lines = outcome
            lines.extend(record_lines)
            done.append((record, run_id, None))
            if runs.lag_of(record) is not None:
                result.late += 1
        try:
            await runs.create_logs(lines)
        except Exception as error:  # the runs exist; the next round re-sends their log lines
            result.error = error
            raise _Rollback from error
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


async def _listen(conninfo: str, wake: asyncio.Event, stop: asyncio.Event) -> None:
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
        except asyncio.CancelledError:
            raise
        except Exception as error:
            log.warning("reporter LISTEN connection lost (%s); retrying", type(error).__name__)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=delay)
        delay = min(delay * 2, 10.0)


async def run_reporter(
    *,
    sessions: async_sessionmaker[AsyncSession],
    settings: ReporterSettings,
    stop: asyncio.Event,
) -> None:
    """Ship records until `stop` is set: batches back to back while there is work (paced at
    `max_runs_per_second` records), then sleep until PostgreSQL notifies a commit of new records
    (LISTEN/NOTIFY: a run's start reaches Prefect milliseconds after its claim commits), with an
    idle poll as the fallback; exponential back-off while Prefect is unreachable."""
    backoff = 0.0
    wake = asyncio.Event()
    conninfo = _listen_conninfo(sessions)
    listener = asyncio.create_task(_listen(conninfo, wake, stop)) if conninfo else None
    try:
        async with prefect_http_client(settings) as http:
            runs = PrefectRuns(http, live_tolerance_seconds=settings.live_tolerance_seconds)
            while not stop.is_set():
                started = time.monotonic()
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
                    log.info("shipped %d record(s) after the fact (backlog)", result.late)
                if result.claimed:  # more may be waiting (or just unblocked): go again, paced
                    pace = result.claimed / settings.max_runs_per_second
                    wait = pace - (time.monotonic() - started)
                    if wait > 0:
                        with contextlib.suppress(TimeoutError):
                            await asyncio.wait_for(stop.wait(), timeout=wait)
                    continue
                waiters = [asyncio.ensure_future(wake.wait()), asyncio.ensure_future(stop.wait())]
                try:
                    await asyncio.wait(
                        waiters, timeout=settings.idle_seconds, return_when=asyncio.FIRST_COMPLETED
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
