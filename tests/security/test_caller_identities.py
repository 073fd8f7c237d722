"""Callers and identities line up (production wiring: every caller identity accepted, nothing more).

The webhooks accept OIDC tokens from every listed caller identity (the tasks AND the scheduler
service accounts), for one fixed audience only (never derived from the request's Host header),
`WEBHOOK_AUTH=both` requires both proofs, two secrets are accepted during a rotation, and in
production (OIDC alone) no secret travels inside the tasks the app creates.

Tokens are signed by the emulator's OIDC signer (`deployments/emulator/oidc.py`) and verified by
the app against that signer's `/certs` endpoint over real HTTP; the app runs on real PostgreSQL.
An authenticated call for a publish target that does not exist answers 404 ("no such publish
target"), an unauthenticated one 401: the status tells whether the caller check passed.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

import pytest
from google.auth import crypt, jwt
from sqlalchemy.engine import URL

from deployments.emulator.oidc import OidcSigner
from dispatch.app import create_app
from models.settings import QueueSettings, WebhookSettings
from models.tables import PublishTarget
from tasks.cloud_tasks import CloudTasksQueue, InMemoryTaskQueue
from tasks.task_specs import WebhookTarget, publish_task_spec, sync_child_task_spec
from tests.support import clients
from tests.support.servers import certs_server, serve_in_thread
from tests.support.settings import make_settings

TASKS_SA = "tendsocial-tasks@proj.iam.gserviceaccount.com"
SCHEDULER_SA = "tendsocial-scheduler@proj.iam.gserviceaccount.com"
STRANGER_SA = "tendsocial-api@proj.iam.gserviceaccount.com"  # a real account, but not a caller
AUDIENCE = "https://tendsocial-jobs-123456789.us-central1.run.app"
SECRET = "s" * 20 + "-current-secret-0123456789"
OLD_SECRET = "p" * 20 + "-previous-secret-012345678"
ISSUER = "https://accounts.google.com"

UNKNOWN_TARGET = {
    "scheduledPostId": "00000000-0000-0000-0000-000000000000",
    "platform": "x",
    "accountId": "00000000-0000-0000-0000-000000000000",
    "idempotencyKey": "publish-none",
}


@pytest.fixture(scope="module")
def signer(tmp_path_factory: pytest.TempPathFactory) -> OidcSigner:
    return OidcSigner(key_dir=tmp_path_factory.mktemp("oidc"), issuer=ISSUER)


@pytest.fixture(scope="module")
def certs_url(signer: OidcSigner) -> Iterator[str]:
    """The signer's certificates over HTTP, as the app fetches Google's."""
    with certs_server(signer) as url:
        yield url


def token(signer: OidcSigner, **claims: object) -> str:
    now = int(time.time())
    payload = {
        "iss": ISSUER,
        "aud": AUDIENCE,
        "email": TASKS_SA,
        "email_verified": True,
        "iat": now,
        "exp": now + 600,
        **claims,
    }
    key = crypt.RSASigner.from_string(signer._key_pem, key_id=signer.kid)
    return jwt.encode(key, payload).decode()


@contextmanager
def webhook(settings: WebhookSettings) -> Iterator[str]:
    """The app as production builds it (in-memory queue), served over HTTP; yields the URL of
    the publish webhook."""
    app = create_app(settings=make_settings(webhooks=settings), queue=InMemoryTaskQueue())
    with serve_in_thread(app) as base_url:
        yield f"{base_url}/api/jobs/publish-post"


def call(url: str, **headers: str) -> int:
    return clients.post(url, json=UNKNOWN_TARGET, headers=headers, timeout=30).status_code


def oidc_settings(certs_url: str, **overrides: object) -> WebhookSettings:
    values: dict[str, object] = {
        "WEBHOOK_AUTH": "oidc",
        "TASKS_OIDC_SERVICE_ACCOUNT": TASKS_SA,
        "TASKS_OIDC_SERVICE_ACCOUNTS": [SCHEDULER_SA],
        "TASKS_OIDC_AUDIENCE": AUDIENCE,
        "OIDC_CERTS_URL": certs_url,
        "OIDC_ISSUERS": [ISSUER],
    }
    return WebhookSettings(**(values | overrides))  # type: ignore[arg-type]


def test_every_listed_caller_identity_is_accepted_and_no_other(
    database_url: URL, signer: OidcSigner, certs_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Configured the way the Cloud Run services are: environment variables, a comma list.
    monkeypatch.setenv("WEBHOOK_AUTH", "oidc")
    monkeypatch.setenv("TASKS_OIDC_SERVICE_ACCOUNT", TASKS_SA)
    monkeypatch.setenv("TASKS_OIDC_SERVICE_ACCOUNTS", f" {SCHEDULER_SA} ,, ")
    monkeypatch.setenv("TASKS_OIDC_AUDIENCE", AUDIENCE)
    monkeypatch.setenv("OIDC_CERTS_URL", certs_url)
    monkeypatch.setenv("OIDC_ISSUERS", f'["{ISSUER}"]')
    settings = WebhookSettings()
    assert settings.oidc_callers == {TASKS_SA, SCHEDULER_SA}
    with webhook(settings) as url:
        assert call(url, Authorization=f"Bearer {token(signer, email=TASKS_SA)}") == 404
        assert call(url, Authorization=f"Bearer {token(signer, email=SCHEDULER_SA)}") == 404
        assert call(url, Authorization=f"Bearer {token(signer, email=STRANGER_SA)}") == 401
        assert call(url, Authorization=f"Bearer {token(signer, email_verified=False)}") == 401
        assert call(url) == 401


def test_the_audience_is_fixed_never_taken_from_the_request(
    database_url: URL, signer: OidcSigner, certs_url: str, tmp_path: Path
) -> None:
    forger = OidcSigner(key_dir=tmp_path, issuer=ISSUER)  # same claims, another key
    with webhook(oidc_settings(certs_url)) as url:
        assert call(url, Authorization=f"Bearer {token(forger)}") == 401
        # What the old Host-header fallback accepted: the called URL, or a rewritten Host.
        called = token(signer, aud=url)
        assert call(url, Authorization=f"Bearer {called}") == 401
        other = token(signer, aud="http://other-service.example/api/jobs/publish-post")
        assert call(url, Authorization=f"Bearer {other}", Host="other-service.example") == 401
        assert call(url, Authorization=f"Bearer {token(signer)}") == 404


@pytest.mark.parametrize("mode", ["oidc", "both"])
def test_oidc_without_a_fixed_audience_or_a_caller_refuses_to_start(
    mode: str, certs_url: str
) -> None:
    secret = {"WEBHOOK_SECRET": SECRET} if mode == "both" else {}
    no_audience = oidc_settings(certs_url, WEBHOOK_AUTH=mode, TASKS_OIDC_AUDIENCE=None, **secret)
    with pytest.raises(RuntimeError, match="TASKS_OIDC_AUDIENCE"):
        create_app(settings=make_settings(webhooks=no_audience), queue=InMemoryTaskQueue())
    no_caller = oidc_settings(
        certs_url,
        WEBHOOK_AUTH=mode,
        TASKS_OIDC_SERVICE_ACCOUNT=None,
        TASKS_OIDC_SERVICE_ACCOUNTS=[],
        **secret,
    )
    with pytest.raises(RuntimeError, match="TASKS_OIDC_SERVICE_ACCOUNT"):
        create_app(settings=make_settings(webhooks=no_caller), queue=InMemoryTaskQueue())


def test_both_mode_requires_both_proofs(
    database_url: URL, signer: OidcSigner, certs_url: str
) -> None:
    settings = oidc_settings(certs_url, WEBHOOK_AUTH="both", WEBHOOK_SECRET=SECRET)
    bearer = f"Bearer {token(signer)}"
    with webhook(settings) as url:
        assert call(url, **{"X-Webhook-Secret": SECRET}) == 401
        assert call(url, Authorization=bearer) == 401
        assert call(url, Authorization=bearer, **{"X-Webhook-Secret": "x" * 40}) == 401
        assert call(url, Authorization=bearer, **{"X-Webhook-Secret": SECRET}) == 404


def test_two_secrets_are_accepted_during_a_rotation(database_url: URL) -> None:
    settings = WebhookSettings(
        WEBHOOK_AUTH="secret", WEBHOOK_SECRET=SECRET, WEBHOOK_SECRET_PREVIOUS=OLD_SECRET
    )
    with webhook(settings) as url:
        assert call(url, **{"X-Webhook-Secret": SECRET}) == 404
        assert call(url, **{"X-Webhook-Secret": OLD_SECRET}) == 404
        assert call(url, **{"X-Webhook-Secret": OLD_SECRET[:-1] + "9"}) == 401
    # Rotation finished: the previous secret is unset and refused again.
    with webhook(WebhookSettings(WEBHOOK_AUTH="secret", WEBHOOK_SECRET=SECRET)) as url:
        assert call(url, **{"X-Webhook-Secret": OLD_SECRET}) == 401
    with pytest.raises(RuntimeError, match="WEBHOOK_SECRET_PREVIOUS"):
        create_app(
            settings=make_settings(WEBHOOK_SECRET=SECRET, WEBHOOK_SECRET_PREVIOUS="short"),
            queue=InMemoryTaskQueue(),
        )


def test_webhooks_switched_off_answer_404_even_to_a_genuine_caller(
    database_url: URL, signer: OidcSigner, certs_url: str
) -> None:
    with webhook(oidc_settings(certs_url, WEBHOOKS_ENABLED=False)) as url:
        assert call(url, Authorization=f"Bearer {token(signer)}") == 404
        assert call(url) == 404


def test_production_tasks_carry_the_oidc_identity_and_audience_and_no_secret(
    monkeypatch: pytest.MonkeyPatch, certs_url: str
) -> None:
    """What the app enqueues is what it accepts: OIDC as the tasks account, for the fixed
    audience, and no `X-Webhook-Secret` (readable by anyone with Cloud Tasks full view)."""
    monkeypatch.setenv("TASKS_OIDC_SERVICE_ACCOUNT", TASKS_SA)
    monkeypatch.setenv("TASKS_OIDC_AUDIENCE", AUDIENCE)
    # A secret left in the environment must still not be copied into tasks in oidc mode.
    settings = oidc_settings(certs_url, WEBHOOK_SECRET=SECRET, WEBHOOK_URL=AUDIENCE)
    target = PublishTarget(
        scheduled_post_id=uuid.uuid4(),
        platform="x",
        account_id=uuid.uuid4(),
        idempotency_key="publish-k",
        dispatch_generation=0,
    )
    webhook, queues = WebhookTarget.from_settings(settings), QueueSettings()
    specs = [
        publish_task_spec(target=target, run_at=None, webhook=webhook, queues=queues),
        sync_child_task_spec(
            job_id=uuid.uuid4(),
            idempotency_key="scheduled",
            platform="x",
            scheduled_for=datetime.now(UTC),
            run_at=None,
            webhook=webhook,
            queues=queues,
        ),
    ]
    queue = CloudTasksQueue(queues)
    for spec in specs:
        assert "X-Webhook-Secret" not in spec.headers
        request = queue.build_task(spec).http_request
        assert "X-Webhook-Secret" not in request.headers
        assert request.oidc_token.service_account_email in settings.oidc_callers
        assert request.oidc_token.audience == settings.oidc_audience
        assert request.url.startswith(AUDIENCE + "/api/jobs/")


def test_secret_mode_still_sends_the_secret(certs_url: str) -> None:
    """The local stack (secret mode) keeps working: tasks carry the current secret."""
    settings = WebhookSettings(WEBHOOK_SECRET=SECRET, WEBHOOK_SECRET_PREVIOUS=OLD_SECRET)
    spec = sync_child_task_spec(
        job_id=uuid.uuid4(),
        idempotency_key="k",
        platform="x",
        scheduled_for=datetime.now(UTC),
        run_at=None,
        webhook=WebhookTarget.from_settings(settings),
        queues=QueueSettings(),
    )
    assert spec.headers["X-Webhook-Secret"] == SECRET
