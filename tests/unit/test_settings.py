"""One settings root: the queue definitions written to Cloud Tasks and the webhooks' final-attempt
rule are built from the same `QueueSpec`, so changing one environment variable moves both."""

from __future__ import annotations

import pytest

from deployments.queues import to_queue
from models.settings import QueueSettings, Settings, WebhookSettings, load_settings


def test_the_final_attempt_rule_and_the_queue_definition_agree(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("PUBLISH_MAX_ATTEMPTS", "7")
    monkeypatch.setenv("ANALYTICS_MAX_ATTEMPTS", "3")
    monkeypatch.setenv("STAGING_MAX_ATTEMPTS", "4")
    monkeypatch.setenv("GCP_TASKS_QUEUE", "publish-eu")
    queues = QueueSettings()
    stored = {spec.queue_id: to_queue(spec, parent=queues.parent) for spec in queues.all}
    assert set(stored) == {"publish-eu", "analytics", "staging", "publish-eu-dlq"}
    assert stored["publish-eu"].retry_config.max_attempts == 7
    assert stored["analytics"].retry_config.max_attempts == 3
    assert stored["staging"].retry_config.max_attempts == 4
    assert [queues.staging.is_final_attempt(n) for n in range(4)] == [False] * 3 + [True]
    assert [queues.publish.is_final_attempt(n) for n in range(7)] == [False] * 6 + [True]
    assert [queues.analytics.is_final_attempt(n) for n in range(3)] == [False, False, True]
    assert queues.dead_letter.paused and not queues.publish.paused


def test_each_variable_is_read_by_one_part_only() -> None:
    owners: dict[str, str] = {}
    for name, part in Settings.model_fields.items():
        model = part.annotation
        for field_name, info in model.model_fields.items():  # type: ignore[union-attr]
            env = info.alias or field_name.upper()
            assert env not in owners, f"{env} is read by both {owners[env]} and {name}"
            owners[env] = name
    assert owners["TASKS_OIDC_SERVICE_ACCOUNT"] == "webhooks"
    assert owners["PUBLISH_MAX_ATTEMPTS"] == "queues"


def test_settings_are_loaded_once_per_entrypoint(monkeypatch: pytest.MonkeyPatch) -> None:
    load_settings.cache_clear()
    monkeypatch.setenv("WEBHOOK_URL", "https://first.example")
    first = load_settings()
    monkeypatch.setenv("WEBHOOK_URL", "https://second.example")
    assert load_settings() is first  # nothing below the entrypoint re-reads the environment
    load_settings.cache_clear()
    assert load_settings().webhooks.webhook_url == "https://second.example"
    load_settings.cache_clear()


def test_tasks_carry_the_secret_only_when_the_webhook_checks_it() -> None:
    secret = "s" * 40
    assert WebhookSettings(WEBHOOK_SECRET=secret).sends_secret
    assert WebhookSettings(WEBHOOK_SECRET=secret, WEBHOOK_AUTH="both").sends_secret
    assert not WebhookSettings(WEBHOOK_SECRET=secret, WEBHOOK_AUTH="oidc").sends_secret


def test_readiness_names_a_retired_platform_api_version() -> None:
    """`/readyz` reports a configured version past or near its sunset: a retired LinkedIn
    version fails every call, and nothing else would say why."""
    from models.settings import PlatformSettings
    from tasks.platforms.versions import configured_version_warnings

    retired = configured_version_warnings(PlatformSettings(LINKEDIN_VERSION="202510"))
    assert [w.setting for w in retired] == ["LINKEDIN_VERSION"]
    assert "was retired" in retired[0].message
    assert configured_version_warnings(PlatformSettings()) == []


def test_publish_targets_spread_over_the_queue_shards_deterministically() -> None:
    """N publish queues dispatch N times what one can; a target always lands on the same one
    (a re-enqueue under a new dispatch generation too), and each shard is applied to Cloud Tasks
    with the same retry policy, so the final-attempt rule holds on every shard."""
    queues = QueueSettings(PUBLISH_QUEUE_SHARDS=4, GCP_TASKS_QUEUE="publish")
    ids = {spec.queue_id for spec in queues.publish_shards}
    assert ids == {"publish", "publish-1", "publish-2", "publish-3"}
    assert {spec.max_attempts for spec in queues.publish_shards} == {queues.publish.max_attempts}
    keys = [f"publish-{n}-x-account" for n in range(400)]
    chosen = [queues.publish_queue_for(key) for key in keys]
    assert chosen == [queues.publish_queue_for(key) for key in keys]  # stable
    per_queue = {queue_id: chosen.count(queue_id) for queue_id in ids}
    assert min(per_queue.values()) > 60, per_queue  # spread, not piled on one queue
    assert {spec.queue_id for spec in queues.all} >= ids | {f"{i}-dlq" for i in ids}
    assert QueueSettings().publish_queue_for("any") == "default"  # one queue by default


def test_platform_defaults_are_the_specs() -> None:
    """Models cannot import tasks, so the settings repeat two facts of the platforms' specs:
    each API base URL and the pinned API versions. They must stay the specs' own."""
    from models.settings import DEFAULT_GRAPH_VERSION, DEFAULT_LINKEDIN_VERSION, PlatformSettings
    from tasks.platforms.registry import registered_specs
    from tasks.platforms.specs import platform_spec

    defaults = PlatformSettings(_env_file=None)
    for spec in registered_specs():
        assert defaults.base_url(spec.name) == spec.api_base_url.rstrip("/"), spec.name
        attributes = set(spec.adapter_settings.values()) | set(spec.connector_settings.values())
        attributes |= {name for app in spec.oauth_apps.values() for name in app}
        for attribute in attributes:
            assert hasattr(defaults, attribute), f"{spec.name}: no setting {attribute}"
    linkedin = platform_spec("linkedin").versions
    graph = platform_spec("facebook").versions
    assert linkedin is not None and graph is not None
    assert (linkedin.setting, linkedin.default) == ("LINKEDIN_VERSION", DEFAULT_LINKEDIN_VERSION)
    assert (graph.setting, graph.default) == ("META_GRAPH_VERSION", DEFAULT_GRAPH_VERSION)
    assert platform_spec("instagram").versions == graph
