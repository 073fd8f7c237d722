"""What the data team looks at in the Prefect UI, as code: saved filters and automations.

`apply_views(api_url)` creates or updates them on a Prefect server, by name, so running it again
(after a deploy, on a new server) converges instead of piling up copies. `tendsocial flows views
apply` runs it against the server of `PREFECT_API_URL` (beside `tendsocial dev`: the stack's).

Saved filters (`PUT /saved_searches/`, an upsert by name in Prefect 3.9.1:
`prefect/server/api/saved_searches.py`). Their `filters` are what the UI itself stores and reads
back (prefect-ui-library, bundled in `prefect/server/ui/assets/index-*.js`, `mapSavedSearchFilter`):
one entry per property among `flow` (flow ids), `tag` (all of these tags), `state` (state names),
`deployment`, `workPool`, `workQueue` and `range` (a date-range select value; `{"type": "span",
"seconds": -N}` is "the last N seconds"). The UI has no group-by, so "by platform" is one filter
per platform, "by company" one per company (given by the caller: the CLI reads them from the
database), and "per window" one per 6-hour sync window of the last day, rewritten on each apply
(the filters of windows that left that day are deleted). The failure filters and the alerts
select Failed (and Crashed) runs only, which is what someone has to act on: a sync child whose
metrics are not available by design ends in a completed state named "Not available", a run whose
work another run took over in a cancelled one named "Superseded" (docs/prefect.md, "Red means
act"); "not available by design" lists the former, to answer "why no numbers for X?".

Automations (`/automations/`, `prefect/server/events/schemas/automations.py`). Prefect 3.9.1's
open-source server has event triggers only (reactive and proactive, compound, sequence; metric
triggers are Prefect Cloud's), and they see what flow-run *events* carry: the state name, the
flow, the tags; not the run's labels. Hence:
- "publish failed for good": reactive, on `prefect.flow-run.Failed` of the `publish-post` flow
  or of the `stage-media` flow (a media staging failed its target ahead of the instant).
  Only a final failure reaches Failed: a retry is `AwaitingRetry` (a Scheduled state), a crashed
  attempt `Crashed` (its target is released and retried).
- "run left open (reporter behind)": proactive, for each `publish-post` or
  `sync-platform-analytics` run that entered Running, expect a final state within
  `OPEN_RUN_LIMIT`. A run's start ships with its claim and its end with its outcome, and an
  attempt is bounded by the platform call timeouts (seconds), so a run open that long means its
  end record is stuck in the outbox: the reporter stopped, Prefect refuses its records, or the
  process died mid-attempt. What this cannot see is a reporter that ships everything, only late:
  the lag is a label (`tendsocial.timing: after-the-fact`), and labels are not on the events.
- "reporter behind": reactive, on the reporter's own event `tendsocial.reporter.behind`
  (`flows/reporter/backlog.py` emits it with `POST /api/events`, which the open-source server has:
  `prefect/server/api/events.py`, when its oldest unshipped record is older than
  `REPORTER_BEHIND_SECONDS` or more than `REPORTER_BEHIND_RECORDS` wait; its payload carries the
  backlog). `tendsocial.reporter.caught-up` follows when the backlog is small again; it is in the
  Event Feed, no automation notifies on it.
- "accounts expiring": reactive, on `tendsocial.accounts.expiring`, which the daily
  `refresh-expiring-tokens` flow emits (`flows/prefect_flows.py`) when accounts expire within
  `tasks.accounts.EXPIRY_WARNING` and nothing will renew them (no refresh token: LinkedIn apps
  outside its partner programme; a platform without refresh). Its payload names each (platform,
  handle, account id, company id, expiry; never a token); the notification lists them daily
  until they are reconnected.

Where the notifications go. A notification action needs a block. With `webhook_url`, a `webhook`
block named `tendsocial-alerts` is saved (Prefect's own `prefect.blocks.webhook.Webhook`) and the
automations `call-webhook` it with a JSON body `{"text": ...}`: a Slack incoming-webhook URL takes
that body as is, and so does any relay to email or chat that accepts JSON. Without one, the action
is `do-nothing`: each firing is still recorded as `prefect.automation.triggered` and
`prefect.automation.action.executed` events, in the UI's Event Feed and on the automation's page,
and nothing outside the machine is needed.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

from flows.reporter import BEHIND_EVENT, FINAL_STATE_NAMES, REPORTER_RESOURCE_ID
from models.statuses import Platform
from tasks.accounts import EXPIRY_WARNING
from tasks.token_refresh import ACCOUNTS_RESOURCE_ID, EXPIRING_EVENT

PUBLISH_FLOW = "publish-post"
#: A media staging: when it fails, its target failed for good, ahead of the instant.
STAGE_FLOW = "stage-media"
SYNC_FLOW = "sync-analytics"
SYNC_CHILD_FLOW = "sync-platform-analytics"

#: Every view this module owns starts with this; nothing else on the server is touched.
VIEW_PREFIX = "TendSocial · "
WINDOW_VIEW_PREFIX = f"{VIEW_PREFIX}sync coverage · window "
#: How far back the failure filters look (the UI's range, relative to now).
FAILURES_SPAN = timedelta(days=7)
#: The analytics cadence (README: every 6 hours on the hour, UTC) and how many windows get a filter.
SYNC_WINDOW = timedelta(hours=6)
SYNC_WINDOWS_SHOWN = 4
#: A publish or sync-child run still open after this has an end the reporter did not ship.
OPEN_RUN_LIMIT = timedelta(minutes=10)
ALERT_BLOCK_NAME = "tendsocial-alerts"

#: A flow run's state change is the event `prefect.flow-run.<state name>` (Prefect 3.9.1,
#: `prefect/server/models/events.py`, `state_change_event`): one per final state name the reporter
#: sets, "Not available" and "Superseded" included, or such runs would read as left open.
_FINAL_STATE_EVENTS = tuple(f"prefect.flow-run.{name}" for name in FINAL_STATE_NAMES)
#: What someone has to act on: red (Failed, Crashed). "Not available" is a completed state and
#: "Superseded" a cancelled one, so no failure filter or alert ever lists them.
ACTIONABLE_STATES = ("Failed", "Crashed")


@dataclass(frozen=True)
class SavedView:
    """One saved filter of the flow-runs page."""

    name: str
    flows: tuple[str, ...]
    tags: tuple[str, ...] = ()
    states: tuple[str, ...] = ()
    span: timedelta = FAILURES_SPAN

    def filters(self, flow_ids: Mapping[str, str]) -> list[dict[str, Any]]:
        """The `filters` the UI stores for this view (see the module docstring)."""

        def entry(prop: str, value: Any) -> dict[str, Any]:
            return {
                "object": "flowRun",
                "property": prop,
                "type": "",
                "operation": "",
                "value": value,
            }

        entries = [entry("flow", [flow_ids[name] for name in self.flows])]
        if self.tags:
            entries.append(entry("tag", list(self.tags)))
        if self.states:
            entries.append(entry("state", list(self.states)))
        span = {"type": "span", "seconds": -int(self.span.total_seconds())}
        entries.append(entry("range", span))
        return entries


def sync_windows(now: datetime, *, count: int = SYNC_WINDOWS_SHOWN) -> list[datetime]:
    """The starts of the `count` latest sync windows (the current one first)."""
    midnight = now.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    current = midnight + SYNC_WINDOW * ((now.astimezone(UTC) - midnight) // SYNC_WINDOW)
    return [current - SYNC_WINDOW * n for n in range(count)]


def saved_views(*, now: datetime, companies: Mapping[str, str] | None = None) -> list[SavedView]:
    """The filters: failed publishes (all, per platform, per company), failed syncs (what
    someone must act on), syncs whose metrics are not available by design (the last day: why
    a platform shows no numbers, nothing to act on), sync coverage (the last day, and per
    window). `companies` maps company id (the `company:` tag) to a display name."""
    failed = ("Failed",)
    views = [
        SavedView(f"{VIEW_PREFIX}failed publishes", flows=(PUBLISH_FLOW, STAGE_FLOW), states=failed)
    ]
    views += [
        SavedView(
            f"{VIEW_PREFIX}failed publishes · platform:{platform.value}",
            flows=(PUBLISH_FLOW, STAGE_FLOW),
            tags=(f"platform:{platform.value}",),
            states=failed,
        )
        for platform in Platform
    ]
    views += [
        SavedView(
            f"{VIEW_PREFIX}failed publishes · company:{name} ({company_id[:8]})",
            flows=(PUBLISH_FLOW, STAGE_FLOW),
            tags=(f"company:{company_id}",),
            states=failed,
        )
        for company_id, name in sorted((companies or {}).items(), key=lambda item: item[1])
    ]
    views.append(
        SavedView(f"{VIEW_PREFIX}failed syncs", flows=(SYNC_CHILD_FLOW,), states=ACTIONABLE_STATES)
    )
    views.append(
        SavedView(
            f"{VIEW_PREFIX}sync · not available by design",
            flows=(SYNC_CHILD_FLOW,),
            states=("Not available",),
            span=timedelta(days=1),
        )
    )
    views.append(
        SavedView(
            f"{VIEW_PREFIX}sync coverage · last 24 h",
            flows=(SYNC_FLOW, SYNC_CHILD_FLOW),
            span=timedelta(days=1),
        )
    )
    views += [
        SavedView(
            f"{WINDOW_VIEW_PREFIX}{window:%Y-%m-%dT%H:%MZ}",
            flows=(SYNC_CHILD_FLOW,),
            tags=(f"sync-window:{window:%Y-%m-%dT%H:%MZ}",),
            span=timedelta(days=2),
        )
        for window in sync_windows(now)
    ]
    return views


def _flow_match(*flows: str) -> dict[str, Any]:
    return {"prefect.resource.role": "flow", "prefect.resource.name": list(flows)}


def _notify(block_id: str | None, text: str) -> list[dict[str, Any]]:
    """The automation's actions: a webhook call with `{"text": ...}` (Jinja, rendered by Prefect
    with the triggering `flow_run` and `event`), or nothing but the recorded firing."""
    if block_id is None:
        return [{"type": "do-nothing"}]
    payload = '{"text": {{ (' + text + ") | tojson }}}"
    return [{"type": "call-webhook", "block_document_id": block_id, "payload": payload}]


def automation_definitions(*, webhook_block_id: str | None = None) -> list[dict[str, Any]]:
    """The automations as `AutomationCreate` bodies (see the module docstring)."""
    return [
        {
            "name": f"{VIEW_PREFIX}publish failed for good",
            "description": "A publish-post run entered Failed: the target is failed, no retry "
            "is left; or a stage-media run did: the target failed ahead of its instant (its "
            "media cannot be posted). Its tags say the company, platform and post.",
            "enabled": True,
            "tags": ["tendsocial"],
            "trigger": {
                "type": "event",
                "posture": "Reactive",
                "expect": ["prefect.flow-run.Failed"],
                "match": {"prefect.resource.id": "prefect.flow-run.*"},
                "match_related": _flow_match(PUBLISH_FLOW, STAGE_FLOW),
                "threshold": 1,
                "within": 0,
            },
            "actions": _notify(
                webhook_block_id,
                "'TendSocial: publish ' ~ flow_run.name ~ ' failed for good ('"
                " ~ (flow_run.tags | join(', ')) ~ '): ' ~ (flow_run.state.message or '')",
            ),
        },
        {
            "name": f"{VIEW_PREFIX}run left open (reporter behind)",
            "description": "A publish-post or sync-platform-analytics run entered Running and "
            f"reached no final state within {int(OPEN_RUN_LIMIT.total_seconds() // 60)} min: "
            "its end record is stuck in the outbox (reporter stopped, Prefect refusing its "
            "records, or the attempt's process died).",
            "enabled": True,
            "tags": ["tendsocial"],
            "trigger": {
                "type": "event",
                "posture": "Proactive",
                "after": ["prefect.flow-run.Running"],
                "expect": list(_FINAL_STATE_EVENTS),
                "for_each": ["prefect.resource.id"],
                "match": {"prefect.resource.id": "prefect.flow-run.*"},
                "match_related": _flow_match(PUBLISH_FLOW, SYNC_CHILD_FLOW),
                "threshold": 1,
                "within": int(OPEN_RUN_LIMIT.total_seconds()),
            },
            "actions": _notify(
                webhook_block_id,
                "'TendSocial: run ' ~ flow_run.name ~ ' still open after "
                f"{int(OPEN_RUN_LIMIT.total_seconds() // 60)} min: is the reporter running?'",
            ),
        },
        {
            "name": f"{VIEW_PREFIX}reporter behind",
            "description": "The reporter's backlog passed its threshold (oldest unshipped run "
            "record older than REPORTER_BEHIND_SECONDS, or more than REPORTER_BEHIND_RECORDS "
            "waiting): Prefect shows runs late, labelled after-the-fact, until it catches up "
            "(event tendsocial.reporter.caught-up).",
            "enabled": True,
            "tags": ["tendsocial"],
            "trigger": {
                "type": "event",
                "posture": "Reactive",
                "expect": [BEHIND_EVENT],
                "match": {"prefect.resource.id": REPORTER_RESOURCE_ID},
                "threshold": 1,
                "within": 0,
            },
            "actions": _notify(
                webhook_block_id,
                "'TendSocial: the Prefect reporter is behind: ' ~ "
                "event.payload.backlog_records ~ ' run records unshipped, the oldest ' ~ "
                "event.payload.oldest_unshipped_seconds ~ ' s old'",
            ),
        },
        {
            "name": f"{VIEW_PREFIX}accounts expiring",
            "description": "The daily token refresh found accounts whose token expires within "
            f"{EXPIRY_WARNING.days} days and that nothing will renew (no refresh token, or a "
            "platform without refresh): their posts fail once it expires unless they are "
            "reconnected. The event's payload names them (platform, handle, account id, company "
            "id, expiry).",
            "enabled": True,
            "tags": ["tendsocial"],
            "trigger": {
                "type": "event",
                "posture": "Reactive",
                "expect": [EXPIRING_EVENT],
                "match": {"prefect.resource.id": ACCOUNTS_RESOURCE_ID},
                "threshold": 1,
                "within": 0,
            },
            "actions": _notify(
                webhook_block_id,
                "'TendSocial: ' ~ event.payload.count ~ ' account(s) expire within ' ~ "
                "event.payload.warning_days ~ ' days and will not be renewed: ' ~ "
                "(event.payload.descriptions | join('; '))",
            ),
        },
    ]


@dataclass
class AppliedViews:
    """What `apply_views` did, by name."""

    saved_searches: list[str] = field(default_factory=list)
    automations: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    webhook_block_id: str | None = None


def save_webhook_block(api_url: str, url: str) -> str:
    """Save (or overwrite) the `tendsocial-alerts` webhook block; returns its document id.

    Prefect's own block class, so the document has exactly the schema the server's
    `call-webhook` action loads (`prefect/server/events/actions.py`, `CallWebhook`)."""
    from prefect.blocks.webhook import Webhook
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings({PREFECT_API_URL: api_url}):
        block_id = Webhook(method="POST", url=url).save(ALERT_BLOCK_NAME, overwrite=True)
    return str(block_id)


def apply_views(
    api_url: str,
    *,
    companies: Mapping[str, str] | None = None,
    webhook_url: str | None = None,
    now: datetime | None = None,
) -> AppliedViews:
    """Create or update the saved filters and automations on the Prefect server at `api_url`
    (e.g. `http://127.0.0.1:4200/api`), by name; idempotent."""
    applied = AppliedViews()
    if webhook_url:
        applied.webhook_block_id = save_webhook_block(api_url, webhook_url)
    with httpx.Client(base_url=api_url.rstrip("/"), timeout=10, headers=_auth()) as http:
        views = saved_views(now=now or datetime.now(UTC), companies=companies)
        flow_ids = _flow_ids(http, {name for view in views for name in view.flows})
        for view in views:
            _ok(
                http.put(
                    "/saved_searches/", json={"name": view.name, "filters": view.filters(flow_ids)}
                )
            )
            applied.saved_searches.append(view.name)
        wanted = set(applied.saved_searches)
        for search in _all(http, "/saved_searches/filter"):
            if search["name"].startswith(WINDOW_VIEW_PREFIX) and search["name"] not in wanted:
                _ok(http.delete(f"/saved_searches/{search['id']}"))
                applied.removed.append(search["name"])
        existing = _automations_by_name(http)
        for body in automation_definitions(webhook_block_id=applied.webhook_block_id):
            same_name = existing.get(body["name"], [])
            if same_name:
                _ok(http.put(f"/automations/{same_name[0]}", json=body))
                for extra in same_name[1:]:  # a copy made by hand or by a crashed apply
                    _ok(http.delete(f"/automations/{extra}"))
            else:
                _ok(http.post("/automations/", json=body))
            applied.automations.append(body["name"])
    return applied


def _auth() -> dict[str, str]:
    """What Prefect's own client sends for `PREFECT_API_AUTH_STRING` (the local stack's server
    asks for it: `deployments/prefect_server.py`)."""
    from prefect.settings import get_current_settings

    from deployments.prefect_server import authorization_header

    auth_string = get_current_settings().api.auth_string
    return authorization_header(auth_string.get_secret_value() if auth_string else None)


def _ok(response: httpx.Response) -> httpx.Response:
    if response.is_error:
        raise RuntimeError(
            f"Prefect answered {response.status_code} to {response.request.method} "
            f"{response.request.url}: {response.text[:500]}"
        )
    return response


def _flow_ids(http: httpx.Client, names: Iterable[str]) -> dict[str, str]:
    """Flow ids by name; `POST /flows/` returns the existing flow or creates it (as the reporter
    does), so the filters work before the first run of a flow."""
    return {name: _ok(http.post("/flows/", json={"name": name})).json()["id"] for name in names}


def _all(http: httpx.Client, path: str, body: Mapping[str, Any] | None = None) -> list[Any]:
    items: list[Any] = []
    while True:
        page = _ok(
            http.post(path, json={**(body or {}), "limit": 200, "offset": len(items)})
        ).json()
        items += page
        if len(page) < 200:
            return items


def _automations_by_name(http: httpx.Client) -> dict[str, list[str]]:
    """Our automations' ids by name, oldest first."""
    by_name: dict[str, list[str]] = {}
    found = _all(http, "/automations/filter", {"sort": "CREATED_DESC"})
    for automation in reversed(found):
        if automation["name"].startswith(VIEW_PREFIX):
            by_name.setdefault(automation["name"], []).append(automation["id"])
    return by_name


def describe(applied: AppliedViews) -> Sequence[str]:
    """Lines for the CLI."""
    lines = [f"saved filter: {name}" for name in applied.saved_searches]
    lines += [f"automation: {name}" for name in applied.automations]
    lines += [f"removed: {name}" for name in applied.removed]
    target = "webhook block " + ALERT_BLOCK_NAME if applied.webhook_block_id else "event feed only"
    lines.append(f"notifications: {target}")
    return lines
