-- The PL/pgSQL functions of the schema as they are now: the source to read and to change.
--
-- Migrations create them (0004: run_records_notify, 0006: roll_up_post_status and
-- record_publish_attempt), each with its own copy of the text, since a migration must keep
-- meaning what it meant when it ran. To change a function, change it here AND add a migration
-- that creates the same text (CREATE OR REPLACE FUNCTION); tests/models/test_sql_functions.py
-- fails while the migrated database's functions (pg_get_functiondef) differ from this file
-- by more than whitespace.
-- Why the attempt's functions are as they are: models/attempts.py and migration 0006.

-- The reporter's wake-up: one NOTIFY per inserting statement, sent at commit
-- (https://www.postgresql.org/docs/current/sql-notify.html); flows/reporter.py LISTENs.
CREATE OR REPLACE FUNCTION run_records_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('run_records', '');
    RETURN NULL;
END
$$;

-- The post's status from its targets, under the post's row lock (the truth table:
-- tests/models/test_roll_up.py).
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
$$;

-- The record step of a publish attempt in one statement (models/attempts.py).
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
$$;
