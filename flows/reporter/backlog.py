"""Saying when the reporter falls behind: the backlog measured, a WARNING and the Prefect event
`tendsocial.reporter.behind` past either threshold, `tendsocial.reporter.caught-up` once below
half of both (Prefect's open-source automations match events, not labels: the "reporter behind"
automation in `deployments/prefect_views.py` notifies on them)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from flows.reporter.client import PrefectRuns
from models.outbox_shipping import Backlog, outbox_backlog

log = logging.getLogger(__name__)

#: Events the reporter emits (Prefect's open-source automations match events, not labels).
BEHIND_EVENT = "tendsocial.reporter.behind"
CAUGHT_UP_EVENT = "tendsocial.reporter.caught-up"


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
