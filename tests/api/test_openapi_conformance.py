"""The OpenAPI document says what the API does: who may call each operation, every
error it can answer in the one JSON error shape, and 405 with `Allow` for a method a path does
not have; then schemathesis's own checks (`--checks all`: status codes, headers, bodies, auth
enforcement, unsupported methods, ...) find nothing, over every operation, with the company key
and the webhook secret, and with an OIDC token on the job webhooks of an app checking them the
production way.

The schemathesis run is its engine in this process, the same as `bench/conformance.py` runs
through the CLI with more examples (docs/conformance.md has those figures), and with the same
settings file, `bench/conformance.toml`.
"""

from __future__ import annotations

import asyncio
import threading
import tomllib
import uuid
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import schemathesis
from schemathesis.engine import Status, events, from_schema
from sqlalchemy.engine import URL
from sqlalchemy.ext.asyncio import async_sessionmaker

from deployments.emulator.oidc import OidcSigner, start_certs_server
from dispatch.app import create_app
from dispatch.openapi import (
    COMPANY_KEY,
    JOB_PATH_PREFIX,
    TASKS_OIDC,
    WEBHOOK_SECRET,
    WEBHOOK_SECRET_HEADER,
)
from tasks.cloud_tasks import InMemoryTaskQueue
from tests.support import clients
from tests.support.ports import free_port
from tests.support.servers import serve_in_thread
from tests.support.settings import make_settings
from tests.support.stacks import WEBHOOK_SECRET as TEST_WEBHOOK_SECRET, ApiServer, api_server
from tests.support.tenants import Tenant, make_company

CONFIG = Path(__file__).resolve().parents[2] / "bench" / "conformance.toml"
#: Examples per operation and phase: enough for every phase to reach every operation (the
#: coverage phase enumerates its cases whatever the number) in well under a minute.
EXAMPLES = 4
#: schemathesis sends hundreds of requests without a credential or with a spoiled one, all from
#: 127.0.0.1: the per-address limit on failed authentications would answer them 429.
LIFTED_LIMITS = {"UNAUTHENTICATED_REQUESTS_PER_MINUTE_PER_ADDRESS": 1_000_000}
OIDC_CALLER = "tendsocial-tasks@conformance.iam.gserviceaccount.com"
OIDC_AUDIENCE = "https://tendsocial-jobs.conformance.example"
OIDC_ISSUER = "https://accounts.google.com"
TOKEN_KEY = "hVLHEu9XQ1hHtcvhyh3GuYKrhhHoVqAx9BKw8IYEYDA="
PUBLIC = {"/healthz", "/readyz"}
JOBS = ("publish-post", "stage-media", "sync-analytics", "sync-analytics/platform")
#: A fixed id (the same in every xdist worker's collection).
SOME_ID = "3f0c2a4e-8d1b-4c6f-9a7e-5b2d1e0f4c3a"


def document(**environment: object) -> dict[str, Any]:
    """The app's OpenAPI document under these settings (no database needed to build it)."""
    settings = make_settings(
        WEBHOOK_SECRET=TEST_WEBHOOK_SECRET, TOKEN_ENCRYPTION_KEY=TOKEN_KEY, **environment
    )
    app = create_app(settings=settings, queue=InMemoryTaskQueue(), sessions=async_sessionmaker())
    return app.openapi()


