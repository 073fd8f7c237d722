"""The demo data of `tendsocial dev`: a company with one account on each sandbox platform and a
media asset (created once, kept in `demo.json`), the accounts registered with the sandbox and our
OAuth apps there (on every start: the sandbox keeps nothing across restarts).

It runs in a child process of the supervisor (`seed_demo_in_child`), with the stack's
environment given to it like to every other child: the database and the token key are then the
stack's, and the supervisor's own environment is never changed."""

from __future__ import annotations

import json
import secrets
import subprocess
import sys
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx

from deployments.local_stack.core import DEMO_PLATFORMS, LocalStack, StackError
from deployments.local_stack.files import write_private_file

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from models.tables import SocialAccount

#: platform -> the settings naming our OAuth app there (id, secret).
APP_SETTINGS = {
    "linkedin": ("LINKEDIN_CLIENT_ID", "LINKEDIN_CLIENT_SECRET"),
    "x": ("X_CLIENT_ID", "X_CLIENT_SECRET"),
    "instagram": ("INSTAGRAM_APP_ID", "INSTAGRAM_APP_SECRET"),
    "facebook": ("FACEBOOK_APP_ID", "FACEBOOK_APP_SECRET"),
    "threads": ("THREADS_APP_ID", "THREADS_APP_SECRET"),
}
#: Our OAuth apps at the sandbox platforms under `tendsocial dev` (sandbox-only values; the seed
#: registers them there with the redirect URIs below), so `POST /api/accounts/connect` runs
#: locally end to end (docs/connecting-accounts.md).
LOCAL_OAUTH_APPS: dict[str, str] = {
    name: f"local-{platform}-{part}"
    for platform, names in APP_SETTINGS.items()
    for name, part in zip(names, ("app", "secret"), strict=True)
}
#: Where a local front end receives the platforms' redirects.
LOCAL_CONNECT_REDIRECT_URI = "http://localhost:3000/connect/callback"
#: The demo's file in the data folder (`tendsocial demo` reads it).
DEMO_FILE = "demo.json"


def create_demo_company(session: Session, *, sandbox_url: str) -> dict[str, Any]:
    """The demo company, an account on each sandbox platform and a media asset the sandbox
    serves; returns what `demo.json` keeps of them."""
    from models.settings import MediaSettings
    from models.tables import MediaAsset
    from tasks.administration import add_account, create_company
    from tasks.media import MediaPolicy

    # local development's egress policy: the demo accounts' servers are the sandbox on 127.0.0.1
    local_servers = MediaPolicy.from_settings(MediaSettings(MEDIA_ALLOW_PRIVATE_ADDRESSES=True))
    company = create_company(session, name="Demo Co")
    demo: dict[str, Any] = {"companyId": str(company.id), "apiKey": company.api_key, "accounts": {}}
    for index, platform in enumerate(DEMO_PLATFORMS):
        external = (
            f"did:plc:demo{uuid.uuid4().hex[:12]}" if platform == "bluesky" else str(10**11 + index)
        )
        account = add_account(
            session,
            company_id=company.id,
            platform=platform,
            handle=f"demo_{platform}",
            access_token=f"demo-{platform}-{secrets.token_hex(8)}",
            refresh_token=f"demo-{platform}-refresh-{secrets.token_hex(8)}",
            external_id=external,
            base_url=f"{sandbox_url}/{platform}" if platform in ("bluesky", "mastodon") else None,
            server_policy=local_servers,
        )
        demo["accounts"][platform] = str(account.id)
    media = MediaAsset(
        company_id=company.id,
        url=f"{sandbox_url}/_sandbox/media/demo.jpg",
        mime_type="image/jpeg",
    )
    session.add(media)
    session.flush()
    demo["mediaAssetId"] = str(media.id)
    return demo


def register_demo_accounts(sandbox: httpx.Client, accounts: Sequence[SocialAccount]) -> None:
    """Each account's tokens at the sandbox (which then accepts them), and the account active."""
    for account in accounts:
        sandbox.post(
            "/_sandbox/accounts",
            json={
                "platform": account.platform,
                "externalId": account.external_id,
                "handle": account.handle,
                "accessToken": account.access_token,
                "refreshToken": account.refresh_token,
            },
        ).raise_for_status()
        account.status = "active"


def register_oauth_apps(sandbox: httpx.Client, env: Mapping[str, str]) -> None:
    """Our OAuth apps at the sandbox platforms, as the stack's environment names them, with its
    redirect URIs (`ACCOUNT_CONNECT_REDIRECT_URIS`)."""
    redirect_uris = [
        uri.strip() for uri in env["ACCOUNT_CONNECT_REDIRECT_URIS"].split(",") if uri.strip()
    ]
    for platform, (id_name, secret_name) in APP_SETTINGS.items():
        sandbox.post(
            "/_sandbox/oauth/clients",
            json={
                "platform": platform,
                "clientId": env[id_name],
                "clientSecret": env[secret_name],
                "redirectUris": redirect_uris,
            },
        ).raise_for_status()


def seed_demo(
    *, data_dir: Path, api_url: str, sandbox_url: str, prefect_url: str, env: Mapping[str, str]
) -> dict[str, Any]:
    """Create the demo company once, register its accounts and our apps with the sandbox, and
    write `demo.json`. Reads the database and the token key from this process's settings: run
    it where they are the stack's (`seed_demo_in_child`)."""
    from sqlalchemy import select

    from models.database import sync_session
    from models.tables import SocialAccount

    demo_file = data_dir / DEMO_FILE
    demo: dict[str, Any] = json.loads(demo_file.read_text()) if demo_file.exists() else {}
    with sync_session() as session:
        if not demo:
            demo = create_demo_company(session, sandbox_url=sandbox_url)
            write_private_file(demo_file, json.dumps(demo, indent=2))
        accounts = session.scalars(
            select(SocialAccount).where(SocialAccount.company_id == uuid.UUID(demo["companyId"]))
        ).all()
        with httpx.Client(base_url=sandbox_url, timeout=10) as sandbox:
            register_demo_accounts(sandbox, accounts)
            register_oauth_apps(sandbox, env)
    demo |= {"apiUrl": api_url, "sandboxUrl": sandbox_url, "prefectUrl": prefect_url}
    write_private_file(demo_file, json.dumps(demo, indent=2))
    return demo


def seed_demo_in_child(stack: LocalStack, *, timeout: float = 120.0) -> dict[str, Any]:
    """Run `seed_demo` in a child process with the stack's environment; returns the demo (also
    kept in `stack.demo`)."""
    command = [
        sys.executable,
        "-m",
        "deployments.local_stack",
        "seed-demo",
        "--data-dir",
        str(stack.data_dir),
        "--api-url",
        stack.api_url,
        "--sandbox-url",
        stack.sandbox_url,
        "--prefect-url",
        stack.prefect_url,
    ]
    seeded = subprocess.run(
        command, env=stack.env, capture_output=True, text=True, timeout=timeout, check=False
    )
    if seeded.returncode != 0:
        raise StackError(f"seeding the demo company failed: {seeded.stderr.strip()[-300:]}")
    stack.demo = json.loads((stack.data_dir / DEMO_FILE).read_text())
    return stack.demo
