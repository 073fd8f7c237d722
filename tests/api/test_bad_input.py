"""Property-based bad input over every endpoint of /openapi.json (schemathesis).

Whatever arrives, the answer is never a 5xx, every 4xx carries the JSON error shape, and a
rejected request leaves the company's data exactly as it was.
"""

from __future__ import annotations

import os

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode
from sqlalchemy.engine import Engine
from sqlalchemy.ext.asyncio import async_sessionmaker

from dispatch.app import create_app
from tasks.cloud_tasks import InMemoryTaskQueue
from tests.support.settings import make_settings
from tests.support.stacks import WEBHOOK_SECRET, ApiServer
from tests.support.tenants import Tenant, fingerprint, make_company


@pytest.fixture(scope="module")
def fuzz_company(database_url: object) -> Tenant:
    return make_company(name="Fuzz", platforms=("x", "linkedin", "mastodon"))


def _operations() -> tuple[dict[str, schemathesis.APIOperation], list[tuple[str, GenerationMode]]]:
    """Every operation of the app's own OpenAPI document (built without a database), and the
    generation modes that apply to it (an operation without inputs has no invalid input)."""
    spec = create_app(
        settings=make_settings(WEBHOOK_SECRET=WEBHOOK_SECRET),
        queue=InMemoryTaskQueue(),
        sessions=async_sessionmaker(),
    ).openapi()
    schema = schemathesis.openapi.from_dict(spec)
    operations = {op.label: op for op in (r.ok() for r in schema.get_all_operations())}
    runs = []
    for label, op in sorted(operations.items()):
        runs.append((label, GenerationMode.POSITIVE))
        raw = spec["paths"][op.path][op.method.lower()]
        if raw.get("parameters") or raw.get("requestBody"):
            runs.append((label, GenerationMode.NEGATIVE))
    return operations, runs


OPERATIONS, RUNS = _operations()

#: Examples per operation and mode (env `FUZZ_EXAMPLES`): a quick share in the fast lane, the
#: rest under the `faults` marker, so the full suite tries as many as ever.
EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "40"))
QUICK = min(10, EXAMPLES)
SHARES = [pytest.param(QUICK, id="quick")]
if EXAMPLES > QUICK:
    SHARES.append(pytest.param(EXAMPLES - QUICK, id="deep", marks=pytest.mark.faults))


@pytest.mark.parametrize("examples", SHARES)
@pytest.mark.parametrize(("label", "mode"), RUNS, ids=[f"{label}-{mode}" for label, mode in RUNS])
def test_no_server_error_and_rejections_change_nothing(
    label: str,
    mode: GenerationMode,
    examples: int,
    api: ApiServer,
    fuzz_company: Tenant,
    db: Engine,
) -> None:
    @given(case=OPERATIONS[label].as_strategy(generation_mode=mode))
    @settings(
        max_examples=examples,
        deadline=None,
        suppress_health_check=list(HealthCheck),
        database=None,
    )
    def check(case: schemathesis.Case) -> None:
        case.headers = {**(case.headers or {}), "Authorization": f"Bearer {fuzz_company.api_key}"}
        before = fingerprint(db, fuzz_company.id)
        response = case.call(base_url=api.base_url, timeout=30)
        assert response.status_code < 500, (case.as_curl_command(), response.text[:500])
        if 400 <= response.status_code < 500:
            body = response.json()
            assert isinstance(body.get("error", {}).get("message"), str), response.text[:500]
            assert fingerprint(db, fuzz_company.id) == before, case.as_curl_command()

    check()
