"""What the OpenAPI document says beyond what FastAPI infers from the routes: who may call each
operation (its security schemes) and every error it can answer, in the API's one JSON error
shape (`dispatch/errors.py`).

Documentation only: nothing here runs on a request. The checks stay where they are
(`dispatch.auth.current_company_id`, `dispatch.caller_auth.verify_task_caller`); each route
declares in its decorator who calls it (`openapi_extra=COMPANY_CALLER` or `CLOUD_TASKS_CALLER`)
and what it can answer (`responses=errors(...)`). `install_openapi` adds the schemes to the
document, narrows the job webhooks' requirement to the deployment's `WEBHOOK_AUTH`, and leaves
the job webhooks out where they are switched off (`WEBHOOKS_ENABLED=false`: they answer 404
to everyone there).
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from pydantic import BaseModel

from dispatch.schemas import ErrorResponse
from models.settings import WebhookSettings

COMPANY_KEY = "companyKey"
TASKS_OIDC = "tasksOidc"
WEBHOOK_SECRET = "webhookSecret"
#: The header `dispatch.caller_auth` reads the shared secret from.
WEBHOOK_SECRET_HEADER = "X-Webhook-Secret"
JOB_PATH_PREFIX = "/api/jobs/"

SECURITY_SCHEMES: dict[str, dict[str, Any]] = {
    COMPANY_KEY: {
        "type": "http",
        "scheme": "bearer",
        "description": "The company's API key, `Authorization: Bearer ts_…` (`tendsocial "
        "company create`; stored hashed, shown once). Every company route answers 401 without "
        "a valid one.",
    },
    TASKS_OIDC: {
        "type": "http",
        "scheme": "bearer",
        "bearerFormat": "JWT",
        "description": "A Google-signed OIDC ID token, as Cloud Tasks and Cloud Scheduler send "
        "it: signed for the fixed audience `TASKS_OIDC_AUDIENCE` by one of the accepted service "
        "accounts (`TASKS_OIDC_SERVICE_ACCOUNT(S)`), email verified. Production "
        "(`WEBHOOK_AUTH=oidc`).",
    },
    WEBHOOK_SECRET: {
        "type": "apiKey",
        "in": "header",
        "name": WEBHOOK_SECRET_HEADER,
        "description": "The shared secret (`WEBHOOK_SECRET`, or `WEBHOOK_SECRET_PREVIOUS` "
        "during a rotation). The local stack (`WEBHOOK_AUTH=secret`).",
    },
}

#: A company route: the company API key.
COMPANY_CALLER: dict[str, Any] = {"security": [{COMPANY_KEY: []}]}
#: A job webhook: an OIDC token or the secret, whichever `WEBHOOK_AUTH` asks for (the document
#: served names the deployment's own: `install_openapi`).
CLOUD_TASKS_SECURITY: list[dict[str, list[str]]] = [{TASKS_OIDC: []}, {WEBHOOK_SECRET: []}]
CLOUD_TASKS_CALLER: dict[str, Any] = {"security": CLOUD_TASKS_SECURITY}

_RETRY_AFTER = {
    "description": "Seconds to wait before sending the request again.",
    "schema": {"type": "integer", "minimum": 1},
}

_DESCRIPTIONS = {
    400: "The body cannot be read as JSON text (invalid UTF-8, nested too deep) or its "
    "`Content-Length` is invalid.",
    401: "No valid credential (`code: unauthenticated`).",
    404: "No such object for this caller (another company's object is not found either).",
    409: "The request clashes with the object's current state (e.g. a target already published "
    "or publishing), or lost a race with a concurrent update (`conflict_retry`: send it again "
    "after `Retry-After`).",
    413: "The body is larger than the limit (`MAX_BODY_BYTES`, 1 MiB).",
    422: "The request is invalid: `code: validation_error` for what the schema refuses (every "
    "invalid input in `problems`), or a rule the schema cannot state (`unknown_account`, "
    "`scheduled_in_past`, `invalid_cursor`, ...), with `field` naming the input.",
    429: "Too many requests (`rate_limited`: this company's requests per second or minute, or "
    "too many failed authentications from the client's address) or a used-up quota "
    "(`quota_exceeded`).",
    502: "A transient failure (a platform, the task queue, a concurrent update: "
    "`conflict_retry`): Cloud Tasks retries the task on the queue's backoff.",
    503: "The service cannot answer now (the database unavailable or busy, a platform "
    "unavailable): send the request again after `Retry-After`.",
}

_SOMETIMES_RETRY_AFTER = {
    409: "Seconds to wait, with `conflict_retry`.",
    429: "Seconds to wait: always with `rate_limited`, and with `quota_exceeded` when room frees "
    "up at a known instant.",
    502: "Seconds to wait, with `conflict_retry`.",
}


def errors(*statuses: int, retry_after_always: bool = True) -> dict[int | str, dict[str, Any]]:
    """The `responses=` of a route: each status with the JSON error shape; `Retry-After` always
    on 503 and 429, sometimes on 409 and 502 (`conflict_retry`). `retry_after_always=False`
    where a 429 can come without it (the waiting-posts quota: room comes back as the company's
    posts publish, at no instant known in advance)."""
    answers: dict[int | str, dict[str, Any]] = {}
    for status in statuses:
        answer: dict[str, Any] = {"model": ErrorResponse, "description": _DESCRIPTIONS[status]}
        if status == 503 or (status == 429 and retry_after_always):
            answer["headers"] = {"Retry-After": {**_RETRY_AFTER, "required": True}}
        elif status in _SOMETIMES_RETRY_AFTER:
            answer["headers"] = {
                "Retry-After": {**_RETRY_AFTER, "description": _SOMETIMES_RETRY_AFTER[status]}
            }
        answers[status] = answer
    return answers


def retried(model: type[BaseModel]) -> dict[int | str, dict[str, Any]]:
    """A job webhook's 502: the attempt's outcome (`model`), to be retried, or the error shape
    (the follow-up task could not be created; `conflict_retry`)."""
    answer = errors(502)[502]
    return {502: {**answer, "model": model | ErrorResponse}}


def cloud_tasks_security(webhooks: WebhookSettings) -> list[dict[str, list[str]]]:
    """The proof the job webhooks of this deployment require: the OIDC token (`oidc`), the
    secret (`secret`), or both together (`both`, never either)."""
    match webhooks.webhook_auth:
        case "oidc":
            return [{TASKS_OIDC: []}]
        case "secret":
            return [{WEBHOOK_SECRET: []}]
        case _:
            return [{TASKS_OIDC: [], WEBHOOK_SECRET: []}]


def amend_document(document: dict[str, Any], *, webhooks: WebhookSettings) -> dict[str, Any]:
    """FastAPI's document with the security schemes, the job webhooks' requirement of this
    deployment, and without FastAPI's default 422 (`HTTPValidationError`, which is not what
    `dispatch/errors.py` answers: a route that can answer 422 declares it with `errors`).
    Changes `document` in place and returns it; doing it twice changes nothing more."""
    paths: dict[str, dict[str, Any]] = document["paths"]
    for path in list(paths):
        if path.startswith(JOB_PATH_PREFIX) and not webhooks.webhooks_enabled:
            del paths[path]
            continue
        for operation in paths[path].values():
            if operation.get("security") == CLOUD_TASKS_SECURITY:
                operation["security"] = cloud_tasks_security(webhooks)
            default_422 = operation.get("responses", {}).get("422", {})
            if "HTTPValidationError" in str(default_422.get("content")):
                del operation["responses"]["422"]
    components = document.setdefault("components", {})
    for name in ("HTTPValidationError", "ValidationError"):
        components.get("schemas", {}).pop(name, None)
    components["securitySchemes"] = SECURITY_SCHEMES
    return document


def install_openapi(app: FastAPI, *, webhooks: WebhookSettings) -> None:
    """Serve FastAPI's document, amended (`amend_document`), at /openapi.json; built once."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = amend_document(FastAPI.openapi(app), webhooks=webhooks)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
