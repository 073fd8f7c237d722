"""The emulator's model of Cloud Tasks: queues, tasks, name tombstones, scheduling and dispatch.

Each queue keeps a heap of (due time, sequence, task name); a runner coroutine per queue pops due
tasks while its token bucket (max_dispatches_per_second, max_burst_size) and
max_concurrent_dispatches allow, then waits on the clock until the next due time or a wake-up.
Heap entries are invalidated lazily by sequence number, so no tick ever scans all tasks.

Methods raise `ApiError` carrying the gRPC code and the real service's message; the gRPC layer
(`server.py`) only translates. Messages are byte-for-byte those recorded from the real service
(`realcloud.json`) where a recording exists.

Caller rights. Google guards tasks with IAM, and the emulator knows
no caller, so it answers every caller as one holding only what local development needs:

- it acts only as the service accounts it was started with (`service_accounts`, `tendsocial
  emulator --service-account`). On Google, "the caller must have iam.serviceAccounts.actAs
  permission for the service account" of a task's OIDC token
  (https://docs.cloud.google.com/dotnet/docs/reference/Google.Cloud.Tasks.V2/latest/Google.Cloud.Tasks.V2.OidcToken),
  and CreateTask otherwise fails with PERMISSION_DENIED, "The principal (user or service
  account) lacks IAM permission "iam.serviceAccounts.actAs" for the resource "<email>" (or the
  resource may not exist)." (as reported in https://github.com/googleapis/nodejs-tasks/issues/249).
  A stored task whose account is no longer one of them is not delivered (its attempt fails with
  that error): no token is minted for an account the emulator was not given;
- it never shows a credential: "Authorization for FULL requires cloudtasks.tasks.fullView Google
  IAM permission" (https://cloud.google.com/ruby/docs/reference/google-cloud-tasks-v2/latest/Google-Cloud-Tasks-V2-Task-View),
  a permission no caller of the emulator can prove. Every view it returns (FULL included, whose
  body local tools read) shows the task's credential headers (`X-Webhook-Secret`,
  `Authorization`, ...: `redaction.is_secret_header`) as `<redacted>`; the attempts still send
  them. An emulator rule, not Google's: a caller with the rights sees them there.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import logging
import math
import re
import secrets
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import httpx
from google.cloud.tasks_v2.types import (
    queue as queue_types,
    target as target_types,
    task as task_types,
)
from google.protobuf import duration_pb2, field_mask_pb2, timestamp_pb2
from google.rpc import status_pb2
from grpc import StatusCode

from deployments.emulator.clock import Clock
from deployments.emulator.delivery import Delivery, DeliveryError
from deployments.emulator.oidc import OidcSigner
from deployments.emulator.redaction import REDACTED, is_secret_header
from deployments.emulator.retry import (
    backoff_seconds,
    grpc_code_for_http,
    parse_retry_after,
    retries_exhausted,
)
from deployments.emulator.store import Store

log = logging.getLogger("deployments.emulator")

QueuePb: Any = queue_types.Queue.pb()
TaskPb: Any = task_types.Task.pb()
RetryConfigPb: Any = queue_types.RetryConfig.pb()
RateLimitsPb: Any = queue_types.RateLimits.pb()
AttemptPb: Any = task_types.Attempt.pb()
HttpMethod = target_types.HttpMethod

RUNNING, PAUSED = queue_types.Queue.State.RUNNING, queue_types.Queue.State.PAUSED
BASIC, FULL = task_types.Task.View.BASIC, task_types.Task.View.FULL

PARENT_RE = re.compile(r"^projects/([^/]+)/locations/([^/]+)$")
QUEUE_RE = re.compile(r"^projects/[^/]+/locations/[^/]+/queues/([A-Za-z0-9-]{1,100})$")
TASK_ID_RE = re.compile(r"^[A-Za-z0-9_-]{1,500}$")

MSG_QUEUE_MISSING = (
    "Queue does not exist. If you just created the queue, wait at least a minute for the queue "
    "to initialize."
)
MSG_NOT_FOUND = "Requested entity was not found."
MSG_EXISTS = "Requested entity already exists"
MSG_TASK_GONE = (
    "The task no longer exists, though a task with this name existed recently. The task either "
    "successfully completed or was deleted."
)


def msg_not_acting_as(email: str) -> str:
    return (
        'The principal (user or service account) lacks IAM permission "iam.serviceAccounts.actAs"'
        f' for the resource "{email}" (or the resource may not exist).'
    )


MAX_SCHEDULE_AHEAD = 30 * 24 * 3600.0
DEFAULT_DEADLINE, MIN_DEADLINE, MAX_DEADLINE = 600.0, 15.0, 1800.0
MAX_TASK_BYTES = 1024 * 1024
# Schedule times are stored in whole microseconds; float round-trips may land a hair late.
_DUE_SLACK = 1e-6
MAX_RATE, MAX_CONCURRENT = 500.0, 5000
# Headers Cloud Tasks sets itself; task-supplied values are dropped.
_RESERVED_HEADERS = ("host", "content-length", "user-agent", "x-cloudtasks-", "x-google-")


class ApiError(Exception):
    def __init__(self, code: StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class NotActingAs(Exception):
    """A stored task names a service account the emulator was not given (see the docstring)."""


def to_timestamp(t: float) -> Any:
    micros = math.floor(t * 1_000_000)
    return timestamp_pb2.Timestamp(seconds=micros // 1_000_000, nanos=(micros % 1_000_000) * 1000)


def from_timestamp(ts: Any) -> float:
    return ts.seconds + ts.nanos / 1e9


def from_duration(d: Any) -> float:
    return d.seconds + d.nanos / 1e9


def to_duration(seconds: float) -> Any:
    d = duration_pb2.Duration()
    d.FromNanoseconds(round(seconds * 1e9))
    return d


def default_burst(rate: float) -> int:
    """Cloud Tasks picks max_burst_size from the rate (100 for the 500/s default)."""
    return max(1, min(100, math.ceil(rate)))


@dataclass(slots=True)
class TaskState:
    pb: Any
    queue: str
    execution_count: int = 0  # non-5xx responses, for X-CloudTasks-TaskExecutionCount
    previous_status: int = 0  # HTTP status of the previous attempt, 0 = none / no response
    seq: int = 0
    running: bool = False


@dataclass(slots=True)
class QueueState:
    pb: Any
    tasks: dict[str, TaskState] = field(default_factory=dict)
    heap: list[tuple[float, int, str]] = field(default_factory=list)
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    tokens: float = 0.0
    refilled: float = 0.0
    inflight: int = 0
    hold_until: float = 0.0
    runner: asyncio.Task[None] | None = None

    @property
    def paused(self) -> bool:
        return self.pb.state == PAUSED


class Engine:
    """All emulator state; single-threaded on one event loop."""

    def __init__(
        self,
        *,
        store: Store,
        clock: Clock,
        signer: OidcSigner,
        tombstone_seconds: float = 3600.0,
        queue_tombstone_seconds: float = 7 * 24 * 3600.0,
        dead_letter_queues: Iterable[str] = (),
        dead_letter_all: bool = False,
        service_accounts: Iterable[str] = (),
    ) -> None:
        self.store, self.clock, self.signer = store, clock, signer
        #: The accounts it may act as: OIDC tokens are minted for these only.
        self.service_accounts = frozenset(service_accounts)
        self.tombstone_seconds = tombstone_seconds
        self.queue_tombstone_seconds = queue_tombstone_seconds
        self.dead_letter_queues = frozenset(dead_letter_queues)
        self.dead_letter_all = dead_letter_all
        self.queues: dict[str, QueueState] = {}
        self.tombstones: dict[str, float] = {}  # task name -> expiry
        self.queue_tombstones: dict[str, float] = {}
        self._seq = itertools.count(1)
        self._inflight: set[asyncio.Task[None]] = set()
        self._housekeeper: asyncio.Task[None] | None = None
        self.http = Delivery()
        self.stopping = False

    # ------------------------------------------------------------------ lifecycle
    async def start(self) -> None:
        now = self.clock.now()
        for name, kind, expires in self.store.load_tombstones():
            if expires > now:
                (self.tombstones if kind == "task" else self.queue_tombstones)[name] = expires
        for data in self.store.load_queues():
            pb = QueuePb.FromString(data)
            self.queues[pb.name] = QueueState(pb=pb)
        for row in self.store.load_tasks():
            qs = self.queues.get(row.queue)
            if qs is None:
                continue
            ts = TaskState(
                pb=TaskPb.FromString(row.data),
                queue=row.queue,
                execution_count=row.execution_count,
                previous_status=row.previous_status,
            )
            qs.tasks[ts.pb.name] = ts
            self._push(qs, ts)
        for qs in self.queues.values():
            self._start_runner(qs)
        self._housekeeper = asyncio.create_task(self._housekeeping())

    async def stop(self) -> None:
        """Stop dispatching; attempts in flight are abandoned and will be re-dispatched."""
        self.stopping = True
        tasks = [qs.runner for qs in self.queues.values() if qs.runner]
        tasks += [*self._inflight, *([self._housekeeper] if self._housekeeper else [])]
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self.http.aclose()
        self.store.flush()

    # ------------------------------------------------------------------ helpers
    def _start_runner(self, qs: QueueState) -> None:
        qs.tokens = float(qs.pb.rate_limits.max_burst_size or 1)
        qs.refilled = self.clock.now()
        qs.runner = asyncio.create_task(self._run_queue(qs), name=f"queue:{qs.pb.name}")

    def _push(self, qs: QueueState, ts: TaskState) -> None:
        ts.seq = next(self._seq)
        heapq.heappush(qs.heap, (from_timestamp(ts.pb.schedule_time), ts.seq, ts.pb.name))
        qs.wake.set()

    def _save_task(self, ts: TaskState) -> None:
        self.store.put_task(
            name=ts.pb.name,
            queue=ts.queue,
            data=ts.pb.SerializeToString(),
            execution_count=ts.execution_count,
            previous_status=ts.previous_status,
        )

    def _tombstone(self, name: str) -> None:
        expires = self.clock.now() + self.tombstone_seconds
        self.tombstones[name] = expires
        self.store.put_tombstone(name, "task", expires)

    def _recent(self, table: dict[str, float], name: str) -> bool:
        expires = table.get(name)
        if expires is None:
            return False
        if expires > self.clock.now():
            return True
        del table[name]
        return False

    def queue_state(self, name: str) -> QueueState:
        qs = self.queues.get(name)
        if qs is None:
            raise ApiError(StatusCode.NOT_FOUND, MSG_QUEUE_MISSING)
        return qs

    def _task_state(self, name: str) -> tuple[QueueState, TaskState]:
        queue_name, sep, _ = name.rpartition("/tasks/")
        qs = self.queues.get(queue_name) if sep else None
        ts = qs.tasks.get(name) if qs else None
        if qs is None or ts is None:
            if self._recent(self.tombstones, name):
                raise ApiError(StatusCode.NOT_FOUND, MSG_TASK_GONE)
            raise ApiError(StatusCode.NOT_FOUND, MSG_NOT_FOUND)
        return qs, ts

    @staticmethod
    def view(ts: TaskState, view: int) -> Any:
        """The task as a caller sees it: BASIC without the body, credential headers redacted in
        every view (see the module docstring)."""
        pb = TaskPb()
        pb.CopyFrom(ts.pb)
        if pb.HasField("http_request"):
            if view != FULL:
                pb.http_request.ClearField("body")
            headers = pb.http_request.headers
            for name in [name for name in headers if is_secret_header(name)]:
                headers[name] = REDACTED
        pb.view = FULL if view == FULL else BASIC
        return pb

    # ------------------------------------------------------------------ queues
    def _fill_queue_defaults(self, pb: Any) -> None:
        rl, rc = pb.rate_limits, pb.retry_config
        if rl.max_dispatches_per_second <= 0:
            rl.max_dispatches_per_second = MAX_RATE
        if rl.max_dispatches_per_second > MAX_RATE:
            raise ApiError(
                StatusCode.INVALID_ARGUMENT,
                f"max_dispatches_per_second must be at most {MAX_RATE:g}.",
            )
        if rl.max_concurrent_dispatches <= 0:
            rl.max_concurrent_dispatches = 1000
        if rl.max_concurrent_dispatches > MAX_CONCURRENT:
            raise ApiError(
                StatusCode.INVALID_ARGUMENT,
                f"max_concurrent_dispatches must be at most {MAX_CONCURRENT}.",
            )
        rl.max_burst_size = default_burst(rl.max_dispatches_per_second)
        if rc.max_attempts == 0:
            rc.max_attempts = 100
        if rc.max_attempts < -1:
            raise ApiError(StatusCode.INVALID_ARGUMENT, "max_attempts must be -1 or positive.")
        if not rc.HasField("min_backoff"):
            rc.min_backoff.CopyFrom(to_duration(0.1))
        if not rc.HasField("max_backoff"):
            rc.max_backoff.CopyFrom(to_duration(3600))
        if rc.max_doublings == 0:  # "unspecified": Cloud Tasks picks the default
            rc.max_doublings = 16
        if not rc.HasField("max_retry_duration"):
            rc.max_retry_duration.CopyFrom(to_duration(0))
        if from_duration(rc.min_backoff) > from_duration(rc.max_backoff):
            raise ApiError(
                StatusCode.INVALID_ARGUMENT,
                "min_backoff must be less than or equal to max_backoff.",
            )
        if not pb.state:
            pb.state = RUNNING

    def _check_parent(self, parent: str) -> None:
        if not PARENT_RE.match(parent):
            project = parent.split("/")[1] if parent.startswith("projects/") else parent
            raise ApiError(
                StatusCode.PERMISSION_DENIED, f"Permission denied on resource project {project}."
            )

    def create_queue(self, parent: str, queue: Any) -> Any:
        self._check_parent(parent)
        if not QUEUE_RE.match(queue.name) or not queue.name.startswith(parent + "/queues/"):
            raise ApiError(
                StatusCode.INVALID_ARGUMENT,
                'Queue name must be formatted: "projects/<PROJECT_ID>/locations/<LOCATION_ID>'
                '/queues/<QUEUE_ID>".',
            )
        if queue.name in self.queues:
            raise ApiError(StatusCode.ALREADY_EXISTS, "Queue already exists")
        if self._recent(self.queue_tombstones, queue.name):
            raise ApiError(
                StatusCode.FAILED_PRECONDITION,
                "The queue cannot be created because a queue with this name existed too recently.",
            )
        pb = QueuePb()
        pb.CopyFrom(queue)
        pb.state = RUNNING
        self._fill_queue_defaults(pb)
        return self._install_queue(pb)

    def _install_queue(self, pb: Any) -> Any:
        qs = QueueState(pb=pb)
        self.queues[pb.name] = qs
        self.store.put_queue(pb.name, pb.SerializeToString())
        self._start_runner(qs)
        return pb

    def update_queue(self, queue: Any, update_mask: Any | None) -> Any:
        """Update a queue, creating it if missing (as the real UpdateQueue does)."""
        match = QUEUE_RE.match(queue.name)
        if not match:
            raise ApiError(
                StatusCode.INVALID_ARGUMENT,
                'Queue name must be formatted: "projects/<PROJECT_ID>/locations/<LOCATION_ID>'
                '/queues/<QUEUE_ID>".',
            )
        qs = self.queues.get(queue.name)
        if qs is None:
            if self._recent(self.queue_tombstones, queue.name):
                raise ApiError(
                    StatusCode.FAILED_PRECONDITION,
                    "The queue cannot be created because a queue with this name existed too "
                    "recently.",
                )
            parent = queue.name.rsplit("/queues/", 1)[0]
            return self.create_queue(parent, queue)
        pb = QueuePb()
        pb.CopyFrom(qs.pb)
        if update_mask is not None and update_mask.paths:
            for path in update_mask.paths:
                if path.split(".")[0] in ("name", "state", "purge_time"):
                    raise ApiError(StatusCode.INVALID_ARGUMENT, f"Field {path} is output only.")
            try:
                field_mask_pb2.FieldMask(paths=list(update_mask.paths)).MergeMessage(
                    queue, pb, replace_message_field=True, replace_repeated_field=True
                )
            except ValueError as exc:
                raise ApiError(StatusCode.INVALID_ARGUMENT, str(exc)) from exc
            rl = pb.rate_limits
            if any(p.startswith("rate_limits") for p in update_mask.paths):
                rl.max_burst_size = 0
        else:
            state = pb.state
            pb.CopyFrom(queue)
            pb.state = state
            pb.purge_time.CopyFrom(qs.pb.purge_time)
        self._fill_queue_defaults(pb)
        qs.pb = pb
        qs.tokens = min(qs.tokens, float(pb.rate_limits.max_burst_size))
        self.store.put_queue(pb.name, pb.SerializeToString())
        qs.wake.set()
        return pb

    def get_queue(self, name: str) -> Any:
        return self.queue_state(name).pb

    def list_queues(self, parent: str) -> list[Any]:
        self._check_parent(parent)
        prefix = parent + "/queues/"
        return [qs.pb for name, qs in sorted(self.queues.items()) if name.startswith(prefix)]

    def delete_queue(self, name: str) -> None:
        qs = self.queues.pop(name, None)
        if qs is None:
            raise ApiError(StatusCode.NOT_FOUND, MSG_NOT_FOUND)
        if qs.runner:
            qs.runner.cancel()
        expires = self.clock.now() + self.queue_tombstone_seconds
        self.queue_tombstones[name] = expires
        self.store.delete_queue(name)
        self.store.put_tombstone(name, "queue", expires)

    def purge_queue(self, name: str) -> Any:
        qs = self.queue_state(name)
        for task_name in list(qs.tasks):
            self._tombstone(task_name)
            self.store.delete_task(task_name)
        qs.tasks.clear()
        qs.heap.clear()
        qs.pb.purge_time.CopyFrom(to_timestamp(self.clock.now()))
        self.store.put_queue(name, qs.pb.SerializeToString())
        return qs.pb

    def set_paused(self, name: str, paused: bool) -> Any:
        qs = self.queue_state(name)
        qs.pb.state = PAUSED if paused else RUNNING
        self.store.put_queue(name, qs.pb.SerializeToString())
        qs.wake.set()
        return qs.pb

    # ------------------------------------------------------------------ tasks
    def create_task(self, parent: str, task: Any, response_view: int) -> Any:
        now = self.clock.now()
        if task.name:
            queue_part, sep, task_id = task.name.rpartition("/tasks/")
            if not sep:
                raise ApiError(
                    StatusCode.INVALID_ARGUMENT,
                    'Task name must be formatted: "projects/<PROJECT_ID>/locations/<LOCATION_ID>'
                    '/queues/<QUEUE_ID>/tasks/<TASK_ID>".',
                )
            if queue_part != parent:
                raise ApiError(
                    StatusCode.INVALID_ARGUMENT,
                    f"The queue name from request ('{parent}') must be the same as the queue "
                    f"name in the named task ('{queue_part}').",
                )
            if not TASK_ID_RE.match(task_id):
                raise ApiError(
                    StatusCode.INVALID_ARGUMENT,
                    f'Task ID "{task_id}" can contain only letters ([A-Za-z]), numbers ([0-9]), '
                    "hyphens (-), or underscores (_). Task ID must between 1 and 500 characters.",
                )
        qs = self.queue_state(parent)
        if task.HasField("app_engine_http_request"):
            raise ApiError(
                StatusCode.UNIMPLEMENTED, "App Engine targets are not supported by the emulator."
            )
        if not task.HasField("http_request"):
            raise ApiError(StatusCode.INVALID_ARGUMENT, "Task must have an http_request.")
        try:
            url = httpx.URL(task.http_request.url) if task.http_request.url else None
        except httpx.InvalidURL:
            url = None
        if url is None or url.scheme not in ("http", "https") or not url.host:
            raise ApiError(
                StatusCode.INVALID_ARGUMENT,
                "HttpRequest.url must be a valid http or https URL with a host.",
            )
        if task.http_request.HasField("oidc_token"):
            email = task.http_request.oidc_token.service_account_email
            if not email:
                raise ApiError(
                    StatusCode.INVALID_ARGUMENT, "OidcToken.service_account_email must be set."
                )
            if email not in self.service_accounts:
                raise ApiError(StatusCode.PERMISSION_DENIED, msg_not_acting_as(email))
        pb = TaskPb()
        pb.CopyFrom(task)
        if not pb.name:
            pb.name = f"{parent}/tasks/{secrets.randbits(63):019d}"
        if pb.name in qs.tasks or self._recent(self.tombstones, pb.name):
            raise ApiError(StatusCode.ALREADY_EXISTS, MSG_EXISTS)
        schedule = from_timestamp(pb.schedule_time) if pb.HasField("schedule_time") else 0.0
        if schedule > now + MAX_SCHEDULE_AHEAD:
            raise ApiError(
                StatusCode.INVALID_ARGUMENT,
                "The task's schedule time is too far in the future: it must be at most 30 days "
                "after the current time.",
            )
        pb.schedule_time.CopyFrom(to_timestamp(max(schedule, now)))
        if pb.HasField("dispatch_deadline"):
            deadline = from_duration(pb.dispatch_deadline)
            if not MIN_DEADLINE <= deadline <= MAX_DEADLINE:
                raise ApiError(
                    StatusCode.INVALID_ARGUMENT,
                    "The dispatch deadline must be between 15 seconds and 30 minutes.",
                )
        else:
            pb.dispatch_deadline.CopyFrom(to_duration(DEFAULT_DEADLINE))
        if not pb.http_request.http_method:
            pb.http_request.http_method = HttpMethod.POST
        pb.create_time.CopyFrom(to_timestamp(now))
        pb.dispatch_count = pb.response_count = 0
        pb.ClearField("first_attempt")
        pb.ClearField("last_attempt")
        if pb.ByteSize() > MAX_TASK_BYTES:
            raise ApiError(StatusCode.INVALID_ARGUMENT, "Task size too large.")
        ts = TaskState(pb=pb, queue=parent)
        qs.tasks[pb.name] = ts
        self._save_task(ts)
        self._push(qs, ts)
        return self.view(ts, response_view)

    def get_task(self, name: str, response_view: int) -> Any:
        _, ts = self._task_state(name)
        return self.view(ts, response_view)

    def list_tasks(self, parent: str, response_view: int) -> list[Any]:
        qs = self.queue_state(parent)
        return [self.view(ts, response_view) for _, ts in sorted(qs.tasks.items())]

    def delete_task(self, name: str) -> None:
        qs, ts = self._task_state(name)
        self._remove(qs, ts)

    def run_task(self, name: str, response_view: int) -> Any:
        """Dispatch now, ignoring pause and rate limits (as the real RunTask does)."""
        qs, ts = self._task_state(name)
        if not ts.running:
            ts.seq = next(self._seq)  # invalidates the heap entry
            self._start_attempt(qs, ts)
        return self.view(ts, response_view)

    def _remove(self, qs: QueueState, ts: TaskState) -> None:
        qs.tasks.pop(ts.pb.name, None)
        ts.seq = -1
        self._tombstone(ts.pb.name)
        self.store.delete_task(ts.pb.name)

    # ------------------------------------------------------------------ scheduling
    async def _run_queue(self, qs: QueueState) -> None:
        heap = qs.heap
        while not self.stopping:
            qs.wake.clear()
            next_at = math.inf
            if not qs.paused:
                now = self.clock.now()
                rl = qs.pb.rate_limits
                rate, burst = rl.max_dispatches_per_second, float(rl.max_burst_size or 1)
                qs.tokens = min(burst, qs.tokens + (now - qs.refilled) * rate)
                qs.refilled = now
                while heap:
                    due, seq, name = heap[0]
                    ts = qs.tasks.get(name)
                    if ts is None or ts.seq != seq or ts.running:
                        heapq.heappop(heap)
                        continue
                    if due > now + _DUE_SLACK:
                        next_at = due
                        break
                    if qs.hold_until > now:
                        next_at = qs.hold_until
                        break
                    if qs.inflight >= rl.max_concurrent_dispatches:
                        break  # woken when an attempt finishes
                    if qs.tokens < 1:
                        next_at = now + (1 - qs.tokens) / rate if rate > 0 else math.inf
                        break
                    qs.tokens -= 1
                    heapq.heappop(heap)
                    self._start_attempt(qs, ts)
            await self.clock.wait(qs.wake, next_at)

    def _start_attempt(self, qs: QueueState, ts: TaskState) -> None:
        ts.running = True
        qs.inflight += 1
        job = asyncio.create_task(self._attempt(qs, ts))
        self._inflight.add(job)
        job.add_done_callback(self._inflight.discard)

    def _headers(self, qs: QueueState, ts: TaskState) -> dict[str, str]:
        pb = ts.pb
        headers = {
            k: v
            for k, v in pb.http_request.headers.items()
            if not k.lower().startswith(_RESERVED_HEADERS)
        }
        headers["User-Agent"] = "Google-Cloud-Tasks"
        headers["X-CloudTasks-QueueName"] = qs.pb.name.rsplit("/", 1)[1]
        headers["X-CloudTasks-TaskName"] = pb.name.rsplit("/", 1)[1]
        headers["X-CloudTasks-TaskRetryCount"] = str(pb.dispatch_count)
        headers["X-CloudTasks-TaskExecutionCount"] = str(ts.execution_count)
        headers["X-CloudTasks-TaskETA"] = f"{from_timestamp(pb.schedule_time):.6f}"
        if pb.dispatch_count > 0:
            if ts.previous_status:
                headers["X-CloudTasks-TaskPreviousResponse"] = str(ts.previous_status)
            headers["X-CloudTasks-TaskRetryReason"] = ""
        if pb.http_request.HasField("oidc_token"):
            oidc = pb.http_request.oidc_token
            if oidc.service_account_email not in self.service_accounts:
                raise NotActingAs(oidc.service_account_email)
            token = self.signer.mint(
                audience=oidc.audience or pb.http_request.url, email=oidc.service_account_email
            )
            headers["Authorization"] = f"Bearer {token}"
        return headers

    async def _attempt(self, qs: QueueState, ts: TaskState) -> None:
        pb = ts.pb
        status: int | None = None
        retry_after: float | None = None
        error_code, error_message = StatusCode.OK, ""
        dispatch_time = self.clock.now()
        try:
            delivery = self.http.send(
                method=HttpMethod(pb.http_request.http_method or HttpMethod.POST).name,
                url=pb.http_request.url,
                headers=self._headers(qs, ts),
                body=pb.http_request.body or None,
            )
            status, retry_after_header = await self.clock.run_within(
                from_duration(pb.dispatch_deadline), delivery
            )
            if status in (429, 503):
                retry_after = parse_retry_after(retry_after_header, now=self.clock.now())
        except TimeoutError:
            error_code, error_message = StatusCode.DEADLINE_EXCEEDED, "Dispatch deadline exceeded"
        except DeliveryError as exc:
            error_code, error_message = StatusCode.UNAVAILABLE, f"{type(exc).__name__}: {exc}"
        except NotActingAs as exc:  # not sent: no token for an account it was not given
            error_code, error_message = StatusCode.PERMISSION_DENIED, msg_not_acting_as(str(exc))
        finally:
            ts.running = False
            qs.inflight -= 1
            qs.wake.set()
        self._finish_attempt(
            qs,
            ts,
            dispatch_time=dispatch_time,
            status=status,
            retry_after=retry_after,
            error=(error_code, error_message),
        )

    def _finish_attempt(
        self,
        qs: QueueState,
        ts: TaskState,
        *,
        dispatch_time: float,
        status: int | None,
        retry_after: float | None,
        error: tuple[StatusCode, str],
    ) -> None:
        if self.queues.get(ts.queue) is not qs or qs.tasks.get(ts.pb.name) is not ts:
            return  # deleted or purged while in flight
        now = self.clock.now()
        pb = ts.pb
        attempt = AttemptPb(
            schedule_time=pb.schedule_time,
            dispatch_time=to_timestamp(dispatch_time),
            response_time=to_timestamp(now),
        )
        if status is not None:
            code = grpc_code_for_http(status)
            attempt.response_status.CopyFrom(
                status_pb2.Status(code=code.value[0], message=f"HTTP {status}")
            )
            pb.response_count += 1
        else:
            attempt.response_status.CopyFrom(
                status_pb2.Status(code=error[0].value[0], message=error[1])
            )
        if pb.dispatch_count == 0:
            pb.first_attempt.CopyFrom(AttemptPb(dispatch_time=to_timestamp(dispatch_time)))
        pb.dispatch_count += 1
        pb.last_attempt.CopyFrom(attempt)
        if status is not None and 200 <= status < 300:
            self._remove(qs, ts)
            return
        if status is not None and status < 500:
            ts.execution_count += 1
        ts.previous_status = status or 0
        rc = pb.retry_config if pb.HasField("retry_config") else qs.pb.retry_config
        if retries_exhausted(
            attempts=pb.dispatch_count,
            max_attempts=rc.max_attempts,
            first_attempt=from_timestamp(pb.first_attempt.dispatch_time),
            now=now,
            max_retry_duration=from_duration(rc.max_retry_duration),
        ):
            self._remove(qs, ts)
            self._dead_letter(qs, ts)
            return
        delay = backoff_seconds(
            pb.dispatch_count,
            min_backoff=from_duration(rc.min_backoff),
            max_backoff=from_duration(rc.max_backoff),
            max_doublings=rc.max_doublings,
        )
        if retry_after is not None:
            delay = max(delay, retry_after)
            qs.hold_until = max(qs.hold_until, now + retry_after)
        pb.schedule_time.CopyFrom(to_timestamp(now + delay))
        self._save_task(ts)
        self._push(qs, ts)

    def _dead_letter(self, qs: QueueState, ts: TaskState) -> None:
        """Copy a retried-out task to `<queue>-dlq` (an emulator extra; Google just drops it).

        Applies when a queue named `<queue>-dlq` exists, or the queue id is in
        `dead_letter_queues`, or `dead_letter_all` is set (then the DLQ is created paused).
        """
        queue_id = qs.pb.name.rsplit("/", 1)[1]
        if queue_id.endswith("-dlq"):
            return
        dlq_name = f"{qs.pb.name}-dlq"
        dlq = self.queues.get(dlq_name)
        if dlq is None:
            if not (self.dead_letter_all or queue_id in self.dead_letter_queues):
                return
            pb = QueuePb(name=dlq_name, state=PAUSED)
            self._fill_queue_defaults(pb)
            pb.state = PAUSED
            self.queue_tombstones.pop(dlq_name, None)
            self._install_queue(pb)
            dlq = self.queues[dlq_name]
        copy = TaskPb()
        copy.CopyFrom(ts.pb)
        task_id = copy.name.rsplit("/", 1)[1]
        copy.name = f"{dlq_name}/tasks/{task_id}"
        if copy.name in dlq.tasks or self._recent(self.tombstones, copy.name):
            copy.name = f"{dlq_name}/tasks/{task_id[:480]}-{secrets.token_hex(6)}"
        now = self.clock.now()
        copy.schedule_time.CopyFrom(to_timestamp(now))
        copy.create_time.CopyFrom(to_timestamp(now))
        copy.dispatch_count = copy.response_count = 0
        copy.ClearField("first_attempt")
        copy.ClearField("last_attempt")
        dead = TaskState(pb=copy, queue=dlq_name)
        dlq.tasks[copy.name] = dead
        self._save_task(dead)
        self._push(dlq, dead)
        log.info("task %s retried out; copied to %s", ts.pb.name, copy.name)

    async def _housekeeping(self) -> None:
        """Forget expired tombstones every minute so memory stays bounded."""
        while not self.stopping:
            await asyncio.sleep(60)
            now = self.clock.now()
            for table in (self.tombstones, self.queue_tombstones):
                for name in [n for n, exp in table.items() if exp <= now]:
                    del table[name]
            self.store.prune_tombstones(now)
