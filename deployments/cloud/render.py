"""Render the Cloud Run manifests of every long-running piece from one description.

One image, the command picks the role:

- `tendsocial-api`, the public company API: a service, ingress all, `allUsers` may invoke
  (the app checks the company API key), CPU only during requests; `tendsocial serve`.
- `tendsocial-jobs`, the job webhooks: a service, ingress internal, only the tasks and the
  scheduler accounts may invoke; `tendsocial serve`.
- `tendsocial-reporter`: a worker pool, manual scaling, one instance, CPU always allocated;
  `tendsocial reporter`.
- `tendsocial-prefect-worker`: a worker pool, one instance, runs the Prefect deployments;
  `prefect worker start --pool tendsocial-cloud-run --type process`.
- `tendsocial-migrate`: a job, executed by every deploy before the services;
  `tendsocial db upgrade`.

`deploy.sh` calls `python -m deployments.cloud.render OUT_DIR` with its environment and applies
the files with `gcloud run services replace`, `gcloud beta run worker-pools replace` and
`gcloud run jobs replace`. Secrets are Secret Manager references (`secretKeyRef`), never values;
`secrets.txt` lists the secrets referenced and `service-accounts.txt` the service accounts, so
the deploy creates exactly those (and the offline test checks it).

Worker pool YAML follows the fields of google-cloud-sdk 528.0.0
(`lib/googlecloudsdk/api_lib/run/worker_pool.py`: `run.googleapis.com/scalingMode`,
`run.googleapis.com/manualInstanceCount`); service and job YAML the Cloud Run Admin API v1
(Knative serving `Service`, `run.googleapis.com/v1` `Job`).
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from models.settings import QueueSettings

#: The Prefect work pool the Prefect deployments name and the deploy creates.
WORK_POOL = "tendsocial-cloud-run"
PUBLISH_QUEUE = "default"
ANALYTICS_QUEUE = "analytics"

#: Environment variable -> Secret Manager secret id. The first two are required.
SECRETS: dict[str, str] = {
    "DATABASE_URL": "tendsocial-database-url",
    "TOKEN_ENCRYPTION_KEY": "tendsocial-token-key",
    "PREFECT_API_KEY": "tendsocial-prefect-api-key",
    "LINKEDIN_CLIENT_SECRET": "tendsocial-linkedin-client-secret",
    "X_CLIENT_SECRET": "tendsocial-x-client-secret",
    "INSTAGRAM_APP_SECRET": "tendsocial-instagram-app-secret",
    "FACEBOOK_APP_SECRET": "tendsocial-facebook-app-secret",
    "THREADS_APP_SECRET": "tendsocial-threads-app-secret",
}
REQUIRED_SECRETS = ("DATABASE_URL", "TOKEN_ENCRYPTION_KEY")
PLATFORM_SECRETS = (
    "LINKEDIN_CLIENT_SECRET",
    "X_CLIENT_SECRET",
    "INSTAGRAM_APP_SECRET",
    "FACEBOOK_APP_SECRET",
    "THREADS_APP_SECRET",
)
#: Public OAuth client ids: plain values, passed through when set.
PLATFORM_CLIENT_IDS = (
    "LINKEDIN_CLIENT_ID",
    "X_CLIENT_ID",
    "INSTAGRAM_APP_ID",
    "FACEBOOK_APP_ID",
    "THREADS_APP_ID",
)
#: What connecting accounts reads beyond the apps: the front end's redirect URIs.
CONNECT_SETTINGS = ("ACCOUNT_CONNECT_REDIRECT_URIS", "BLUESKY_PLC_DIRECTORY_URL")

#: Cloud Run sizing of the webhook service; the publish queue's in-flight limit must fit in it.
JOBS_MAX_INSTANCES = 20
CONTAINER_CONCURRENCY = 80
DISPATCH_DEADLINE_SECONDS = 30


def max_attempts(queue_id: str) -> int:
    """The queue's attempts as the app's own queue specs define them (`QueueSettings`)."""
    queues = QueueSettings(GCP_TASKS_QUEUE=PUBLISH_QUEUE, ANALYTICS_TASKS_QUEUE=ANALYTICS_QUEUE)
    return next(q.max_attempts for q in queues.all if q.queue_id == queue_id)


@dataclass(frozen=True)
class Role:
    name: str  # Cloud Run resource name
    kind: str  # service | worker-pool | job
    service_account: str  # short name, @PROJECT.iam.gserviceaccount.com
    command: list[str]
    env: dict[str, str] = field(default_factory=dict)
    secrets: tuple[str, ...] = ()  # env names from SECRETS
    cpu: str = "1"
    memory: str = "512Mi"


def _sa(short: str, project: str) -> str:
    return f"{short}@{project}.iam.gserviceaccount.com"


def roles(env: Mapping[str, str]) -> list[Role]:
    """Every piece, with exactly the environment and secrets its code reads."""
    project, location = env["GCP_PROJECT_ID"], env["GCP_LOCATION"]
    webhook_url = env["WEBHOOK_URL"]
    present = {name for name in SECRETS if env.get(f"HAS_{name}") == "1"}
    present |= set(REQUIRED_SECRETS)
    platform_secrets = tuple(s for s in PLATFORM_SECRETS if s in present)
    prefect_key = ("PREFECT_API_KEY",) if "PREFECT_API_KEY" in present else ()
    client_ids = {name: env[name] for name in PLATFORM_CLIENT_IDS if env.get(name)}
    connect_env = {name: env[name] for name in CONNECT_SETTINGS if env.get(name)}
    log = {"TENDSOCIAL_LOG_FORMAT": "json"}
    # What any process that enqueues Cloud Tasks or answers webhooks needs (QueueSettings,
    # WebhookSettings, AnalyticsSettings): where the queues are, where tasks call, how they sign.
    tasks_env = {
        "GCP_PROJECT_ID": project,
        "GCP_LOCATION": location,
        "GCP_TASKS_QUEUE": PUBLISH_QUEUE,
        "ANALYTICS_TASKS_QUEUE": ANALYTICS_QUEUE,
        "PUBLISH_MAX_ATTEMPTS": str(max_attempts(PUBLISH_QUEUE)),
        "ANALYTICS_MAX_ATTEMPTS": str(max_attempts(ANALYTICS_QUEUE)),
        "TASKS_DISPATCH_DEADLINE_SECONDS": str(DISPATCH_DEADLINE_SECONDS),
        "WEBHOOK_URL": webhook_url,
        "WEBHOOK_AUTH": "oidc",
        "TASKS_OIDC_SERVICE_ACCOUNT": _sa("tendsocial-tasks", project),
        "TASKS_OIDC_AUDIENCE": webhook_url,
        **log,
    }
    prefect_env = {"PREFECT_API_URL": env["PREFECT_API_URL"]}
    serve = ["tendsocial", "serve", "--host", "0.0.0.0", "--port", "8080"]
    # uvicorn takes the client's address from X-Forwarded-For only when the peer is a trusted
    # proxy; on Cloud Run the peer is Cloud Run's link-local proxy (dispatch/auth.py
    # `client_address`), so the per-address limits see clients, not one proxy.
    behind_cloud_run = {"FORWARDED_ALLOW_IPS": "169.254.0.0/16"}
    return [
        Role(
            name="tendsocial-api",
            kind="service",
            service_account="tendsocial-api",
            command=serve,
            # No webhooks here: the publish pool (models/database.DriverPool) keeps one
            # connection; the ORM serves the API. Connecting accounts (`POST
            # /api/accounts/connect`) exchanges codes with our apps' ids and secrets.
            env={
                **tasks_env,
                **behind_cloud_run,
                "WEBHOOKS_ENABLED": "false",
                "DATABASE_PUBLISH_POOL_SIZE": "1",
                **client_ids,
                **connect_env,
            },
            secrets=("DATABASE_URL", "TOKEN_ENCRYPTION_KEY", *platform_secrets),
            memory="1Gi",
        ),
        Role(
            name="tendsocial-jobs",
            kind="service",
            service_account="tendsocial-jobs",
            command=serve,
            env={
                **tasks_env,
                **behind_cloud_run,
                "TASKS_OIDC_SERVICE_ACCOUNTS": _sa("tendsocial-scheduler", project),
                # 30 connections per instance as before: the publish steps on their own pool
                # (20), the rest (unclaimed outcomes, token refresh, syncs) on the ORM's (10).
                "DATABASE_PUBLISH_POOL_SIZE": "20",
                "DATABASE_POOL_SIZE": "10",
                **client_ids,
            },
            secrets=("DATABASE_URL", "TOKEN_ENCRYPTION_KEY", *platform_secrets),
            memory="1Gi",
        ),
        Role(
            name="tendsocial-reporter",
            kind="worker-pool",
            service_account="tendsocial-reporter",
            command=["tendsocial", "reporter"],
            env={**prefect_env, **log},
            secrets=("DATABASE_URL", *prefect_key),
        ),
        Role(
            name="tendsocial-prefect-worker",
            kind="worker-pool",
            service_account="tendsocial-prefect-worker",
            command=["prefect", "worker", "start", "--pool", WORK_POOL, "--type", "process"],
            env={**tasks_env, **prefect_env, **client_ids},
            secrets=("DATABASE_URL", "TOKEN_ENCRYPTION_KEY", *platform_secrets, *prefect_key),
            memory="1Gi",
        ),
        Role(
            name="tendsocial-migrate",
            kind="job",
            service_account="tendsocial-migrate",
            command=["tendsocial", "db", "upgrade"],
            env=log,
            secrets=("DATABASE_URL",),
        ),
    ]


def _container(role: Role, image: str) -> dict[str, Any]:
    env: list[dict[str, Any]] = [{"name": k, "value": v} for k, v in role.env.items()]
    env += [
        {"name": name, "valueFrom": {"secretKeyRef": {"name": SECRETS[name], "key": "latest"}}}
        for name in role.secrets
    ]
    container: dict[str, Any] = {
        "image": image,
        "command": role.command[:1],
        "args": role.command[1:],
        "env": env,
        "resources": {"limits": {"cpu": role.cpu, "memory": role.memory}},
    }
    if role.kind == "service":
        container["ports"] = [{"name": "http1", "containerPort": 8080}]
        container["startupProbe"] = {"httpGet": {"path": "/healthz"}, "failureThreshold": 6}
    return container


def manifest(role: Role, *, env: Mapping[str, str]) -> dict[str, Any]:
    project, image = env["GCP_PROJECT_ID"], env["IMAGE"]
    cloudsql = {"run.googleapis.com/cloudsql-instances": env["CLOUD_SQL_INSTANCE"]}
    sa = _sa(role.service_account, project)
    container = _container(role, image)
    if role.kind == "service":
        public = role.name == "tendsocial-api"
        annotations = {"run.googleapis.com/ingress": "all" if public else "internal"}
        if not public:
            # The audience the tasks and the scheduler sign for (= TASKS_OIDC_AUDIENCE).
            annotations["run.googleapis.com/custom-audiences"] = json.dumps(
                [role.env["TASKS_OIDC_AUDIENCE"]]
            )
        return {
            "apiVersion": "serving.knative.dev/v1",
            "kind": "Service",
            "metadata": {"name": role.name, "annotations": annotations},
            "spec": {
                "template": {
                    "metadata": {
                        "annotations": {
                            **cloudsql,
                            "autoscaling.knative.dev/minScale": "1",
                            "autoscaling.knative.dev/maxScale": str(
                                JOBS_MAX_INSTANCES if not public else 10
                            ),
                            "run.googleapis.com/cpu-throttling": "true",
                            "run.googleapis.com/startup-cpu-boost": "true",
                        }
                    },
                    "spec": {
                        "serviceAccountName": sa,
                        "containerConcurrency": CONTAINER_CONCURRENCY,
                        # The jobs service answers a media staging task within the staging
                        # queue's dispatch deadline (up to 30 min: a 500 MB upload and its
                        # processing); Cloud Run allows a request up to 60 min
                        # (https://cloud.google.com/run/docs/configuring/request-timeout).
                        "timeoutSeconds": 60 if public else 1800,
                        "containers": [container],
                    },
                }
            },
        }
    if role.kind == "worker-pool":
        return {
            "apiVersion": "run.googleapis.com/v1",
            "kind": "WorkerPool",
            "metadata": {
                "name": role.name,
                "annotations": {
                    "run.googleapis.com/launch-stage": "BETA",
                    "run.googleapis.com/scalingMode": "manual",
                    "run.googleapis.com/manualInstanceCount": "1",
                },
            },
            "spec": {
                "template": {
                    "metadata": {"annotations": cloudsql},
                    "spec": {"serviceAccountName": sa, "containers": [container]},
                }
            },
        }
    return {
        "apiVersion": "run.googleapis.com/v1",
        "kind": "Job",
        "metadata": {"name": role.name},
        "spec": {
            "template": {
                "metadata": {"annotations": cloudsql},
                "spec": {
                    "taskCount": 1,
                    "template": {
                        "spec": {
                            "serviceAccountName": sa,
                            "maxRetries": 0,
                            "timeoutSeconds": 900,
                            "containers": [container],
                        }
                    },
                },
            }
        },
    }


def render(env: Mapping[str, str], out: Path) -> list[Path]:
    """Write one YAML file per role, plus `secret-access.txt` ("ACCOUNT SECRET" per line: each
    service account reads exactly the secrets its manifests reference) and
    `service-accounts.txt`."""
    out.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    access: set[tuple[str, str]] = set()
    for role in roles(env):
        path = out / f"{role.kind}-{role.name}.yaml"
        path.write_text(yaml.safe_dump(manifest(role, env=env), sort_keys=False))
        written.append(path)
        access |= {(role.service_account, SECRETS[name]) for name in role.secrets}
    (out / "secret-access.txt").write_text("".join(f"{a} {s}\n" for a, s in sorted(access)))
    accounts = {r.service_account for r in roles(env)}
    accounts |= {"tendsocial-tasks", "tendsocial-scheduler"}
    (out / "service-accounts.txt").write_text("".join(f"{a}\n" for a in sorted(accounts)))
    return written


def main(argv: list[str]) -> int:
    """`secrets`: print "ENV_NAME SECRET_ID required|optional" per secret;
    `manifests OUT_DIR`: render every manifest from the environment."""
    if argv == ["secrets"]:
        for name, secret_id in SECRETS.items():
            print(name, secret_id, "required" if name in REQUIRED_SECRETS else "optional")
        return 0
    if len(argv) != 2 or argv[0] != "manifests":
        usage = "usage: python -m deployments.cloud.render secrets | manifests OUT_DIR"
        print(usage, file=sys.stderr)
        return 2
    needed = ("GCP_PROJECT_ID", "GCP_LOCATION", "IMAGE", "CLOUD_SQL_INSTANCE", "WEBHOOK_URL")
    missing = [name for name in (*needed, "PREFECT_API_URL") if not os.environ.get(name)]
    if missing:
        print(f"render: set {', '.join(missing)}", file=sys.stderr)
        return 2
    for path in render(os.environ, Path(argv[1])):
        print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
