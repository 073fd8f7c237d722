"""The README's per-platform tables, generated from the platforms' specs
(`tasks/platforms/<platform>/spec.py`), so the front door cannot drift from the code:
`python -m deployments.platform_docs` rewrites them, `tests/unit/test_platform_docs.py` fails
when they differ."""

from __future__ import annotations

import sys
from datetime import timedelta
from pathlib import Path

from tasks.platforms.registry import PLATFORMS
from tasks.platforms.specs import LoginSpec, PlatformSpec, RefreshPolicy, platform_spec

README = Path(__file__).resolve().parent.parent / "README.md"
START, END = "<!-- connect-table:start -->", "<!-- connect-table:end -->"


def _duration(value: timedelta | None) -> str:
    if value is None:
        return "does not expire"
    if value >= timedelta(days=2):
        return f"{value.days} days"
    hours = value.total_seconds() / 3600
    return f"{hours:g} hours" if hours >= 1 else f"{value.total_seconds() / 60:g} minutes"


def _refresh(policy: RefreshPolicy | None) -> str:
    if policy is None:
        return "none: reconnect when refused"
    rule = f"{_duration(policy.before)} before expiry"
    if policy.min_age is not None:
        rule += f", once {_duration(policy.min_age)} old"
    if policy.needs_refresh_token:
        rule += "; without a refresh token, used until it expires"
    return rule


def _login_name(spec: PlatformSpec, login: LoginSpec) -> str:
    if len(spec.logins) == 1:
        return spec.title
    return f"{spec.title} ({login.name.capitalize()} Login)"


def _scopes(login: LoginSpec) -> str:
    if not login.scopes:
        return "handle + app password (no scopes)"
    parts = []
    for capability in ("identity", "text", "images", "video", "metrics", "refresh"):
        scopes = login.scopes.get(capability)  # type: ignore[call-overload]
        if scopes:
            parts.append(f"{capability}: {' '.join(f'`{s}`' for s in scopes)}")
    return "; ".join(parts)


def connect_table() -> str:
    """Markdown: per platform login, how it connects, the scopes per capability, the token's
    lifetime and when it is renewed, and the documents."""
    rows = [
        "| Platform | Connect | Scopes asked (per capability) | Granted scopes read from | "
        "Access token | Renewed | Docs |",
        "|---|---|---|---|---|---|---|",
    ]
    for name in PLATFORMS:
        spec = platform_spec(name)
        for login in spec.logins:
            connect = "authorization code" + (" + PKCE S256" if login.pkce else "")
            if login.authorize is None:
                connect = "handle + app password → session"
            docs = " ".join(f"[{i + 1}]({url})" for i, url in enumerate(login.docs))
            rows.append(
                f"| {_login_name(spec, login)} | {connect} | {_scopes(login)} | "
                f"{login.granted_scopes_from.replace('_', ' ')} | "
                f"{_duration(login.access_token_lifetime)} | {_refresh(login.refresh)} | {docs} |"
            )
    return "\n".join(rows)


def with_tables(text: str) -> str:
    """`text` with the block between the markers replaced by the generated table."""
    head, _, rest = text.partition(START)
    _, _, tail = rest.partition(END)
    return f"{head}{START}\n{connect_table()}\n{END}{tail}"


if __name__ == "__main__":
    current = README.read_text()
    updated = with_tables(current)
    if "--check" in sys.argv:
        sys.exit(0 if updated == current else 1)
    README.write_text(updated)
