"""The admin CLI as a user runs it: a real process against the test database."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.engine import URL, Engine
from sqlalchemy.orm import Session

from models.tables import Company, SocialAccount
from tasks.administration import add_account, create_company
from tasks.api_keys import hash_api_key
from tasks.errors import InvalidRequestError, NotFoundError

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


def test_company_create_and_account_add(database_url: URL, db: Engine, tmp_path: Path) -> None:
    created = _run("company", "create", "CLI Co", "--json")
    assert created.returncode == 0, created.stderr
    company = json.loads(created.stdout)
    token_file = tmp_path / "token"
    token_file.write_text("tok-secret-1\n")
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
        f"@{token_file}",
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
        assert account.access_token == "tok-secret-1"


def test_unknown_platform_is_a_clear_error(database_url: URL, tmp_path: Path) -> None:
    company = json.loads(_run("company", "create", "Err Co", "--json").stdout)
    token_file = tmp_path / "token"
    token_file.write_text("t\n")
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
        f"@{token_file}",
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


def _add(company_id: str, *extra: str, token_file: Path) -> subprocess.CompletedProcess[str]:
    """`account add` of one LinkedIn account (external id `li-1`), its token read from a file."""
    return _run(
        *("account", "add", "--company", company_id, "--platform", "linkedin"),
        *("--handle", "acme", "--external-id", "li-1", "--access-token", f"@{token_file}"),
        *extra,
    )


def test_adding_an_existing_account_again_reconnects_it(
    database_url: URL, db: Engine, tmp_path: Path
) -> None:
    """Before: a duplicate traceback with the SQL and the ciphertext (security-3 N8)."""
    company = json.loads(_run("company", "create", "Twice Co", "--json").stdout)
    first_token, second_token = tmp_path / "first", tmp_path / "second"
    first_token.write_text("li-token-1\n")
    second_token.write_text("li-token-2\n")
    first = _add(company["id"], "--json", token_file=first_token)
    assert first.returncode == 0, first.stderr
    created = json.loads(first.stdout)
    assert created["created"] is True
    account_id = uuid.UUID(created["id"])
    with Session(db) as s, s.begin():
        account = s.get(SocialAccount, account_id)
        assert account is not None
        account.status, account.status_reason = "needs_reconnect", "revoked"

    again = _add(company["id"], "--token-expires-at", "2027-01-31", token_file=second_token)

    assert again.returncode == 0, again.stderr
    (line,) = again.stdout.strip().splitlines()
    assert (
        line.startswith("updated the existing linkedin account @acme") and str(account_id) in line
    )
    assert again.stderr == ""
    with Session(db) as s:
        rows = s.scalars(
            select(SocialAccount).where(SocialAccount.company_id == uuid.UUID(company["id"]))
        ).all()
    assert [r.id for r in rows] == [account_id]
    (account,) = rows
    assert (account.access_token, account.status, account.status_reason) == (
        "li-token-2",
        "active",
        None,
    )
    assert account.token_expires_at is not None and account.token_expires_at.year == 2027
    as_json = _add(company["id"], "--json", token_file=second_token)
    assert json.loads(as_json.stdout) == {
        "id": str(account_id),
        "platform": "linkedin",
        "created": False,
    }


def _accounts_of(db: Engine, company_id: str) -> list[SocialAccount]:
    with Session(db) as s:
        return list(
            s.scalars(
                select(SocialAccount).where(SocialAccount.company_id == uuid.UUID(company_id))
            )
        )


def test_a_token_on_the_command_line_is_refused_with_one_line_and_nothing_stored(
    database_url: URL, db: Engine, tmp_path: Path
) -> None:
    """A literal token would show in `ps` and the shell history, so it is not taken at all; the
    one line says how to pass it instead."""
    company = json.loads(_run("company", "create", "Literal Co", "--json").stdout)
    token_file = tmp_path / "token"
    token_file.write_text("tok-from-file\n")
    base = ("account", "add", "--company", company["id"], "--platform", "x", "--handle", "lit")
    for option, literal, others in (
        ("--access-token", "tok-literal-access", ()),
        ("--refresh-token", "tok-literal-refresh", ("--access-token", f"@{token_file}")),
    ):
        refused = _run(*base, *others, option, literal, "--json")
        assert refused.returncode == 2, (option, refused.stdout, refused.stderr)
        (line,) = refused.stderr.strip().splitlines()
        assert line.startswith(f"error: {option} takes no token on the command line"), line
        assert "`-`" in line and "standard input" in line and "`@FILE`" in line
        assert refused.stdout == ""
        assert literal not in refused.stdout + refused.stderr
    assert _accounts_of(db, company["id"]) == []


def test_a_token_source_that_gives_nothing_is_one_line_and_nothing_stored(
    database_url: URL, db: Engine, tmp_path: Path
) -> None:
    company = json.loads(_run("company", "create", "Nothing Co", "--json").stdout)
    base = ("account", "add", "--company", company["id"], "--platform", "x", "--handle", "none")
    missing = _run(*base, "--access-token", f"@{tmp_path / 'absent'}")
    assert missing.returncode == 2
    (line,) = missing.stderr.strip().splitlines()
    assert (
        line
        == f"error: --access-token: cannot read {tmp_path / 'absent'}: No such file or directory"
    )
    empty_stdin = subprocess.run(
        [sys.executable, "-m", "deployments", *base, "--access-token", "-"],
        input="\n",
        capture_output=True,
        text=True,
        timeout=60,
        env=os.environ.copy(),
        check=False,
    )
    assert empty_stdin.returncode == 2
    assert empty_stdin.stderr.strip() == "error: --access-token: the token read is empty"
    assert _accounts_of(db, company["id"]) == []


def test_token_expiry_takes_every_iso_8601_form(
    database_url: URL, db: Engine, tmp_path: Path
) -> None:
    company = json.loads(_run("company", "create", "Dates Co", "--json").stdout)
    token = tmp_path / "token"
    token.write_text("li-token\n")
    forms = {
        "2027-01-31T12:00:00.250Z": datetime(2027, 1, 31, 12, 0, 0, 250000, tzinfo=UTC),
        "2027-01-31T12:00:00+00:00": datetime(2027, 1, 31, 12, tzinfo=UTC),
        "2027-01-31T12:00:00+0530": datetime(2027, 1, 31, 6, 30, tzinfo=UTC),
        "2027-01-31": datetime(2027, 1, 31, tzinfo=UTC),
        "2027-01-31T12:00:00": datetime(2027, 1, 31, 12, tzinfo=UTC),  # naive: UTC
        "2027-01-31T12:00Z": datetime(2027, 1, 31, 12, tzinfo=UTC),
    }
    for form, expected in forms.items():
        added = _add(company["id"], "--token-expires-at", form, "--json", token_file=token)
        assert added.returncode == 0, (form, added.stderr)
        with Session(db) as s:
            account = s.get(SocialAccount, uuid.UUID(json.loads(added.stdout)["id"]))
            assert account is not None
            assert account.token_expires_at == expected, form


def test_a_bad_date_or_a_database_refusal_is_one_line(
    database_url: URL, db: Engine, tmp_path: Path
) -> None:
    company = json.loads(_run("company", "create", "Refused Co", "--json").stdout)
    token = tmp_path / "token"
    token.write_text("li-secret-token\n")
    bad_date = _add(company["id"], "--token-expires-at", "31/01/2027", token_file=token)
    assert bad_date.returncode == 2
    (line,) = bad_date.stderr.strip().splitlines()
    assert line.startswith("error: --token-expires-at:") and "31/01/2027" in line

    too_long = _run(
        *("account", "add", "--company", company["id"], "--platform", "linkedin"),
        *("--handle", "h" * 300, "--access-token", f"@{token}"),
    )
    assert too_long.returncode == 2
    (line,) = too_long.stderr.strip().splitlines()
    assert line.startswith("error: the database refused the account:")
    assert "INSERT" not in line and "li-secret-token" not in too_long.stdout + too_long.stderr
    with Session(db) as s:
        stored = s.scalars(
            select(SocialAccount).where(SocialAccount.company_id == uuid.UUID(company["id"]))
        ).all()
    assert stored == []


def test_refusals_are_use_case_errors_naming_the_field(db: Engine) -> None:
    """What the CLI prints as one line is a use-case error (code and field), still a
    ValueError for callers that catch that."""
    with Session(db) as session:
        with pytest.raises(InvalidRequestError) as blank:
            create_company(session, name="  ")
        assert (blank.value.code, blank.value.field) == ("invalid_name", "name")
        with pytest.raises(NotFoundError) as missing:
            add_account(
                session, company_id=uuid.uuid4(), platform="x", handle="h", access_token="t"
            )
        assert isinstance(missing.value, ValueError)
        company = create_company(session, name="Errors Co")
        with pytest.raises(InvalidRequestError) as unknown:
            add_account(
                session, company_id=company.id, platform="myspace", handle="h", access_token="t"
            )
        assert unknown.value.field == "platform"
        assert str(unknown.value).startswith("unknown platform 'myspace'")
        with pytest.raises(InvalidRequestError, match="no server of their own"):
            add_account(
                session,
                company_id=company.id,
                platform="x",
                handle="h",
                access_token="t",
                base_url="https://x.example",
            )
        session.rollback()
