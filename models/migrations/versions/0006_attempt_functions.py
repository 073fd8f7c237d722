"""the publish attempt's record and the post roll-up as SQL functions: one call, one round trip

`roll_up_post_status(post_id)` locks the post row, then recomputes its status from its targets
in a statement of its own (under READ COMMITTED, a statement's snapshot is taken when it starts,
and a PL/pgSQL function's statements each take theirs: the recompute sees every target that
settled before the lock was granted, so two targets settling at the same instant cannot each
miss the other's result). The truth table: tests/models/test_roll_up.py. The current text of
both functions is models/sql/functions.sql.

`record_publish_attempt(...)` is the record step of a publish attempt in one statement: the
settlement, only while the attempt still holds its claim (status `processing`, the attempt's
number); the run's end record, only if it did (its logs end with the record step, timed by the
database up to the write); the account's needs-reconnect mark when asked; the roll-up. It
returns the settled target, or no row when the claim was lost. Before, the same transaction was
six pipelined statements (BEGIN, settle, mark, lock, roll-up, COMMIT), and sending them was most
of the database work's CPU in the API per publish (bench/bench_cpu_per_publish.py).

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-02 13:00:00
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

ROLL_UP = """
CREATE OR REPLACE FUNCTION roll_up_post_status(p_post_id uuid) RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
    rolled text;
BEGIN
    PERFORM 1 FROM scheduled_posts WHERE id = p_post_id FOR UPDATE;
    UPDATE scheduled_posts AS p
       SET status = coalesce((
             SELECT CASE
               WHEN bool_and(t.status = 'cancelled') THEN 'cancelled'
               WHEN bool_and(t.status IN ('success', 'cancelled')) THEN 'published'
               WHEN bool_and(t.status IN ('success', 'failed', 'cancelled')) THEN 'failed'
               WHEN bool_or(t.status IN ('processing', 'success', 'failed')) THEN 'processing'
               ELSE 'pending'
             END
               FROM publish_logs AS t
              WHERE t.scheduled_post_id = p_post_id), p.status),
           updated_at = now()
     WHERE p.id = p_post_id
    RETURNING p.status INTO rolled;
    RETURN rolled;
END
$$
"""

RECORD = """
CREATE OR REPLACE FUNCTION record_publish_attempt(
    p_target_id uuid,
    p_attempt integer,
    p_post_id uuid,
    p_settlement jsonb,
    p_run_end jsonb,
    p_record_started timestamptz,
    p_reconnect_account_id uuid,
    p_reconnect_reason text
) RETURNS SETOF publish_logs
LANGUAGE plpgsql AS $$
DECLARE
    settled publish_logs;
BEGIN
    -- p_settlement holds the settlement's columns; one it does not name keeps its value.
    UPDATE publish_logs AS t
       SET status = p_settlement->>'status',
           error_code = p_settlement->>'error_code',
           error_message = p_settlement->>'error_message',
           raw_response = CASE WHEN jsonb_typeof(p_settlement->'raw_response') = 'object'
                               THEN p_settlement->'raw_response' END,
           next_retry_at = (p_settlement->>'next_retry_at')::timestamptz,
           lease_expires_at = NULL,
           remote_id = CASE WHEN p_settlement ? 'remote_id'
                            THEN p_settlement->>'remote_id' ELSE t.remote_id END,
           remote_url = CASE WHEN p_settlement ? 'remote_url'
                             THEN p_settlement->>'remote_url' ELSE t.remote_url END,
           published_at = CASE WHEN p_settlement ? 'published_at'
                               THEN (p_settlement->>'published_at')::timestamptz
                               ELSE t.published_at END,
           dispatch_generation = CASE WHEN p_settlement ? 'dispatch_generation'
                                      THEN (p_settlement->>'dispatch_generation')::integer
                                      ELSE t.dispatch_generation END,
           cloud_task_name = CASE WHEN p_settlement ? 'dispatch_generation'
                                  THEN NULL ELSE t.cloud_task_name END,
           updated_at = now()
     WHERE t.id = p_target_id AND t.status = 'processing' AND t.attempts = p_attempt
    RETURNING t.* INTO settled;
    IF FOUND THEN
        INSERT INTO run_records (id, run_id, parent_run_id, phase, kind, run_name, tags,
                                 parameters, outcome, state_message, started_at, ended_at,
                                 next_run_at, logs)
        SELECT r.id, r.run_id, r.parent_run_id, r.phase, r.kind, r.run_name, r.tags,
               r.parameters, r.outcome, r.state_message, r.started_at, r.ended_at,
               r.next_run_at,
               coalesce(r.logs, '[]'::jsonb) || jsonb_build_array(jsonb_build_object(
                   'level', 20,
                   'message', 'step record: ' || round(extract(epoch FROM
                       clock_timestamp() - p_record_started) * 1000)::text || ' ms',
                   'timestamp', to_jsonb(clock_timestamp())))
          FROM jsonb_populate_record(NULL::run_records, p_run_end) AS r;
    END IF;
    IF p_reconnect_account_id IS NOT NULL THEN
        UPDATE social_accounts
           SET status = 'needs_reconnect', status_reason = p_reconnect_reason,
               updated_at = now()
         WHERE id = p_reconnect_account_id;
    END IF;
    -- After the settlement: the target row, then the post row, the claim's lock order.
    -- Locking and recomputing when the claim was lost is harmless: the roll-up is a pure
    -- function of the targets, computed under the lock.
    PERFORM roll_up_post_status(p_post_id);
    IF settled.id IS NOT NULL THEN
        RETURN NEXT settled;
    END IF;
    RETURN;
END
$$
"""


def upgrade() -> None:
    op.execute(ROLL_UP)
    op.execute(RECORD)


def downgrade() -> None:
    op.execute(
        "DROP FUNCTION record_publish_attempt(uuid, integer, uuid, jsonb, jsonb, timestamptz,"
        " uuid, text)"
    )
    op.execute("DROP FUNCTION roll_up_post_status(uuid)")