def operations(spec: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    for path, methods in spec["paths"].items():
        for method, operation in methods.items():
            yield path, method.upper(), operation


# --------------------------------------------------------------------------- the document
def test_every_operation_names_who_may_call_it() -> None:
    spec = document()
    schemes = spec["components"]["securitySchemes"]
    for bearer in (COMPANY_KEY, TASKS_OIDC):
        assert (schemes[bearer]["type"], schemes[bearer]["scheme"]) == ("http", "bearer")
    secret = schemes[WEBHOOK_SECRET]
    assert (secret["type"], secret["in"], secret["name"]) == (
        "apiKey",
        "header",
        "X-Webhook-Secret",
    )
    seen: Counter[str] = Counter()
    for path, method, operation in operations(spec):
        if path in PUBLIC:
            assert "security" not in operation, path
            seen["public"] += 1
        elif path.startswith(JOB_PATH_PREFIX):
            assert operation["security"] == [{WEBHOOK_SECRET: []}], path  # WEBHOOK_AUTH=secret
            seen["jobs"] += 1
        else:
            assert operation["security"] == [{COMPANY_KEY: []}], f"{method} {path}"
            seen["company"] += 1
    assert seen == {"public": 2, "jobs": 4, "company": 15}


@pytest.mark.parametrize(
    ("mode", "required"),
    [
        ("oidc", [{TASKS_OIDC: []}]),
        ("secret", [{WEBHOOK_SECRET: []}]),
        ("both", [{TASKS_OIDC: [], WEBHOOK_SECRET: []}]),
    ],
)
def test_the_job_webhooks_name_the_proof_the_deployment_requires(
    mode: str, required: list[dict[str, list[str]]]
) -> None:
    oidc = {"TASKS_OIDC_SERVICE_ACCOUNT": OIDC_CALLER, "TASKS_OIDC_AUDIENCE": OIDC_AUDIENCE}
    spec = document(WEBHOOK_AUTH=mode, **oidc)
    jobs = [op for path, _, op in operations(spec) if path.startswith(JOB_PATH_PREFIX)]
    assert len(jobs) == 4
    assert all(op["security"] == required for op in jobs)


def test_a_service_without_the_webhooks_does_not_document_them() -> None:
    spec = document(WEBHOOKS_ENABLED=False)
    assert not [path for path in spec["paths"] if path.startswith(JOB_PATH_PREFIX)]
    assert "/api/social-posts/schedule" in spec["paths"]


def _schema_of(answer: dict[str, Any]) -> dict[str, Any]:
    return answer["content"]["application/json"]["schema"]


def test_every_error_answer_is_declared_in_the_json_error_shape() -> None:
    spec = document()
    assert "HTTPValidationError" not in str(spec)  # FastAPI's 422 is not what the API answers
    error = {"$ref": "#/components/schemas/ErrorResponse"}
    detail = spec["components"]["schemas"]["ErrorDetail"]
    assert detail["required"] == ["code", "message"]
    assert {"field", "problems"} <= set(detail["properties"])
    for path, method, operation in operations(spec):
        answers = operation["responses"]
        label = f"{method} {path}"
        for status, answer in answers.items():
            if int(status) >= 400 and path != "/readyz" and status != "502":
                assert _schema_of(answer) == error, (label, status)
        if path in PUBLIC:
            continue
        assert {"401", "503"} <= set(answers), label
        assert answers["503"]["headers"]["Retry-After"]["required"] is True, label
        if operation.get("requestBody"):
            assert {"400", "413", "422"} <= set(answers), label
        if "{" in path:
            assert "404" in answers, label
        if path.startswith(JOB_PATH_PREFIX):
            assert {"404", "502"} <= set(answers), label  # 502: Cloud Tasks retries, unthrottled
        else:
            assert "Retry-After" in answers["429"]["headers"], label
    schedule = spec["paths"]["/api/social-posts/schedule"]["post"]["responses"]
    assert {"200", "201", "409"} <= set(schedule)
    cancel = spec["paths"]["/api/social-posts/{post_id}/cancel"]["post"]["responses"]
    assert "409" in cancel and "422" not in cancel  # no input the schema could refuse
    readyz = spec["paths"]["/readyz"]["get"]["responses"]
    assert _schema_of(readyz["503"]) == {"$ref": "#/components/schemas/Readiness"}


# --------------------------------------------------------------------------- the app
@pytest.fixture(scope="module")
def conformance_api(database_url: URL) -> Iterator[ApiServer]:
    with api_server(**LIFTED_LIMITS) as server:
        yield server


@pytest.fixture(scope="module")
def conformance_company(conformance_api: ApiServer) -> Tenant:
    return make_company(name="Conformance", platforms=("x", "linkedin", "mastodon"))


@pytest.mark.parametrize(
    ("method", "path", "allowed"),
    [
        ("GET", "/api/social-posts/schedule", {"POST"}),
        ("GET", "/api/accounts/connect", {"POST"}),
        ("PUT", "/api/accounts/connect/callback", {"POST"}),
        ("DELETE", f"/api/social-posts/{SOME_ID}", {"GET"}),
        ("GET", f"/api/social-posts/{SOME_ID}/cancel", {"POST"}),
        ("POST", "/api/social-posts", {"GET"}),
        ("GET", "/api/jobs/publish-post", {"POST"}),
    ],
)
def test_a_wrong_method_answers_405_with_allow(
    conformance_api: ApiServer, conformance_company: Tenant, method: str, path: str, allowed: set
) -> None:
    with conformance_api.client(conformance_company.api_key) as http:
        answer = http.request(method, path)
    assert answer.status_code == 405, answer.text
    assert answer.json()["error"]["code"] == "method_not_allowed"
    assert answer.json()["error"]["message"].startswith(f"{method} is not allowed here")
    assert {m.strip() for m in answer.headers["allow"].split(",")} - {"HEAD"} == allowed


def test_ids_that_are_not_uuids_are_not_found(
    conformance_api: ApiServer, conformance_company: Tenant
) -> None:
    """`{post_id:uuid}`: a path segment that is no UUID names no post (404), rather than being
    a POST route's name read as an id (that read GET /schedule as a bad id: 422)."""
    with conformance_api.client(conformance_company.api_key) as http:
        for path in ("/api/social-posts/nope", "/api/accounts/nope", "/api/analytics/posts/x"):
            answer = http.get(path)
            assert answer.status_code == 404, (path, answer.text)
            assert answer.json()["error"]["code"] == "not_found"
        post = http.get(f"/api/social-posts/{uuid.uuid4()}")
        assert post.status_code == 404
        assert post.json()["error"] == {"code": "not_found", "message": "scheduled post not found"}


def test_the_secret_header_the_document_names_is_the_one_checked(
    conformance_api: ApiServer,
) -> None:
    spec = clients.get(f"{conformance_api.base_url}/openapi.json").json()
    header = spec["components"]["securitySchemes"][WEBHOOK_SECRET]["name"]
    assert header == WEBHOOK_SECRET_HEADER
    body = {"jobId": str(uuid.uuid4())}
    url = f"{conformance_api.base_url}/api/jobs/sync-analytics/platform"
    assert clients.post(url, json=body, headers={header: TEST_WEBHOOK_SECRET}).status_code == 404
    assert clients.post(url, json=body, headers={header: "x" * 40}).status_code == 401


# --------------------------------------------------------------------------- schemathesis
@contextmanager
def oidc_api(tmp: Path) -> Iterator[tuple[str, str]]:
    """The app checking its job callers the production way (`WEBHOOK_AUTH=oidc`), against the
    certificates of a signer of the test's own; yields its URL and a token for it."""
    signer = OidcSigner(key_dir=tmp, issuer=OIDC_ISSUER)
    loop = asyncio.new_event_loop()
    port = free_port()
    server = loop.run_until_complete(start_certs_server(signer, host="127.0.0.1", port=port))
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    settings = make_settings(
        WEBHOOK_URL="http://127.0.0.1:9",
        WEBHOOK_AUTH="oidc",
        TASKS_OIDC_SERVICE_ACCOUNT=OIDC_CALLER,
        TASKS_OIDC_AUDIENCE=OIDC_AUDIENCE,
        OIDC_CERTS_URL=f"http://127.0.0.1:{port}/certs",
        OIDC_ISSUERS=[OIDC_ISSUER],
        **LIFTED_LIMITS,
    )
    try:
        app = create_app(settings=settings, queue=InMemoryTaskQueue())
        with serve_in_thread(app) as base_url:
            yield base_url, signer.mint(audience=OIDC_AUDIENCE, email=OIDC_CALLER)
    finally:
        loop.call_soon_threadsafe(server.close)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)


