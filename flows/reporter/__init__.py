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

Artifacts. A run's table artifacts (a sync's numbers, the day's publish summary) wait in their
own outbox (`run_artifacts`) until the run's flow run exists, then go out after the batch's runs
(`POST /artifacts/`, one `POST /artifacts/filter` per batch first: a key already in Prefect is
not created again, so a crash before marking shipped never duplicates one).

Behind. Every `behind_check_seconds` the reporter measures its backlog (unshipped records, age of
the oldest); past `behind_records` or `behind_seconds` it logs a WARNING and emits the Prefect event
`tendsocial.reporter.behind` (payload: the backlog), and `tendsocial.reporter.caught-up` once the
backlog is below half of both. Prefect's open-source automations match events, not labels: the
automation "reporter behind" (`deployments/prefect_views.py`) notifies on it.

Client: plain httpx against `PREFECT_API_URL` (`PREFECT_API_AUTH_STRING` as basic auth for a
self-hosted server, `PREFECT_API_KEY` as bearer for Prefect Cloud), a short timeout and no
hidden retries: the loop's back-off is the retry policy, and status codes (201 vs 200) are
visible.

Where each part is: `states` (the pipeline's words in Prefect's: flows, states, labels, log
lines), `client` (the Prefect REST calls), `shipping` (which calls a run's records take, and a
batch from claim to marked shipped), `pacing` (LISTEN and the pace), `backlog` (behind and
caught up), `runner` (the loop, the drain, the background thread). The names other modules use
are importable from here.
"""

from flows.reporter.backlog import (
    BEHIND_EVENT,
    CAUGHT_UP_EVENT,
    BacklogWatch,
    check_backlog,
)
from flows.reporter.client import (
    REPORTER_RESOURCE_ID,
    PrefectRuns,
    is_rejection,
    prefect_authorization,
    prefect_http_client,
)
from flows.reporter.pacing import Inflow, pace_now
from flows.reporter.runner import ReporterThread, drain, run_reporter, start_reporter_thread
from flows.reporter.shipping import (
    ArtifactShipper,
    BatchResult,
    RunShipper,
    Shipment,
    ship_batch,
    shipments,
)
from flows.reporter.states import (
    AFTER_THE_FACT,
    FINAL_STATE_NAMES,
    FLOW_NAMES,
    STATE_NAMES,
    STATE_TYPES,
    final_state,
    flow_name,
    idempotency_key,
)

__all__ = [
    "AFTER_THE_FACT",
    "BEHIND_EVENT",
    "CAUGHT_UP_EVENT",
    "FINAL_STATE_NAMES",
    "FLOW_NAMES",
    "REPORTER_RESOURCE_ID",
    "STATE_NAMES",
    "STATE_TYPES",
    "ArtifactShipper",
    "BacklogWatch",
    "BatchResult",
    "Inflow",
    "PrefectRuns",
    "ReporterThread",
    "RunShipper",
    "Shipment",
    "check_backlog",
    "drain",
    "final_state",
    "flow_name",
    "idempotency_key",
    "is_rejection",
    "pace_now",
    "prefect_authorization",
    "prefect_http_client",
    "run_reporter",
    "ship_batch",
    "shipments",
    "start_reporter_thread",
]
