"""The documents say what the code does: every environment variable the settings read is in
`docs/configuration.md`, every link between the documents leads somewhere, and no comment sends a
reader to a document that is not in the repository."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

from pydantic_settings import BaseSettings

from models import settings as settings_module

ROOT = Path(__file__).resolve().parents[2]
DOCUMENTS = [ROOT / "README.md", ROOT / "RUNBOOK.md", *sorted((ROOT / "docs").glob("*.md"))]


def _environment_names() -> set[str]:
    names: set[str] = set()
    for part in vars(settings_module).values():
        if isinstance(part, type) and issubclass(part, BaseSettings) and part is not BaseSettings:
            for field in part.model_fields.values():
                if field.alias and field.alias.isupper():
                    names.add(field.alias)
    return names


def test_every_environment_variable_is_documented() -> None:
    names = _environment_names()
    assert len(names) > 50, "the settings parts were not found"
    documented = (ROOT / "docs" / "configuration.md").read_text()
    missing = sorted(name for name in names if f"`{name}`" not in documented)
    assert missing == [], f"add these to docs/configuration.md: {missing}"


_LINK = re.compile(r"\]\(([^)\s]+)\)")


def test_links_between_documents_lead_somewhere() -> None:
    broken: list[str] = []
    for document in DOCUMENTS:
        for target in _LINK.findall(document.read_text()):
            if re.match(r"^[a-z]+:", target) or target.startswith("#"):
                continue
            path = target.split("#", 1)[0]
            if not (document.parent / path).exists():
                broken.append(f"{document.relative_to(ROOT)} → {target}")
    assert broken == []


#: What a comment citing a document outside the repository looks like: the review documents and
#: issue tracker the project was built from are not shipped with it.
_OUTSIDE = re.compile(
    r"\.\./shared|\b(security|architecture|platforms) review\b|\breview §|\bfinding \d|"
    r"\bissue #?\d+\b|\bthe review\b",
    re.IGNORECASE,
)


def test_no_comment_cites_a_document_outside_the_repository() -> None:
    tracked = subprocess.run(
        ["git", "ls-files", "*.py", "*.md", "*.toml", "*.yaml", "*.sh"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    citing = [
        f"{name}:{number}"
        for name in tracked
        if name != "tests/unit/test_docs.py" and (ROOT / name).is_file()
        for number, line in enumerate((ROOT / name).read_text().splitlines(), 1)
        if _OUTSIDE.search(line)
    ]
    assert citing == []
