"""Every status the database stores, as `StrEnum`s: one source for the tables' CHECK constraints,
the queries, the units of work and the API schemas (members compare equal to their strings, so a
value read back from the database needs no conversion)."""

from __future__ import annotations

from enum import StrEnum


class Platform(StrEnum):
    LINKEDIN = "linkedin"
    X = "x"
    INSTAGRAM = "instagram"
    FACEBOOK = "facebook"
    THREADS = "threads"
    BLUESKY = "bluesky"
    MASTODON = "mastodon"


class PostStatus(StrEnum):
    """A post's status, rolled up from its targets (`models.posts.roll_up_post_status`)."""

    PENDING = "pending"
    PROCESSING = "processing"
    PUBLISHED = "published"
    FAILED = "failed"
    CANCELLED = "cancelled"


class TargetStatus(StrEnum):
    """One (post, platform, account) target's status."""

    PENDING = "pending"
    PROCESSING = "processing"
    SUCCESS = "success"
    FAILED = "failed"
    RETRY = "retry"
    CANCELLED = "cancelled"


#: Target statuses after which nothing will happen to the target by itself.
SETTLED_TARGET_STATUSES = (TargetStatus.SUCCESS, TargetStatus.FAILED, TargetStatus.CANCELLED)
#: Target statuses a queued attempt may still pick up (and a cancel may still stop).
OPEN_TARGET_STATUSES = (TargetStatus.PENDING, TargetStatus.RETRY)
#: A target in one of these cannot be cancelled any more.
UNCANCELLABLE_TARGET_STATUSES = (TargetStatus.SUCCESS, TargetStatus.PROCESSING)


class AccountStatus(StrEnum):
    ACTIVE = "active"
    NEEDS_RECONNECT = "needs_reconnect"


class SyncJobStatus(StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"


#: Child sync-job statuses after which nothing will happen to the job by itself.
SETTLED_SYNC_JOB_STATUSES = (SyncJobStatus.COMPLETED, SyncJobStatus.FAILED)


class AttemptOutcome(StrEnum):
    """How a recorded attempt ended, in the pipeline's own words; the reporter alone translates
    it into a Prefect state (`flows/reporter/`)."""

    SUCCEEDED = "succeeded"
    FAILED = "failed"
    #: Ended in an unexpected error; the target was released for the next delivery.
    CRASHED = "crashed"
    CANCELLED = "cancelled"
    #: Transient failure; the next attempt is due at the record's `next_run_at` (or the queue's).
    RETRYING = "retrying"
    #: Nothing to do by design: the platform gives no metrics for this kind of account (a
    #: permission the app cannot get, no metrics for the account kind). Nobody can act on it.
    NOT_AVAILABLE = "not-available"
    #: Another run owns the work (this one's claim ran out and was taken over): that run
    #: finishes it, nobody acts on this one.
    SUPERSEDED = "superseded"


class AttemptKind(StrEnum):
    """What a run record is the record of."""

    PUBLISH = "publish"
    SYNC = "sync"
    SYNC_PLATFORM = "sync-platform"
    SWEEP = "sweep"
    TOKEN_REFRESH = "token-refresh"
    #: A target's media uploaded and processed ahead of its instant (`tasks/staging.py`).
    STAGE_MEDIA = "stage-media"


class RunPhase(StrEnum):
    """Which instant of a run a run record ships: its start (committed with the claim, so
    Prefect's own start time is the real one) or its end (committed with the outcome)."""

    START = "start"
    END = "end"


def check_in(column: str, values: type[StrEnum] | tuple[StrEnum, ...]) -> str:
    """The SQL of a CHECK constraint keeping `column` to the enum's values."""
    return f"{column} IN ({', '.join(repr(str(v)) for v in values)})"
