"""Write `requirements-runtime.lock`: the part of `requirements.lock` the service runs on.

`requirements.lock` pins everything the development virtualenv holds, test and lint tools
included; the production image must carry only what runs. This script
takes the `[project] dependencies` of `pyproject.toml`, follows their requirements as the
installed distributions declare them (`importlib.metadata`, environment markers and extras
evaluated for this interpreter: CPython 3.11 on Linux, as in the image) and copies each one's
pin and hashes verbatim from `requirements.lock`, so the two locks can never disagree on a
version or a hash and nothing is resolved or downloaded here.

Regenerate after refreshing `requirements.lock` (docs/reliability.md, "Dependency lock"):

    .venv/bin/python -m deployments.cloud.runtime_lock          # writes requirements-runtime.lock
    .venv/bin/python -m deployments.cloud.runtime_lock --check  # exit 1 when it is stale

`tests/security/test_lockfile.py` fails when the file differs from what this writes.
"""

from __future__ import annotations

import re
import sys
import tomllib
from collections import defaultdict
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[2]
FULL_LOCK = ROOT / "requirements.lock"
RUNTIME_LOCK = ROOT / "requirements-runtime.lock"
#: The parent pip-compile would name for a requirement of the project itself.
PROJECT_PARENT = "tendsocial-pipeline (pyproject.toml)"
HEADER = """\
# Pinned versions and hashes of what the service needs at run time: the [project] dependencies
# of pyproject.toml and everything they require, each pin and hash copied from requirements.lock
# (no test or lint tool; tests/security/test_lockfile.py checks it). The production image
# (deployments/cloud/Dockerfile) installs exactly this, and Cloud Build audits it (pip-audit).
# Regenerate after refreshing requirements.lock:
#   .venv/bin/python -m deployments.cloud.runtime_lock
# Install exactly: pip install --require-hashes -r requirements-runtime.lock
#   && pip install --no-deps .
"""
_PIN = re.compile(r"^([A-Za-z0-9_.\-]+)(?:\[[A-Za-z0-9_,.\-]+\])?==([^\s\\]+)")


class LockError(Exception):
    """The runtime set cannot be taken from requirements.lock as it stands."""


@dataclass
class Locked:
    """One pin of requirements.lock: its line (`name[extras]==version`), version and hashes."""

    line: str
    version: str
    hashes: list[str]


@dataclass
class Needed:
    """A runtime distribution: the extras asked of it and who asks for it."""

    extras: set[str] = field(default_factory=set)
    parents: set[str] = field(default_factory=set)


def normal(name: str) -> str:
    """PEP 503 normalised name, the key both locks and metadata agree on."""
    return re.sub(r"[-_.]+", "-", name).lower()


def read_lock(text: str) -> dict[str, Locked]:
    """Each pin of a pip-compile lock with its `--hash` lines (comments dropped)."""
    entries: dict[str, Locked] = {}
    for block in re.split(r"\n(?=[A-Za-z0-9])", text):
        match = _PIN.match(block.strip())
        if match:
            hashes = re.findall(r"--hash=sha256:[0-9a-f]{64}", block)
            entries[normal(match[1])] = Locked(match[0], match[2], hashes)
    return entries


def project_requirements(pyproject: Path = ROOT / "pyproject.toml") -> list[Requirement]:
    """The `[project] dependencies`: what the service imports (no optional group)."""
    return [
        Requirement(spec)
        for spec in tomllib.loads(pyproject.read_text())["project"]["dependencies"]
    ]


def _applies(requirement: Requirement, extras: set[str]) -> bool:
    """Whether a requirement holds here, for the distribution installed with `extras`."""
    if requirement.marker is None:
        return True
    return any(requirement.marker.evaluate({"extra": extra}) for extra in extras | {""})


def runtime_closure(roots: list[Requirement]) -> dict[str, Needed]:
    """Every distribution the roots need, transitively, from the installed metadata."""
    needed: dict[str, Needed] = defaultdict(Needed)
    pending = [(PROJECT_PARENT, root) for root in roots if _applies(root, set())]
    while pending:
        parent, requirement = pending.pop()
        name = normal(requirement.name)
        seen = name in needed
        entry = needed[name]
        entry.parents.add(parent)
        if seen and requirement.extras <= entry.extras:
            continue
        entry.extras |= requirement.extras
        try:
            declared = metadata.distribution(name).requires or []
        except metadata.PackageNotFoundError:
            raise LockError(f"{name} is not installed; install requirements.lock first") from None
        for spec in declared:
            child = Requirement(spec)
            if _applies(child, entry.extras):
                pending.append((name, child))
    return dict(needed)


def render(full_lock_text: str | None = None) -> str:
    """The runtime lock's text: header, then each runtime pin as requirements.lock has it."""
    locked = read_lock(FULL_LOCK.read_text() if full_lock_text is None else full_lock_text)
    needed = runtime_closure(project_requirements())
    missing = sorted(set(needed) - set(locked))
    if missing:
        raise LockError(f"not in requirements.lock: {', '.join(missing)}")
    blocks = [HEADER]
    for name in sorted(needed):
        pin, entry = locked[name], needed[name]
        installed = metadata.version(name)
        if installed != pin.version:
            raise LockError(f"{name}: requirements.lock has {pin.version}, installed {installed}")
        # The pin line as requirements.lock writes it, `[extras]` included or not: pip (23.2
        # at least) resolves `httpx[http2]` apart from a plain `httpx` pin, then refuses the
        # one left unpinned under --require-hashes; what an extra pulls in has its own line.
        lines = [f"{pin.line} \\"]
        lines += [
            f"    {hash_}" + (" \\" if i < len(pin.hashes) - 1 else "")
            for i, hash_ in enumerate(pin.hashes)
        ]
        parents = sorted(entry.parents, key=lambda p: (p != PROJECT_PARENT, p))
        if len(parents) == 1:
            lines.append(f"    # via {parents[0]}")
        else:
            lines += ["    # via", *(f"    #   {p}" for p in parents)]
        blocks.append("\n".join(lines))
    return "\n".join(blocks) + "\n"


def main(argv: list[str]) -> int:
    """Write the runtime lock, or with `--check` report whether it is current."""
    try:
        text = render()
    except LockError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if argv[1:] == ["--check"]:
        if RUNTIME_LOCK.read_text() != text:
            print(
                f"{RUNTIME_LOCK.name} is stale: run python -m deployments.cloud.runtime_lock",
                file=sys.stderr,
            )
            return 1
        return 0
    RUNTIME_LOCK.write_text(text)
    print(f"wrote {RUNTIME_LOCK.name}: {len(read_lock(text))} pins")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv))
