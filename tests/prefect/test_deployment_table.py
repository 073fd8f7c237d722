"""The Prefect deployments are declared once (`deployments/prefect_flows.py`): production's
`deployments/prefect.yaml` is generated from that table and `tendsocial dev` serves the same
definitions, so the two cannot drift (names, schedules, parameters, tags, descriptions). No server:
this runs in the fast lane."""

from __future__ import annotations

from pathlib import Path

import yaml
from prefect.cli.deploy._models import PrefectYamlModel

import flows.prefect_flows
from deployments.prefect_flows import (
    DEPLOYMENTS,
    PREFECT_YAML,
    TIMEZONE,
    deployment_definitions,
    prefect_yaml,
)

ROOT = Path(__file__).resolve().parents[2]


def test_prefect_yaml_is_generated_from_the_table() -> None:
    assert PREFECT_YAML.read_text() == prefect_yaml(), "run: python -m deployments.prefect_flows"


def test_production_deploys_the_tables_deployments_as_declared() -> None:
    config = PrefectYamlModel.model_validate(yaml.safe_load(PREFECT_YAML.read_text()))
    deployed = {d.name: d for d in config.deployments}
    assert set(deployed) == {spec.name for spec in DEPLOYMENTS if spec.in_production}
    assert "sync-analytics-every-6h" not in deployed  # Cloud Scheduler triggers it there
    for spec in DEPLOYMENTS:
        if not spec.in_production:
            continue
        deployment = deployed[spec.name]
        assert deployment.entrypoint == spec.entrypoint
        assert deployment.description == spec.description  # the folded lines read back whole
        assert tuple(deployment.tags or ()) == spec.tags
        assert (deployment.parameters or {}) == spec.parameters
        (schedule,) = deployment.schedules or []
        assert (schedule.cron, schedule.timezone) == (spec.cron, TIMEZONE)


def test_the_local_stack_serves_the_same_deployments() -> None:
    served = {d.name: d for d in deployment_definitions()}
    assert list(served) == [spec.name for spec in DEPLOYMENTS]
    for spec in DEPLOYMENTS:
        deployment = served[spec.name]
        assert callable(getattr(flows.prefect_flows, spec.flow))
        assert deployment.entrypoint == spec.entrypoint
        assert deployment.description == spec.description
        assert tuple(deployment.tags) == spec.tags
        assert deployment.parameters == spec.parameters
        (schedule,) = deployment.schedules
        assert (schedule.schedule.cron, schedule.schedule.timezone) == (spec.cron, TIMEZONE)


def test_the_sync_schedule_is_cloud_schedulers() -> None:
    """Production's sync trigger (Cloud Scheduler) runs on the table's cron and key."""
    (sync,) = [spec for spec in DEPLOYMENTS if spec.flow == "sync_analytics_flow"]
    job = (ROOT / "deployments" / "cloud" / "scheduler-job.sh").read_text()
    assert f'--schedule="{sync.cron}"' in job
    assert f'"idempotencyKey": "{sync.parameters["idempotency_key"]}"' in job
