"""Recording stand-ins for `gcloud`, `prefect` and `tendsocial` (the deploy's control-plane calls).

`python standin.py PROGRAM ARGS...` appends one JSON line per call to `$STANDIN_LOG` (argv, a few
environment variables, the sha256 of what came on stdin, the files the call was given) and keeps
the resources it "created" in `$STANDIN_STATE`, so a re-run of the deploy sees what exists.

It answers the way the real tools do for what the scripts read back, and refuses what the real
services refuse, so the order of the deploy is checked too:
- `describe` of a missing resource exits 1 with NOT_FOUND (gcloud's behaviour; the scripts use
  `describe || create`);
- adding a secret version or an IAM binding to a missing secret, executing a missing job, or
  binding invokers on a missing service fails, as the APIs answer NOT_FOUND;
- Cloud Run service URLs follow Google's documented deterministic form
  `https://SERVICE-PROJECT_NUMBER.REGION.run.app` (https://cloud.google.com/run/docs/triggering/https-request,
  "deterministic URL"), listed in the `run.googleapis.com/urls` annotation beside the older
  hash-based URL (the annotation google-cloud-sdk reads in `api_lib/run/service.py`);
- `*replace FILE` parses the YAML and refuses a document of the wrong kind.
Nothing here talks to a network.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from pathlib import Path
from typing import Any


def _yaml() -> Any:
    """PyYAML, imported on first use. The stand-in runs as `python -S` (a deploy starts it about
    200 times, and setting up site-packages is most of each start), so site-packages is only
    added for the few calls that parse YAML."""
    import site

    site.main()
    import yaml

    return yaml


PROJECT_NUMBER = "123456789012"
ENV_RECORDED = (
    "GCP_PROJECT_ID",
    "GCP_LOCATION",
    "WEBHOOK_URL",
    "PREFECT_API_URL",
    "TASKS_PUBLISH_MAX_CONCURRENT_DISPATCHES",
    "CLOUDSDK_CONFIG",
)
FILE_FLAGS = ("--config-from-file", "--policy-from-file", "--prefect-file", "--config")


def _flag(argv: list[str], name: str) -> str | None:
    for i, arg in enumerate(argv):
        if arg == name and i + 1 < len(argv):
            return argv[i + 1]
        if arg.startswith(name + "="):
            return arg.split("=", 1)[1]
    return None


def _positionals(argv: list[str]) -> list[str]:
    """Words before the first flag (the command path and its resource names)."""
    words: list[str] = []
    for arg in argv:
        if arg.startswith("-"):
            break
        words.append(arg)
    return words


def fail(message: str) -> int:
    print(f"ERROR: (standin) {message}", file=sys.stderr)
    return 1


class Standin:
    def __init__(self) -> None:
        self.state_path = Path(os.environ["STANDIN_STATE"])
        self.state: dict[str, Any] = (
            json.loads(self.state_path.read_text()) if self.state_path.exists() else {}
        )

    def has(self, kind: str, name: str) -> bool:
        return name in self.state.get(kind, {})

    def put(self, kind: str, name: str, value: object = True) -> None:
        self.state.setdefault(kind, {})[name] = value

    def save(self) -> None:
        self.state_path.write_text(json.dumps(self.state, indent=1, sort_keys=True))

    # ------------------------------------------------------------------ gcloud
    def gcloud(self, argv: list[str]) -> int:
        words = _positionals(argv)
        if words and words[0] in ("alpha", "beta"):
            words = words[1:]
        project = _flag(argv, "--project") or os.environ.get("GCP_PROJECT_ID", "")
        region = _flag(argv, "--region") or _flag(argv, "--location") or "us-central1"
        cmd = " ".join(words[:3])
        if words[:2] == ["projects", "describe"]:
            print(PROJECT_NUMBER)
            return 0
        simple = {
            "secrets": "secret",
            "artifacts repositories": "repository",
            "iam service-accounts": "service-account",
            "scheduler jobs": "scheduler-job",
            "logging metrics": "log-metric",
        }
        for prefix, kind in simple.items():
            size = len(prefix.split())
            if " ".join(words[:size]) != prefix or len(words) < size + 1:
                continue
            verb = words[size]
            rest = words[size + 1 :]
            if verb == "describe":
                return 0 if rest and self.has(kind, rest[0]) else fail("NOT_FOUND")
            if verb == "create":
                name = rest[-1]
                if kind == "service-account":
                    name = f"{name}@{project}.iam.gserviceaccount.com"
                if self.has(kind, name):
                    return fail("ALREADY_EXISTS")
                self.put(kind, name)
                return 0
            if verb in ("update",) and not self.has(kind, rest[-1]):
                return fail("NOT_FOUND")
            if kind == "secret" and verb == "versions" and rest[:1] == ["add"]:
                if not self.has("secret", rest[1]):
                    return fail("NOT_FOUND: secret")
                self.state.setdefault("secret-versions", {}).setdefault(rest[1], 0)
                self.state["secret-versions"][rest[1]] += 1
                return 0
            if kind == "secret" and verb == "add-iam-policy-binding":
                return 0 if self.has("secret", rest[0]) else fail("NOT_FOUND: secret")
            return 0
        if words[:1] == ["run"] and len(words) >= 3:
            group, verb = words[1], words[2]
            kinds = {"services": "Service", "jobs": "Job", "worker-pools": "WorkerPool"}
            if group in kinds and verb == "replace":
                doc = _yaml().safe_load(Path(words[3]).read_text())
                if not isinstance(doc, dict) or doc.get("kind") != kinds[group]:
                    return fail(f"{words[3]} is not a {kinds[group]}")
                self.put(group, doc["metadata"]["name"], doc)
                return 0
            if group in kinds and verb in ("describe", "execute", "add-iam-policy-binding"):
                name = words[3]
                if not self.has(group, name):
                    return fail(f"NOT_FOUND: {group} {name}")
                fmt = _flag(argv, "--format") or ""
                if verb == "describe" and "run.googleapis.com/urls" in fmt:
                    print(
                        json.dumps(
                            [
                                f"https://{name}-{PROJECT_NUMBER}.{region}.run.app",
                                f"https://{name}-abcdefghij-uc.a.run.app",
                            ]
                        )
                    )
                elif verb == "describe":  # status.url: "the deterministic URL is given priority"
                    print(f"https://{name}-{PROJECT_NUMBER}.{region}.run.app")
                return 0
            return 0
        if words[:2] == ["monitoring", "policies"] and len(words) >= 3:
            verb = words[2]
            if verb == "list":
                wanted = (_flag(argv, "--filter") or "").partition("=")[2].strip('"')
                name = self.state.get("policy", {}).get(wanted)
                if name:
                    print(name)
                return 0
            if verb in ("create", "update"):
                doc = _yaml().safe_load(Path(_flag(argv, "--policy-from-file") or "").read_text())
                display = doc["displayName"]
                if verb == "update" and not self.has("policy", display):
                    return fail("NOT_FOUND: policy")
                count = len(self.state.get("policy", {}))
                self.put("policy", display, f"projects/p/alertPolicies/{count + 1}")
                return 0
        del cmd
        return 0

    # ------------------------------------------------------------------ prefect
    def prefect(self, argv: list[str]) -> int:
        argv = [a for a in argv if a != "--no-prompt"]
        if argv[:2] == ["work-pool", "create"]:
            name = argv[2]
            if self.has("work-pool", name) and "--overwrite" not in argv:
                return fail(f"Work pool named {name!r} already exists")
            self.put("work-pool", name, _flag(argv, "--type"))
            return 0
        if argv[:1] == ["deploy"]:
            doc = _yaml().safe_load(
                Path(_flag(argv, "--prefect-file") or "prefect.yaml").read_text()
            )
            for deployment in doc["deployments"]:
                pool = deployment["work_pool"]["name"]
                if not self.has("work-pool", pool):
                    return fail(f"work pool {pool!r} not found")
                self.put("deployment", deployment["name"], deployment)
            return 0
        return 0

    def run(self, program: str, argv: list[str]) -> int:
        entry: dict[str, Any] = {
            "program": program,
            "argv": argv,
            "env": {k: os.environ[k] for k in ENV_RECORDED if k in os.environ},
        }
        if "--data-file=-" in argv:
            data = sys.stdin.buffer.read()
            entry["stdin_sha256"] = hashlib.sha256(data).hexdigest()
        files = {}
        for arg_name in FILE_FLAGS:
            path = _flag(argv, arg_name)
            if path and Path(path).is_file():
                files[path] = Path(path).read_text()
        words = _positionals(argv)
        if "replace" in words:
            path = words[words.index("replace") + 1]
            files[path] = Path(path).read_text()
        entry["files"] = files
        with open(os.environ["STANDIN_LOG"], "a") as log:
            log.write(json.dumps(entry) + "\n")
        handler = {"gcloud": self.gcloud, "prefect": self.prefect}.get(program)
        status = handler(argv) if handler else 0
        self.save()
        return status


if __name__ == "__main__":
    raise SystemExit(Standin().run(sys.argv[1], sys.argv[2:]))
