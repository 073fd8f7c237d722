"""A publish attempt's database work in as few round trips as its guarantees allow, as plain
SQL on the pooled connection's own psycopg connection (`database.driver_connection`, in
autocommit: a single statement is its own transaction, and an explicit `BEGIN ... COMMIT` is
pipelined):

- the claim: ONE statement claims the target (one conditional UPDATE: a pending target, a
  `retry` target whose wait is over, or a `processing` target whose lease ran out; `attempts`
  is bumped and is the claim's fencing token; `publish_started_at` is stamped if unset, so the
  "attempting" marker is durable before the platform call, and `earlier` says an EARLIER
  attempt had set it: reconcile first), marks the post `processing`, reads the account and the
  post's media, and inserts the run's start record (whose insert trigger sends the reporter's
  NOTIFY at commit): one round trip, one transaction;
- the record, one transaction in one round trip (pipelined): `BEGIN`; the settlement (only
  while this attempt still holds its claim) with the run's end record in the same statement
  (inserted only if the settlement was); the account's needs-reconnect mark; the post row
  lock; the roll-up (its own statement after the lock: `posts.roll_up_post_status` says why);
  `COMMIT`;
- the platform state an adapter saves right before its call: one statement.

Before, an attempt took 12 round trips through the ORM session (BEGIN, claim, post, account,
start record, COMMIT; BEGIN, settle, lock, roll-up, end record, COMMIT) and most of the API's
CPU per publish went to the session machinery around them (bench/bench_cpu_per_publish.py).
Fixed statement texts are prepared by psycopg after a few uses on each connection.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson
from psycopg import AsyncConnection
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from models.crypto import token_cipher
from models.posts import LOCK_POST_SQL, ROLL_UP_SQL
from models.statuses import AccountStatus, AttemptKind, PostStatus, RunPhase, TargetStatus
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
    target = PublishTarget(**{name: row[name] for name in _TARGET_COLUMNS})
    post = ScheduledPost(
        id=target.scheduled_post_id,
        company_id=row["post_company_id"],
        content=row["post_content"],
        scheduled_at=row["post_scheduled_at"],
        media_asset_ids=row["post_media_asset_ids"] or [],
        status=row["post_status"],
        attempts=row["post_attempts"],
    )
    account = SocialAccount(**{name: row[f"account_{name}"] for name in _ACCOUNT_COLUMNS})
    account.access_token = _decrypt(row["account_access_token"])  # type: ignore[assignment]
    account.refresh_token = _decrypt(row["account_refresh_token"])
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

#: The end record of an attempt that settled its target: its logs end with the record step,
#: timed by the database up to the moment the row is written (the settlement included).
_RECORD_STEP_LINE = (
    "jsonb_build_array(jsonb_build_object("
    f"'level', {logging.INFO}, "
    "'message', 'step record: ' || round(extract(epoch FROM clock_timestamp() - "
    "%(r_record_started)s) * 1000)::text || ' ms', "
    "'timestamp', to_jsonb(clock_timestamp())))"
)


def _settle_sql(settlement: Settlement) -> str:
    """Settle while the claim holds and, only if it did, insert the run's end record: one
    statement, whose RETURNING says whether this attempt still owned the target."""
    assignments = [f"{name} = %({name})s" for name in settlement.values()]
    return (
        "WITH settled AS (UPDATE publish_logs SET "
        + ", ".join([*assignments, "updated_at = now()"])
        + " WHERE id = %(b_target_id)s AND status = %(b_processing)s AND attempts = %(b_attempt)s"
        " RETURNING *), run_end AS ("
        f"INSERT INTO run_records ({_RUN_RECORD_COLUMNS}) SELECT %(r_id)s, %(r_run_id)s, "
        "%(r_parent_run_id)s, %(r_phase)s, %(r_kind)s, %(r_run_name)s, %(r_tags)s, "
        "%(r_parameters)s, %(r_outcome)s, %(r_state_message)s, %(r_started_at)s, "
        f"%(r_ended_at)s, %(r_next_run_at)s, %(r_logs)s::jsonb || {_RECORD_STEP_LINE} "
        "FROM settled) SELECT * FROM settled"
    )


#: One statement text per settlement shape (success / error / re-enqueue): few, and fixed, so
#: psycopg prepares each once per connection.
_SETTLE_SQL: dict[tuple[str, ...], str] = {}

_MARK_NEEDS_RECONNECT_SQL = (
    "UPDATE social_accounts SET status = %(status)s, status_reason = %(reason)s, "
    "updated_at = now() WHERE id = %(account_id)s"
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
    """The record's transaction in ONE round trip (`BEGIN`, the settlement with the run's end
    record `record` (an `AttemptRecord.row()`), the account's needs-reconnect mark, the post
    row lock, the roll-up, `COMMIT`, pipelined); the settled target, or None when this attempt
    had lost its claim: then nothing of it was written (the roll-up only recomputed the post's
    status, under its lock) and the caller records the lost claim with `add_end_record`."""
    values = settlement.values()
    key = tuple(values)
    sql = _SETTLE_SQL.get(key)
    if sql is None:
        sql = _SETTLE_SQL[key] = _settle_sql(settlement)
    params = {
        name: Jsonb(v, dumps=_dumps) if name == "raw_response" and v is not None else v
        for name, v in values.items()
    }
    params |= {f"r_{name}": value for name, value in _json_columns(record).items()}
    params |= {
        "b_target_id": target_id,
        "b_processing": TargetStatus.PROCESSING.value,
        "b_attempt": attempt,
        "r_record_started": record_started,
    }
    cursor = conn.cursor(row_factory=dict_row)
    async with conn.pipeline():
        await conn.execute("BEGIN")
        await cursor.execute(sql, params)
        if needs_reconnect is not None:
            account_id, reason = needs_reconnect
            await conn.execute(
                _MARK_NEEDS_RECONNECT_SQL,
                {
                    "status": AccountStatus.NEEDS_RECONNECT.value,
                    "reason": reason,
                    "account_id": account_id,
                },
            )
        # After the settlement (target row, then post row: the claim's lock order). Locking and
        # recomputing when the claim was lost is harmless: the roll-up is a pure function of
        # the targets, computed under the lock.
        await conn.execute(LOCK_POST_SQL, {"post_id": post_id})
        await conn.execute(ROLL_UP_SQL, {"post_id": post_id})
        await conn.execute("COMMIT")
    row = await cursor.fetchone()
    await cursor.close()
    return None if row is None else PublishTarget(**row)


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
