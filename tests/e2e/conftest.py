"""The real dispatch path: the API enqueues through the official google-cloud-tasks client over
gRPC to the project's emulator (a separate process), which calls the webhook at the post's
instant with an OIDC token it signed; the webhook verifies it with google-auth and publishes to
the sandbox platforms."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy.engine import URL

from tests.support.connect import connect_platforms
from tests.support.emulator import EmulatorProcess
from tests.support.sandbox import SandboxHandle
from tests.support.stacks import CloudStack, oidc_cloud_stack


@pytest.fixture(scope="session")
def cloud_stack(
    database_url: URL, sandbox: SandboxHandle, cloud_emulator: EmulatorProcess
) -> Iterator[CloudStack]:
    """API + webhooks on a known port, enqueueing to the emulator, OIDC-only webhook auth, with
    our OAuth apps configured (accounts can be connected through the API)."""
    with oidc_cloud_stack(
        sandbox,
        emulator_host=cloud_emulator.host_port,
        platforms=connect_platforms(sandbox, timeout=2.0),
    ) as stack:
        yield stack


@pytest.fixture(autouse=True)
def _clear_faults(request: pytest.FixtureRequest) -> None:
    if "cloud_stack" in request.fixturenames:
        request.getfixturevalue("sandbox").clear_faults()
