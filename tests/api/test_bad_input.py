"""Property-based input over every operation of /openapi.json (schemathesis), with every
credential each operation accepts and the ones it must refuse.

For each operation and credential:

- **its own credential** (a company key on the company API, the webhook secret on
  `/api/jobs/*`), generated data valid and invalid: never a 5xx, every 4xx carries the JSON
  error shape, and a rejected request changes nothing;
- **no credential**, **a wrong one** (a made-up key, a wrong secret) and, on the webhooks, **a
  company key**: exactly 401 with the JSON error shape, and nothing changes;
- **the other tenant's key** on the company API, with the path's ids pointing at the fuzzed
  company's real post, account and sync job: never a 5xx, and the fuzzed company's data stays
  exactly as it was whatever the answer.

"Nothing changes" is a hash of everything the fuzzed company owns plus the pipeline's global
tables (sync jobs, run records, every post and target). Deterministic (`derandomize`) and
bounded: a quick share in the fast lane, the rest under the `faults` marker.
"""

from __future__ import annotations

import hashlib
import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode
from sqlalchemy import text
from sqlalchemy.engine import Engine
from sqlalchemy.ext.asyncio import async_sessionmaker

from dispatch.app import create_app
from tasks.cloud_tasks import InMemoryTaskQueue
from tests.support.settings import make_settings
from tests.support.stacks import WEBHOOK_SECRET, ApiServer, api_server
from tests.support.tenants import Tenant, fingerprint, make_company, schedule_body

#: Examples per run (env `FUZZ_EXAMPLES`): a quick share in the fast lane, the rest under the
#: `faults` marker, so the full suite tries as many as ever. Refused credentials need fewer:
#: the answer must not depend on the data at all. Negative examples take fewer too: each one
#: costs schemathesis a fresh canonicalisation of the body's schema (about 0.3 s for the
#: schedule body, whose long `maxLength` patterns make every regex expensive to build).
EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "40"))
QUICK = min(10, EXAMPLES)
QUICK_NEGATIVE = min(4, EXAMPLES)
QUICK_REFUSED = min(4, EXAMPLES)

OWN, NONE, WRONG, COMPANY_KEY, OTHER_TENANT = "own", "none", "wrong", "company-key", "other"
#: Credentials that must be refused with 401 whatever the data.
REFUSED = (NONE, WRONG, COMPANY_KEY)


@dataclass(frozen=True)
class Fuzzed:
    """The fuzzed company, one real post of it, and a second company (the other tenant)."""

    company: Tenant
    other: Tenant
    post_id: str
    sync_job_id: str


@pytest.fixture(scope="module")
def fuzz_api(database_url: object) -> Iterator[ApiServer]:
    """An API server of this module's own: the webhooks fuzzed here enqueue sync tasks, which
    must not land in the queue other modules' tests look into. Refused credentials are fuzzed
    by the hundred from 127.0.0.1, so the per-address limit on failed authentications is lifted
    (tests/api/test_unauthenticated_limits.py tests it)."""
    with api_server(UNAUTHENTICATED_REQUESTS_PER_MINUTE_PER_ADDRESS=1_000_000) as server:
        yield server


@pytest.fixture(scope="module")
def fuzzed(fuzz_api: ApiServer) -> Fuzzed:
    api = fuzz_api
    company = make_company(name="Fuzz", platforms=("x", "linkedin", "mastodon"))
    other = make_company(name="Fuzz Other", platforms=("x", "linkedin"))
    later = datetime.now(UTC) + timedelta(days=40)  # never due while the module runs
    with api.client(company.api_key) as http:
        post = http.post("/api/social-posts/schedule", json=schedule_body(company, ["x"], at=later))
    assert post.status_code == 201, post.text
    with api.client() as http:
        sync = http.post(
            "/api/jobs/sync-analytics",
            json={"idempotencyKey": f"fuzz-{uuid.uuid4().hex}", "companyId": str(company.id)},
            headers={"X-Webhook-Secret": WEBHOOK_SECRET},
        )
    assert sync.status_code == 200, sync.text
    return Fuzzed(
        company=company,
        other=other,
        post_id=post.json()["scheduledPostId"],
        sync_job_id=sync.json()["jobId"],
    )


def _spec() -> dict:
    """The app's own OpenAPI document (built without a database or a real token key)."""
    return create_app(
        settings=make_settings(
            WEBHOOK_SECRET=WEBHOOK_SECRET,
            TOKEN_ENCRYPTION_KEY="hVLHEu9XQ1hHtcvhyh3GuYKrhhHoVqAx9BKw8IYEYDA=",
        ),
        queue=InMemoryTaskQueue(),
        sessions=async_sessionmaker(),
    ).openapi()


SPEC = _spec()
SCHEMA = schemathesis.openapi.from_dict(SPEC)
OPERATIONS = {op.label: op for op in (r.ok() for r in SCHEMA.get_all_operations())}


def _kind(path: str) -> str:
    if path.startswith(("/api/jobs/", "/api/webhooks/")):
        return "webhook"
    if path.startswith("/api/"):
        return "company"
    return "public"