def run_schemathesis(
    base_url: str, *, auth: dict[str, dict[str, str]], only: str | None = None
) -> tuple[list[str], Counter[tuple[str, int]], set[str]]:
    """schemathesis's engine (every phase, every check) over the app's document; the failures
    and errors it reports, and the answers' status codes by the credential sent."""
    settings: dict[str, Any] = {
        **tomllib.loads(CONFIG.read_text()),
        "seed": 1,
        "workers": 1,  # its workers are threads; CPython 3.11's ast.parse is not thread-safe
        "cache": {"enabled": False},
        "generation": {"max-examples": EXAMPLES, "database": "none", "deterministic": True},
        "auth": {"openapi": auth},
    }
    if only:
        # An `[[operations]]` entry selects its operation again, whatever `include` says.
        settings["operations"] = [
            entry for entry in settings["operations"] if f" {only}" in entry["include-name"]
        ]
    config = schemathesis.Config.from_dict(settings)
    schema = schemathesis.openapi.from_url(f"{base_url}/openapi.json", config=config)
    if only:
        schema = schema.include(path_regex=f"^{only}")
    labels = {f"{method} {path}" for path, method, _ in operations(schema.raw_schema)}
    problems: list[str] = []
    answers: Counter[tuple[str, int]] = Counter()
    tested: set[str] = set()
    for event in from_schema(schema).execute():
        if isinstance(event, events.NonFatalError | events.FatalError):
            problems.append(f"error: {getattr(event, 'label', '')} {event}")
        if isinstance(event, events.ScenarioFinished):
            recorder = event.recorder
            if event.status != Status.SKIP and recorder.label in labels:
                tested.add(recorder.label)
            for nodes in recorder.checks.values():
                for node in nodes:
                    if node.status == Status.FAILURE and node.failure_info is not None:
                        failure = node.failure_info.failure
                        problems.append(f"{recorder.label}: {failure.title}: {failure.message}")
            for interaction in recorder.interactions.values():
                if interaction.response is not None:
                    answers[
                        (_credential(interaction.request), interaction.response.status_code)
                    ] += 1
    return sorted(set(problems)), answers, tested


