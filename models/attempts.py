"""A publish attempt's database work in as few round trips as its guarantees allow, as plain
SQL on a psycopg connection of the hot path's own pool (`database.DriverPool`, in autocommit:
a single statement is its own transaction):

- the claim: ONE statement claims the target (one conditional UPDATE: a pending target, a
  `retry` target whose wait is over, or a `processing` target whose lease ran out, none while
  a media staging holds it (`models/staging.py`); `attempts`
  is bumped and is the claim's fencing token; `publish_started_at` is stamped if unset, so the
  "attempting" marker is durable before the platform call, and `earlier` says an EARLIER
  attempt had set it: reconcile first), marks the post `processing`, reads the account and the
  post's media, and inserts the run's start record (whose insert trigger sends the reporter's
  NOTIFY at commit): one round trip, one transaction;
- the record, ONE statement (`record_publish_attempt`, a SQL function: migration 0006): the
  settlement (only while this attempt still holds its claim), the run's end record (only if
  the settlement was written), the account's needs-reconnect mark, the post row lock and the
  roll-up (`roll_up_post_status`, its own statement after the lock: the migration says why);
- the platform state an adapter saves right before its call: one statement.

Before, an attempt took 12 round trips through the ORM session (BEGIN, claim, post, account,
start record, COMMIT; BEGIN, settle, lock, roll-up, end record, COMMIT) and most of the API's
CPU per publish went to the session machinery around them; then the record was six pipelined
statements, each a cost in the driver (bench/bench_cpu_per_publish.py).
Fixed statement texts are prepared by psycopg after a few uses on each connection.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

import orjson
from psycopg import AsyncConnection
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb
from sqlalchemy.orm import configure_mappers
from sqlalchemy.orm.base import manager_of_class

from models.crypto import token_cipher
from models.statuses import AttemptKind, PostStatus, RunPhase, TargetStatus
from models.tables import MediaAsset, PublishTarget, ScheduledPost, SocialAccount
from models.targets import Settlement

_ACCOUNT_COLUMNS = (
    "id",
    "company_id",
    "platform",
    "external_id",
    "handle",
    "base_url",
    "access_token",
    "refresh_token",
    "token_expires_at",
    "max_characters",
    "status",
    "status_reason",
    "created_at",
    "updated_at",
)

_CLAIM_SQL = f"""
WITH claimed AS (
    UPDATE publish_logs AS t
       SET status = '{TargetStatus.PROCESSING}',
           attempts = t.attempts + 1,
           lease_expires_at = now() + make_interval(secs => %(lease_seconds)s),
           last_retry_at = now(),
           next_retry_at = NULL,
           publish_started_at = coalesce(t.publish_started_at, now()),
           updated_at = now()
     WHERE t.scheduled_post_id = %(post_id)s
       AND t.platform = %(platform)s
       AND t.account_id = %(account_id)s
       AND t.idempotency_key = %(idempotency_key)s
       AND (t.status = '{TargetStatus.PENDING}'
            OR (t.status = '{TargetStatus.RETRY}'
                AND (t.next_retry_at IS NULL OR t.next_retry_at <= now()))
            OR (t.status = '{TargetStatus.PROCESSING}' AND t.lease_expires_at < now()))
       AND (t.staging_lease_expires_at IS NULL OR t.staging_lease_expires_at < now())
 RETURNING t.*, t.publish_started_at < now() AS earlier
), post AS (
    UPDATE scheduled_posts AS p
       SET status = '{PostStatus.PROCESSING}',
           attempts = p.attempts + 1,
           last_attempt_at = now(),
           updated_at = now()
     WHERE p.id = (SELECT scheduled_post_id FROM claimed)
 RETURNING p.id, p.company_id, p.content, p.scheduled_at, p.media_asset_ids, p.status,
           p.attempts
), run_start AS (
    INSERT INTO run_records (id, run_id, phase, kind, run_name, tags, parameters, started_at)
    SELECT %(record_id)s, %(run_id)s, '{RunPhase.START}', '{AttemptKind.PUBLISH}',
           left(%(run_name)s || CASE WHEN c.attempts > 1 THEN ' · #' || c.attempts ELSE '' END,
                200),
           ARRAY['company:' || p.company_id::text] || %(tags)s::text[],
           %(parameters)s::jsonb || jsonb_build_object('attempt', c.attempts),
           %(started_at)s
      FROM claimed AS c, post AS p
)
SELECT c.*,
       p.company_id AS post_company_id, p.content AS post_content,
       p.scheduled_at AS post_scheduled_at, p.media_asset_ids AS post_media_asset_ids,
       p.status AS post_status, p.attempts AS post_attempts,
       {", ".join(f"a.{name} AS account_{name}" for name in _ACCOUNT_COLUMNS)},
       CASE WHEN cardinality(p.media_asset_ids) > 0 THEN (
           SELECT json_agg(json_build_object('id', m.id, 'company_id', m.company_id,
                                             'url', m.url, 'mime_type', m.mime_type,
                                             'size_bytes', m.size_bytes)
                           ORDER BY array_position(p.media_asset_ids, m.id))
             FROM media_assets AS m WHERE m.id = ANY(p.media_asset_ids)
       ) END AS media
  FROM claimed AS c
  JOIN post AS p ON p.id = c.scheduled_post_id
  JOIN social_accounts AS a ON a.id = c.account_id
