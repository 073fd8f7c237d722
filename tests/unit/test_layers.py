"""The layering the README draws is the code's: import-linter checks the contracts declared in
pyproject.toml (`deployments → dispatch → flows → tasks → models`, and no Prefect import on the
request path), and every package's docstring says what it may import."""

from __future__ import annotations

import importlib
import os
from pathlib import Path

import pytest
from importlinter.cli import lint_imports

REPO = Path(__file__).resolve().parents[2]
LAYERS = ("deployments", "dispatch", "flows", "tasks", "models")


def test_import_contracts_are_kept(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(REPO)
    assert lint_imports(config_filename=os.fspath(REPO / "pyproject.toml")) == 0


@pytest.mark.parametrize("package", LAYERS)
def test_each_package_says_what_it_may_import(package: str) -> None:
    doc = importlib.import_module(package).__doc__ or ""
    below = LAYERS[LAYERS.index(package) + 1 :]
    if below:
        assert "May import" in doc, package
        for layer in below:
            assert f"`{layer}`" in doc, (package, layer)
    else:
        assert "Imports nothing of ours" in doc, package
    for layer in LAYERS[: LAYERS.index(package)]:
        assert f"`{layer}`" not in doc.split("May import", 1)[-1], (package, layer)