def _credential(request: Any) -> str:
    names = {name.lower() for name in request.headers}
    if WEBHOOK_SECRET_HEADER.lower() in names:
        return "secret"
    if "authorization" in names:
        return "oidc" if urlsplit(request.uri).path.startswith(JOB_PATH_PREFIX) else "key"
    return "none"


@pytest.mark.slow
def test_schemathesis_finds_no_conformance_failure(
    conformance_api: ApiServer, conformance_company: Tenant, tmp_path: Path
) -> None:
    auth = {
        COMPANY_KEY: {"bearer": conformance_company.api_key},
        WEBHOOK_SECRET: {"api_key": TEST_WEBHOOK_SECRET},
    }
    problems, answers, tested = run_schemathesis(conformance_api.base_url, auth=auth)
    assert problems == [], "\n".join(problems)
    assert len(tested) == 21, tested
    # Each credential reached the operations behind it, and was refused when spoiled.
    for credential in ("key", "secret"):
        assert sum(n for (c, s), n in answers.items() if c == credential and s < 300) > 0
    assert answers[("none", 401)] > 0

    with oidc_api(tmp_path) as (base_url, token):
        problems, answers, tested = run_schemathesis(
            base_url, auth={TASKS_OIDC: {"bearer": token}}, only=JOB_PATH_PREFIX
        )
    assert problems == [], "\n".join(problems)
    assert tested == {f"POST {JOB_PATH_PREFIX}{p}" for p in JOBS}, tested
    assert sum(n for (c, s), n in answers.items() if c == "oidc" and s < 300) > 0
    assert answers[("none", 401)] > 0