"""

_Entity = TypeVar("_Entity")

# `loaded` builds instances without the mapped `__init__`, which is what configures the mappers
# on first use (a fresh API process's first publish failed without this): configured here, once,
# every mapped class being defined in `models.tables`, imported above.
configure_mappers()

_TARGET_COLUMNS = tuple(column.key for column in PublishTarget.__table__.c)


@dataclass(frozen=True, slots=True)
class ClaimedAttempt:
    """What one claimed attempt works with, read by the claim's own statement (all detached)."""

    target: PublishTarget
    post: ScheduledPost
    account: SocialAccount
    media: list[MediaAsset]
    #: An earlier attempt stamped `publish_started_at` and recorded nothing: reconcile first.
    earlier_attempt_started: bool


@dataclass(frozen=True, slots=True)
class StartTemplate:
    """The run's start record as far as it is known before the claim: the claim's statement
    adds the attempt number (to the name after the first attempt, and to the parameters) and the
    company's tag, so the start commits with the claim in the same statement."""

    record_id: uuid.UUID
    run_id: uuid.UUID
    run_name: str
    tags: Sequence[str]
    parameters: dict[str, Any]
    started_at: datetime


def loaded(cls: type[_Entity], values: dict[str, Any]) -> _Entity:
    """A detached instance of a mapped class holding `values`, built as SQLAlchemy builds a
    loaded row (a new instance state, the attributes put straight into its dict): the mapped
    `__init__` fires an attribute event per column, which made building the four rows of an
    attempt a tenth of the API's CPU per publish (bench/bench_cpu_per_publish.py). For reading
    only: nothing built here is ever added to a session."""
    instance = manager_of_class(cls).new_instance()
    instance.__dict__.update(values)
    return instance


def _decrypt(value: bytes | None) -> str | None:
    return None if value is None else token_cipher().decrypt(bytes(value)).decode()


async def claim_attempt(
    conn: AsyncConnection[Any],
    *,
    post_id: uuid.UUID,
    platform: str,
    account_id: uuid.UUID,
    idempotency_key: str,
    lease_seconds: float,
    start: StartTemplate,
) -> ClaimedAttempt | None:
    """Claim the target for one attempt and commit its start (one statement, `conn` in
    autocommit); None when nothing was claimable (busy, settled, cancelled, unknown)."""
    async with conn.cursor(row_factory=dict_row) as cursor:
        await cursor.execute(
            _CLAIM_SQL,
            {
                "post_id": post_id,
                "platform": platform,
                "account_id": account_id,
                "idempotency_key": idempotency_key,
                "lease_seconds": float(lease_seconds),
                "record_id": start.record_id,
                "run_id": start.run_id,
                "run_name": start.run_name,
                "tags": list(start.tags),
                "parameters": Jsonb(start.parameters, dumps=_dumps),
                "started_at": start.started_at,
            },
        )
        row = await cursor.fetchone()
    if row is None:
        return None
    target = loaded(PublishTarget, {name: row[name] for name in _TARGET_COLUMNS})
    post = loaded(
        ScheduledPost,
        dict(
            id=target.scheduled_post_id,
            company_id=row["post_company_id"],
            content=row["post_content"],
            scheduled_at=row["post_scheduled_at"],
            media_asset_ids=row["post_media_asset_ids"] or [],
            status=row["post_status"],
            attempts=row["post_attempts"],
        ),
    )
    account_values = {name: row[f"account_{name}"] for name in _ACCOUNT_COLUMNS}
    account_values["access_token"] = _decrypt(row["account_access_token"])
    account_values["refresh_token"] = _decrypt(row["account_refresh_token"])
    account = loaded(SocialAccount, account_values)
    media = [
        MediaAsset(
            id=uuid.UUID(m["id"]),
            company_id=uuid.UUID(m["company_id"]),
            url=m["url"],
            mime_type=m["mime_type"],
            size_bytes=m["size_bytes"],
        )
        for m in row["media"] or []
    ]
    return ClaimedAttempt(
        target=target,
        post=post,
        account=account,
        media=media,
        earlier_attempt_started=bool(row["earlier"]),
    )


