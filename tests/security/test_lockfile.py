"""Dependencies are pinned with hashes (requirements.lock), and the lock matches what is
installed, so a stale lock fails here rather than in production."""

from __future__ import annotations

import re
import tomllib
from importlib import metadata
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
#: `name==version` or `name[extra,...]==version` (an extra a dependency asks for, pinned).
REQUIREMENT = re.compile(r"^([A-Za-z0-9_.\-]+)(?:\[[A-Za-z0-9_,.\-]+\])?==([^\s\\]+)")


def _normal(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _locked() -> dict[str, tuple[str, int]]:
    """name -> (version, number of hashes)."""
    text = (REPO / "requirements.lock").read_text()
    entries: dict[str, tuple[str, int]] = {}
    for block in re.split(r"\n(?=[A-Za-z0-9])", text):
        match = REQUIREMENT.match(block.strip())
        if match:
            entries[_normal(match[1])] = (match[2], block.count("--hash=sha256:"))
    return entries


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
    assert mismatched == {}, "requirements.lock is stale; refresh it (RELIABILITY.md)"


def test_every_declared_dependency_is_locked() -> None:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    declared = [*project["dependencies"], *project["optional-dependencies"]["dev"]]
    names = {_normal(re.split(r"[\[<>=!~ ;]", spec, maxsplit=1)[0]) for spec in declared}
    assert names - set(_locked()) == set()
