"""The admin CLI as a user runs it: a real process against the test database."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.engine import URL, Engine
from sqlalchemy.orm import Session

from dispatch.auth import hash_api_key
from models.tables import Company, SocialAccount

pytestmark = pytest.mark.slow  # runs the CLI as processes: not in the fast lane


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "deployments", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=os.environ.copy(),
        check=False,
    )


def test_company_create_and_account_add(database_url: URL, db: Engine) -> None:
    created = _run("company", "create", "CLI Co", "--json")
    assert created.returncode == 0, created.stderr
    company = json.loads(created.stdout)
    added = _run(
        "account",
        "add",
        "--company",
        company["id"],
        "--platform",
        "mastodon",
        "--handle",
        "cli",
        "--access-token",
        "tok-secret-1",
        "--refresh-token",
        "",
        "--base-url",
        # a public address: the server passes the egress guard without DNS (none in CI)
        "https://1.1.1.1/",
        "--external-id",
        "1234",
        "--json",
    )
    assert added.returncode == 0, added.stderr
    account_id = uuid.UUID(json.loads(added.stdout)["id"])
    assert "tok-secret-1" not in added.stdout + added.stderr
    with Session(db) as s:
        stored_company = s.get(Company, uuid.UUID(company["id"]))
        assert stored_company is not None
        assert stored_company.api_key_hash == hash_api_key(company["apiKey"])
        account = s.scalar(select(SocialAccount).where(SocialAccount.id == account_id))
        assert account is not None
        assert (account.platform, account.external_id, account.base_url) == (
            "mastodon",
            "1234",
            "https://1.1.1.1",
        )
        assert account.refresh_token is None  # an empty refresh token stores nothing


def test_unknown_platform_is_a_clear_error(database_url: URL) -> None:
    company = json.loads(_run("company", "create", "Err Co", "--json").stdout)
    answer = _run(
        "account",
        "add",
        "--company",
        company["id"],
        "--platform",
        "myspace",
        "--handle",
        "h",
        "--access-token",
        "t",
    )
    assert answer.returncode == 2
    assert "unknown platform" in answer.stderr


def test_tokens_can_come_from_standard_input_or_a_file(
    database_url: URL, db: Engine, tmp_path: Path
) -> None:
    """Tokens need not be command-line arguments (visible in `ps` and the shell history)."""
    company = json.loads(_run("company", "create", "Stdin Co", "--json").stdout)
    refresh_file = tmp_path / "refresh"
    refresh_file.write_text("rt-from-file\n")
    added = subprocess.run(
        [
            *(sys.executable, "-m", "deployments", "account", "add", "--company", company["id"]),
            *("--platform", "x", "--handle", "stdin", "--access-token", "-"),
            *("--refresh-token", f"@{refresh_file}", "--json"),
        ],
        input="at-from-stdin\n",
        capture_output=True,
        text=True,
        timeout=60,
        env=os.environ.copy(),
        check=False,
    )
    assert added.returncode == 0, added.stderr
    account_id = uuid.UUID(json.loads(added.stdout)["id"])
    with Session(db) as s:
        account = s.get(SocialAccount, account_id)
        assert account is not None
        assert (account.access_token, account.refresh_token) == ("at-from-stdin", "rt-from-file")
