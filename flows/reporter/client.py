"""The Prefect REST calls the reporter makes, over plain httpx: one keep-alive client, a short
timeout and no hidden retries (the loop's back-off is the retry policy, and status codes such as
201 vs 200 stay visible). Each call is counted, for the pace."""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import httpx

from flows.reporter.states import flow_name, idempotency_key
from models.settings import ReporterSettings
from models.tables import RunRecord

#: The resource the reporter's own events are about (automations match on it).
REPORTER_RESOURCE_ID = "tendsocial.reporter"


def prefect_authorization(settings: ReporterSettings) -> dict[str, str]:
    """The `Authorization` header Prefect's own client sends: `Basic base64(auth string)` for a
    self-hosted server protected by `PREFECT_SERVER_API_AUTH_STRING`, else `Bearer <key>` for
    Prefect Cloud; the auth string wins when both are set, as in Prefect 3.9.1's
    `PrefectClient.__init__` (prefect/client/orchestration/__init__.py) and its server's check
    (prefect/server/api/server.py, `token_validation`)."""
    if settings.prefect_api_auth_string:
        token = base64.b64encode(settings.prefect_api_auth_string.encode()).decode()
        return {"Authorization": f"Basic {token}"}
    if settings.prefect_api_key:
        return {"Authorization": f"Bearer {settings.prefect_api_key}"}
    return {}


def prefect_api_url(settings: ReporterSettings) -> str:
    """`PREFECT_API_URL` without its trailing slash; a missing one is an error at once, before
    any thread or connection is started."""
    if not settings.prefect_api_url:
        raise ValueError("PREFECT_API_URL is not set: the reporter has nowhere to ship runs")
    return settings.prefect_api_url.rstrip("/")


def prefect_http_client(settings: ReporterSettings) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        base_url=prefect_api_url(settings),
        timeout=settings.request_timeout_seconds,
        headers=prefect_authorization(settings),
    )


def is_rejection(error: Exception) -> bool:
    """Prefect refused the record itself (retrying cannot help), not a transient failure."""
    if not isinstance(error, httpx.HTTPStatusError):
        return False
    code = error.response.status_code
    return 400 <= code < 500 and code not in (408, 409, 429)


class PrefectRuns:
    """The few Prefect REST calls the reporter makes (`flows/reporter/__init__.py` says how many
    per run); `requests` counts them, for the pace. What to call for a run is decided by the
    shipping (`flows/reporter/shipping.py`), not here."""

    def __init__(self, http: httpx.AsyncClient) -> None:
        self.http = http
        self.requests = 0
        self._flow_ids: dict[str, str] = {}

    async def _call(self, method: str, path: str, json: Any = None) -> httpx.Response:
        self.requests += 1
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
        state: dict[str, Any],
        parent_task_run_id: str | None = None,
    ) -> tuple[dict[str, Any], bool]:
        """Create the record's flow run in `state` (Prefect stamps it now), or get the one an
        earlier attempt created; True when created now."""
        body: dict[str, Any] = {
            "flow_id": await self.flow_id(flow_name(record)),
            "name": record.run_name,
            "parameters": record.parameters,
            "tags": list(record.tags),
            "labels": labels,
            "idempotency_key": idempotency_key(record.run_id),
            "state": state,
        }
        if parent_task_run_id:
            body["parent_task_run_id"] = parent_task_run_id
        response = await self._call("POST", "/flow_runs/", body)
        return response.json(), response.status_code == 201

    async def link_task_run(
        self, *, parent_flow_run_id: str, record: RunRecord, state: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        """The task run in the parent's flow run that stands for this child run (Prefect links
        a child flow run to its parent through `parent_task_run_id`; the parent's page then
        lists it). Idempotent: (flow run, task key, dynamic key) is unique on the server, which
        then returns the existing task run (in whatever state it is)."""
        body: dict[str, Any] = {
            "flow_run_id": parent_flow_run_id,
            "task_key": f"{flow_name(record)}-child",
            "dynamic_key": str(record.run_id),
            "name": record.run_name,
            "tags": list(record.tags),
            "state": state or {"type": "RUNNING"},
        }
        return (await self._call("POST", "/task_runs/", body)).json()

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

    async def create_table_artifact(
        self, *, key: str, description: str, rows: Sequence[dict[str, Any]], flow_run_id: str
    ) -> dict[str, Any]:
        """`POST /artifacts/` (`ArtifactCreate` in prefect/server/schemas/actions.py, route in
        prefect/server/api/artifacts.py) with a table: `data` is the rows as a JSON string, as
        Prefect's own client sends a table (`TableArtifact.format` in prefect/artifacts.py),
        which is what the UI's table view reads."""
        body = {
            "key": key,
            "type": "table",
            "description": description,
            "data": json.dumps(list(rows)),
            "flow_run_id": flow_run_id,
        }
        return (await self._call("POST", "/artifacts/", body)).json()

    async def existing_artifacts(self, keys: Sequence[str]) -> dict[str, str]:
        """Key -> id of the artifacts of these keys Prefect has (`POST /artifacts/filter`): a
        key is not unique in Prefect (each create adds a version), so a shipment looks before
        creating; one request for a whole batch."""
        if not keys:
            return {}
        body = {"artifacts": {"key": {"any_": list(keys)}}, "limit": len(keys)}
        found = (await self._call("POST", "/artifacts/filter", body)).json()
        return {a["key"]: a["id"] for a in found}

    async def emit_event(self, event: str, *, payload: dict[str, Any]) -> None:
        """One Prefect event about the reporter itself (`POST /events`, in the open-source
        server too: `prefect/server/api/events.py`), for automations to match."""
        body = {
            "id": str(uuid.uuid4()),
            "occurred": datetime.now(UTC).isoformat(),
            "event": event,
            "resource": {
                "prefect.resource.id": REPORTER_RESOURCE_ID,
                "prefect.resource.name": "tendsocial reporter",
            },
            "payload": payload,
        }
        await self._call("POST", "/events", [body])