def _runs() -> list[tuple[str, str, GenerationMode]]:
    """(operation, credential, generation mode) for every operation of the document."""
    runs = []
    for label, op in sorted(OPERATIONS.items()):
        raw = SPEC["paths"][op.path][op.method.lower()]
        modes = [GenerationMode.POSITIVE]
        if raw.get("parameters") or raw.get("requestBody"):
            modes.append(GenerationMode.NEGATIVE)
        runs += [(label, OWN, mode) for mode in modes]
        match _kind(op.path):
            case "company":
                runs += [(label, c, GenerationMode.POSITIVE) for c in (NONE, WRONG, OTHER_TENANT)]
            case "webhook":
                runs += [(label, c, GenerationMode.POSITIVE) for c in REFUSED]
    return runs


RUNS = _runs()


def test_every_operation_of_the_document_is_fuzzed() -> None:
    """No operation escapes: the webhooks (with the secret) and the company API are all here,
    each with its refused credentials."""
    covered = {(label, cred) for label, cred, _ in RUNS}
    assert {label for label, _ in covered} == set(OPERATIONS)
    webhooks = [label for label, op in OPERATIONS.items() if _kind(op.path) == "webhook"]
    assert len(webhooks) == 4, webhooks
    for label in webhooks:
        assert {(label, c) for c in (OWN, *REFUSED)} <= covered


GLOBAL_SQL = text(
    """
    SELECT
      (SELECT coalesce(string_agg(j::text, '|' ORDER BY j.id), '') FROM analytics_sync_jobs j),
      (SELECT count(*) FROM run_records),
      (SELECT count(*) FROM scheduled_posts),
      (SELECT coalesce(string_agg(l.status || l.attempts::text, '|' ORDER BY l.id), '')
         FROM publish_logs l),
      (SELECT count(*) FROM social_accounts)
    """
)


def _state(db: Engine, company: Tenant) -> tuple[str, str]:
    """(the fuzzed company's data, the pipeline's global tables), each hashed."""
    with db.connect() as conn:
        row = conn.execute(GLOBAL_SQL).one()
    return fingerprint(db, company.id), hashlib.sha256(repr(tuple(row)).encode()).hexdigest()


def _headers(credential: str, kind: str, fuzzed: Fuzzed) -> dict[str, str]:
    own = {
        "webhook": {"X-Webhook-Secret": WEBHOOK_SECRET},
        "company": {"Authorization": f"Bearer {fuzzed.company.api_key}"},
        "public": {},
    }[kind]
    return {
        OWN: own,
        NONE: {},
        WRONG: (
            {"X-Webhook-Secret": "wrong-" + WEBHOOK_SECRET}
            if kind == "webhook"
            else {"Authorization": "Bearer ts_" + "A" * 43}
        ),
        COMPANY_KEY: {"Authorization": f"Bearer {fuzzed.company.api_key}"},
        OTHER_TENANT: {"Authorization": f"Bearer {fuzzed.other.api_key}"},
    }[credential]


def _victim_ids(fuzzed: Fuzzed) -> dict[str, str]:
    """Path parameters naming the fuzzed company's own objects (for the other tenant)."""
    return {
        "post_id": fuzzed.post_id,
        "account_id": str(fuzzed.company.accounts["x"]),
        "job_id": fuzzed.sync_job_id,
    }


def _shares(credential: str, mode: GenerationMode) -> list[object]:
    if credential in REFUSED:
        quick = QUICK_REFUSED
    else:
        quick = QUICK_NEGATIVE if mode == GenerationMode.NEGATIVE else QUICK
    shares = [pytest.param(quick, id="quick")]
    if quick < EXAMPLES:
        shares.append(pytest.param(EXAMPLES - quick, id="deep", marks=pytest.mark.faults))
    return shares


PARAMS = [
    pytest.param(
        label,
        credential,
        mode,
        share.values[0],
        id=f"{label}-{credential}-{mode.value}-{share.id}",
        marks=share.marks,
    )
    for label, credential, mode in RUNS
    for share in _shares(credential, mode)
]


@pytest.mark.parametrize(("label", "credential", "mode", "examples"), PARAMS)
def test_no_server_error_and_rejections_change_nothing(
    label: str,
    credential: str,
    mode: GenerationMode,
    examples: int,
    fuzz_api: ApiServer,
    fuzzed: Fuzzed,
    db: Engine,
) -> None:
    operation = OPERATIONS[label]
    kind = _kind(operation.path)
    headers = _headers(credential, kind, fuzzed)

    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(
        max_examples=examples,
        deadline=None,
        suppress_health_check=list(HealthCheck),
        database=None,
        derandomize=True,
    )
    def check(case: schemathesis.Case) -> None:
        case.headers = {**(case.headers or {}), **headers}
        if credential == OTHER_TENANT and case.path_parameters:
            victims = _victim_ids(fuzzed)
            case.path_parameters = {
                name: victims.get(name, value) for name, value in case.path_parameters.items()
            }
        before = _state(db, fuzzed.company)
        response = case.call(base_url=fuzz_api.base_url, timeout=30)
        curl = case.as_curl_command()
        assert response.status_code < 500, (curl, response.text[:500])
        if credential in REFUSED:
            assert response.status_code == 401, (curl, response.text[:500])
        if 400 <= response.status_code < 500:
            body = response.json()
            assert isinstance(body.get("error", {}).get("message"), str), response.text[:500]
            assert _state(db, fuzzed.company) == before, curl
        if credential == OTHER_TENANT:
            assert fingerprint(db, fuzzed.company.id) == before[0], curl
            assert fuzzed.post_id not in response.text, curl

    check()
