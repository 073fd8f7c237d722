"""The reporter authenticates to a self-hosted Prefect server the way Prefect's own client does:
`PREFECT_API_AUTH_STRING` as HTTP basic auth, winning over `PREFECT_API_KEY` (Prefect Cloud's bearer
key) when both are set."""

from __future__ import annotations

import pytest
from prefect.client.orchestration import PrefectClient

from flows.reporter import prefect_http_client
from models.settings import ReporterSettings

URL = "http://127.0.0.1:9/api"


@pytest.mark.parametrize(
    ("auth_string", "api_key"),
    [("admin:s3cret:with:colons", None), (None, "pnu_cloudkey"), ("admin:pass", "pnu_both")],
)
async def test_the_reporter_sends_what_prefects_own_client_sends(
    auth_string: str | None, api_key: str | None
) -> None:
    settings = ReporterSettings(
        PREFECT_API_URL=URL, PREFECT_API_AUTH_STRING=auth_string, PREFECT_API_KEY=api_key
    )
    prefect = PrefectClient(URL, auth_string=auth_string, api_key=api_key)
    async with prefect_http_client(settings) as ours:
        assert ours.headers["authorization"] == prefect._client.headers["authorization"]
    expected = "Basic" if auth_string else "Bearer"
    assert ours.headers["authorization"].startswith(expected + " ")


async def test_no_credential_sends_no_authorization() -> None:
    settings = ReporterSettings(
        PREFECT_API_URL=URL, PREFECT_API_AUTH_STRING=None, PREFECT_API_KEY=None
    )
    async with prefect_http_client(settings) as ours:
        assert "authorization" not in ours.headers