_RUN_RECORD_COLUMNS = (
    "id, run_id, parent_run_id, phase, kind, run_name, tags, parameters, outcome, "
    "state_message, started_at, ended_at, next_run_at, logs"
)

#: The record step in one statement (migration 0006: the settlement while the claim holds,
#: the run's end record if it did, the needs-reconnect mark, the roll-up under the post lock).
_RECORD_SQL = (
    "SELECT * FROM record_publish_attempt(%(target_id)s, %(attempt)s, %(post_id)s,"
    " %(settlement)s, %(run_end)s, %(record_started)s, %(reconnect_account_id)s,"
    " %(reconnect_reason)s)"
)

_INSERT_RUN_RECORD_SQL = (
    f"INSERT INTO run_records ({_RUN_RECORD_COLUMNS}) VALUES "
    "(%(id)s, %(run_id)s, %(parent_run_id)s, %(phase)s, %(kind)s, %(run_name)s, %(tags)s, "
    "%(parameters)s, %(outcome)s, %(state_message)s, %(started_at)s, %(ended_at)s, "
    "%(next_run_at)s, %(logs)s)"
)


def _json_columns(record: dict[str, Any]) -> dict[str, Any]:
    return record | {
        "parameters": Jsonb(record["parameters"], dumps=_dumps),
        "logs": Jsonb(record["logs"], dumps=_dumps),
    }


def _dumps(value: Any) -> bytes:
    """orjson (several times faster than `json.dumps`); what it refuses (an integer beyond 64
    bits in a platform's answer) goes through the standard library as before."""
    try:
        return orjson.dumps(value)
    except TypeError:
        return json.dumps(value).encode()


async def record_attempt(
    conn: AsyncConnection[Any],
    *,
    target_id: uuid.UUID,
    attempt: int,
    settlement: Settlement,
    post_id: uuid.UUID,
    record: dict[str, Any],
    record_started: datetime,
    needs_reconnect: tuple[uuid.UUID, str] | None = None,
) -> PublishTarget | None:
    """The record's transaction in ONE statement, one round trip (`record_publish_attempt`,
    migration 0006): the settlement with the run's end record `record` (an
    `AttemptRecord.row()`), the account's needs-reconnect mark, the post row lock and the
    roll-up. The settled target, or None when this attempt had lost its claim: then nothing of
    it was written (the roll-up only recomputed the post's status, under its lock) and the
    caller records the lost claim with `add_end_record`."""
    account_id, reason = needs_reconnect if needs_reconnect is not None else (None, None)
    cursor = conn.cursor(row_factory=dict_row)
    await cursor.execute(
        _RECORD_SQL,
        {
            "target_id": target_id,
            "attempt": attempt,
            "post_id": post_id,
            "settlement": Jsonb(settlement.values(), dumps=_dumps),
            "run_end": Jsonb(record, dumps=_dumps),
            "record_started": record_started,
            "reconnect_account_id": account_id,
            "reconnect_reason": reason,
        },
    )
    row = await cursor.fetchone()
    await cursor.close()
    return None if row is None else loaded(PublishTarget, row)


async def add_end_record(conn: AsyncConnection[Any], record: dict[str, Any]) -> None:
    """A run's end record on its own (an attempt that lost its claim before recording)."""
    await conn.execute(_INSERT_RUN_RECORD_SQL, _json_columns(record))


_SAVE_STATE_SQL = (
    "UPDATE publish_logs SET platform_state = %(state)s, updated_at = now() "
    f"WHERE id = %(target_id)s AND status = '{TargetStatus.PROCESSING}' "
    "AND attempts = %(attempt)s RETURNING id"
)


async def save_attempt_platform_state(
    conn: AsyncConnection[Any], *, target_id: uuid.UUID, attempt: int, state: dict[str, Any]
) -> bool:
    """`targets.save_claimed_platform_state` as one autocommitted statement."""
    cursor = await conn.execute(
        _SAVE_STATE_SQL,
        {"state": Jsonb(state, dumps=_dumps), "target_id": target_id, "attempt": attempt},
    )
    return (await cursor.fetchone()) is not None
