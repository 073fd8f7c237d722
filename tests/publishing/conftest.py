"""Publishing over real HTTP: the app with the sandbox platforms on an in-memory queue
(`publish_stack`, tests/conftest.py): tests deliver tasks to the webhook themselves, which lets
them deliver one task 50 times at once. The emulator-driven stories live in tests/e2e."""

from __future__ import annotations

import pytest

from tests.support.stacks import PublishStack
from tests.support.tenants import Tenant, make_tenant


@pytest.fixture(autouse=True)
def _no_leftover_faults(publish_stack: PublishStack) -> None:
    publish_stack.sandbox.clear_faults()


@pytest.fixture
def tenant(publish_stack: PublishStack) -> Tenant:
    """A company with an account on every platform and a media asset."""
    return make_tenant(publish_stack, name="Pub Co")
