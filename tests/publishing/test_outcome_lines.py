"""Each publish attempt writes one `publish outcome` line (platform, outcome, error): the
production metric `publish_failed` counts the failed ones per platform and error code."""

from __future__ import annotations

import logging

import pytest

from tests.support.stacks import PublishStack
from tests.support.tenants import Tenant, schedule


def _outcome_lines(caplog: pytest.LogCaptureFixture) -> list[dict[str, str | None]]:
    return [
        {
            "platform": getattr(r, "platform", None),
            "outcome": getattr(r, "outcome", None),
            "error": getattr(r, "error", None),
        }
        for r in caplog.records
        if r.getMessage() == "publish outcome"
    ]


def test_each_attempt_leaves_one_outcome_line(
    publish_stack: PublishStack, tenant: Tenant, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="dispatch.jobs")
    ok = schedule(publish_stack, tenant, "mastodon")
    refused = schedule(publish_stack, tenant, "x")
    publish_stack.sandbox.inject("x", "revoked_token")
    publish_stack.deliver(publish_stack.task_for(ok["scheduledPostId"], "mastodon"))
    publish_stack.deliver(publish_stack.task_for(refused["scheduledPostId"], "x"))
    again = publish_stack.deliver(publish_stack.task_for(ok["scheduledPostId"], "mastodon"))
    assert again.json()["outcome"] == "already_published"  # attempted nothing: no line
    lines = _outcome_lines(caplog)
    assert lines[0] == {"platform": "mastodon", "outcome": "success", "error": None}
    assert lines[1]["platform"] == "x" and lines[1]["outcome"] == "failed"
    assert lines[1]["error"]
    assert len(lines) == 2
