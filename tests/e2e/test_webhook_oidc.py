"""The webhook accepts only Cloud Tasks' own OIDC tokens: forged, expired, wrong-audience,
wrong-issuer or wrong-account tokens answer 401 and change nothing."""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime, timedelta

from google.auth import crypt, jwt
from sqlalchemy import select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from deployments.emulator.oidc import OidcSigner
from models.tables import PublishTarget
from tests.support import clients
from tests.support.emulator import EmulatorProcess
from tests.support.stacks import OIDC_AUDIENCE, OIDC_SERVICE_ACCOUNT, CloudStack
from tests.support.tenants import make_tenant, schedule


def test_only_genuine_tokens_pass(
    cloud_stack: CloudStack, cloud_emulator: EmulatorProcess, db: Engine, tmp_path: object
) -> None:
    tenant = make_tenant(cloud_stack, name="Oidc Co")
    post = schedule(
        cloud_stack,
        tenant,
        "x",
        content=f"Oidc {uuid.uuid4().hex[:6]}",
        at=datetime.now(UTC) + timedelta(days=2),
    )
    body = {
        "scheduledPostId": post["scheduledPostId"],
        "platform": "x",
        "accountId": str(tenant.accounts["x"]),
        "idempotencyKey": f"publish-{post['scheduledPostId']}-x-{tenant.accounts['x']}",
    }
    url = f"{cloud_stack.base_url}/api/jobs/publish-post"
    genuine = OidcSigner(key_dir=cloud_emulator.state, issuer=f"http://{cloud_emulator.host_port}")
    stranger = OidcSigner(
        key_dir=__import__("pathlib").Path(str(tmp_path)),
        issuer=f"http://{cloud_emulator.host_port}",
    )
    now = int(time.time())

    def signed(signer: OidcSigner, **claims: object) -> str:
        payload = {
            "iss": f"http://{cloud_emulator.host_port}",
            "aud": OIDC_AUDIENCE,
            "email": OIDC_SERVICE_ACCOUNT,
            "email_verified": True,
            "iat": now,
            "exp": now + 600,
            **claims,
        }
        key = crypt.RSASigner.from_string(signer._key_pem, key_id=signer.kid)
        return jwt.encode(key, payload).decode()

    refused = {
        "forged": signed(stranger),
        "expired": signed(genuine, iat=now - 7200, exp=now - 3600),
        "wrong audience": signed(genuine, aud="https://elsewhere.example/hook"),
        "called url as audience": signed(genuine, aud=url),
        "wrong issuer": signed(genuine, iss="https://accounts.example"),
        "wrong account": signed(genuine, email="intruder@evil.iam.gserviceaccount.com"),
        "unverified email": signed(genuine, email_verified=False),
        "garbage": "not.a.token",
    }
    for reason, token in refused.items():
        answer = clients.post(url, json=body, headers={"Authorization": f"Bearer {token}"})
        assert answer.status_code == 401, reason
        assert answer.json()["error"]["code"] == "unauthenticated", reason
    secret_only = clients.post(url, json=body, headers={"X-Webhook-Secret": "x" * 40})
    assert secret_only.status_code == 401  # this service accepts OIDC only
    with Session(db) as s:
        status = s.scalar(
            select(PublishTarget.status).where(
                PublishTarget.scheduled_post_id == uuid.UUID(post["scheduledPostId"])
            )
        )
    assert status == "pending"
    accepted = clients.post(
        url, json=body, headers={"Authorization": f"Bearer {signed(genuine)}"}, timeout=30
    )
    assert accepted.status_code == 200 and accepted.json()["status"] == "success"
