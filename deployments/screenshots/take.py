"""Re-take the README screenshots from a fresh local stack, with headless Chromium.

    .venv/bin/python -m deployments.screenshots.take   # writes deployments/screenshots/*.png

Starts `tendsocial dev` on free ports with a data folder of its own (a temporary one), runs
`tendsocial demo` and `tendsocial demo --fail instagram`, triggers an analytics sync the Cloud
Scheduler way, applies the data team's views, waits until the reporter has shipped every run to
Prefect (polling Prefect's API), then photographs the Prefect UI and the demo's terminal output,
and stops the stack with SIGINT (what Ctrl-C does). Needs `chromium` on the PATH (Debian:
`apt-get install -y chromium fonts-noto-color-emoji`, the latter for the demo's ✅/❌).

The stack's Prefect asks every client for its auth string (`prefect-auth` in the data folder,
`deployments/prefect_server.py`): the API calls here send it, and Chromium goes through
`signing_proxy`, which adds it to the requests for the Prefect server, so the UI shows its pages
rather than its sign-in page (it asks only when a call answers 401).

Each page gets Chromium's virtual-time budget to settle (the UI polls its API, so a page never
goes idle); the PNGs are checked to exist and stay under `MAX_PNG_BYTES`. Look at them before
committing: a spinner instead of content means the budget was too short for this machine
(`--budget-ms`).
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import io
import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx

HERE = Path(__file__).resolve().parent
MAX_PNG_BYTES = 400_000
COLUMNS = 100
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
    "--run-all-compositor-stages-before-draw",
)
CLI = [sys.executable, "-m", "deployments"]


def free_ports() -> dict[str, int]:
    """Free ports for the stack; the emulator's must have a free neighbour (its OIDC
    certificates listen on port + 1, `deployments/local_stack/core.py`, `Ports.named`)."""
    from deployments.prefect_server import free_port

    def pair_free(port: int) -> bool:
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port + 1))
            except OSError:
                return False
        return True

    emulator = next(port for port in iter(free_port, None) if pair_free(port))
    return {
        "api": free_port(),
        "emulator": emulator,
        "sandbox": free_port(),
        "prefect": free_port(),
    }


def wait_for(what: str, check: Callable[[], Any], *, timeout: float) -> Any:
    """Poll `check` until it returns something truthy."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = check()
        if result:
            return result
        time.sleep(0.5)
    raise TimeoutError(f"gave up waiting for {what} after {timeout:.0f} s")


class Prefect:
    def __init__(self, ui_url: str, *, headers: dict[str, str]) -> None:
        self.ui_url = ui_url
        self.http = httpx.Client(base_url=f"{ui_url}/api", timeout=10, headers=headers)

    def post(self, path: str, body: dict[str, Any]) -> Any:
        answer = self.http.post(path, json=body)
        answer.raise_for_status()
        return answer.json()

    def flow_id(self, name: str) -> str:
        return self.post("/flows/filter", {"flows": {"name": {"any_": [name]}}})[0]["id"]

    def runs(self, **flow_run_filter: Any) -> list[dict[str, Any]]:
        body = {"flow_runs": flow_run_filter, "limit": 200, "sort": "START_TIME_DESC"}
        return self.post("/flow_runs/filter", body)

    def settled(self, runs: list[dict[str, Any]], count: int) -> list[dict[str, Any]] | None:
        final = [r for r in runs if r["state_type"] in ("COMPLETED", "FAILED", "CRASHED")]
        return runs if len(final) >= count else None


def final_frame(ansi: str) -> str:
    """What a terminal shows at the end of `ansi`: rich's live display redraws its table by
    moving the cursor up (ESC[1A) and erasing lines (ESC[2K); colours (SGR) are kept for rich.
    A few lines instead of a terminal emulator: these are the only controls rich's Live and
    console emit here (checked on the demo's output)."""
    lines: list[str] = [""]
    row = 0
    for token in re.split(r"(\x1b\[[0-9;?]*[A-Za-z]|\r|\n)", ansi):
        if not token:
            continue
        if token == "\n":
            row += 1
            if row == len(lines):
                lines.append("")
        elif token == "\r":
            continue  # a terminal's \r\n, or the return before an erase: no text follows it
        elif token == "\x1b[1A":
            row = max(row - 1, 0)
        elif token == "\x1b[2K":
            lines[row] = ""
        elif token.startswith("\x1b[") and token.endswith("m"):
            lines[row] += token
        elif token.startswith("\x1b["):
            continue  # cursor show/hide
        else:
            lines[row] += token
    return "\n".join(lines).rstrip("\n") + "\n"


def terminal_html(ansi: str, *, title: str) -> str:
    """The demo's output as an HTML page that looks like the terminal (rich's own exporter)."""
    from rich.console import Console
    from rich.terminal_theme import MONOKAI
    from rich.text import Text

    console = Console(record=True, width=COLUMNS, file=io.StringIO(), force_terminal=True)
    # Wrapped at the terminal's width as a terminal would (rich counts an emoji as 2 cells).
    console.print(Text.from_ansi(final_frame(ansi), overflow="fold"))
    template = (
        "<!DOCTYPE html><html><head><meta charset='utf-8'><title>"
        + title
        + "</title><style>body{{margin:0;background:{background};color:{foreground}}}"
        "pre{{margin:0;padding:18px 22px;font:15px/1.15 'DejaVu Sans Mono',monospace}}"
        "</style></head><body><pre><code>{code}</code></pre></body></html>"
    )
    return console.export_html(theme=MONOKAI, inline_styles=True, code_format=template)


#: Headers a proxy never forwards (RFC 9110, section 7.6.1), and the length it sets itself.
_HOP_BY_HOP = {
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "content-length",
}


@contextlib.contextmanager
def signing_proxy(*, port: int, headers: dict[str, str]) -> Iterator[str]:
    """A forward HTTP proxy on 127.0.0.1 for Chromium that adds `headers` to its requests for
    127.0.0.1:`port` (the Prefect server) and passes everything else on as it is; yields its
    URL. Plain HTTP only: the pages photographed need nothing else."""

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def forward(self) -> None:
            url = urlsplit(self.path)  # a proxy gets the absolute URL
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else None
            sent = {k: v for k, v in self.headers.items() if k.lower() not in _HOP_BY_HOP}
            if url.port == port and url.hostname in ("127.0.0.1", "localhost"):
                sent.update(headers)
            target = http.client.HTTPConnection(url.hostname or "", url.port or 80, timeout=60)
            try:
                target.request(
                    self.command,
                    url.path + (f"?{url.query}" if url.query else "") or "/",
                    body=body,
                    headers=sent,
                )
                answer = target.getresponse()
                data = answer.read()
            except OSError:  # Chromium's own calls to the internet: nothing answers here
                self.send_error(502)
                return
            finally:
                target.close()
            self.send_response(answer.status, answer.reason)
            for name, value in answer.getheaders():
                if name.lower() not in _HOP_BY_HOP:
                    self.send_header(name, value)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_OPTIONS = forward

        def log_message(self, format: str, *args: Any) -> None:
            return  # the requests carry the auth string: not on the console

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def chromium_shot(
    url: str, png: Path, *, size: str, budget_ms: int, expect: str, proxy: str | None = None
) -> None:
    """Photograph `url`; retried with a longer budget until the page's DOM at the moment of
    the photo holds `expect` (the UI fades in its lists after its API calls return). With
    `proxy`, loopback too goes through it (Chromium bypasses proxies for loopback by default)."""
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if not browser:
        raise SystemExit("chromium is not installed (apt-get install -y chromium)")
    through = [f"--proxy-server={proxy}", "--proxy-bypass-list=<-loopback>"] if proxy else []
    for attempt in range(1, 5):
        with tempfile.TemporaryDirectory(prefix="tendsocial-chromium-") as profile:
            done = subprocess.run(
                [
                    browser,
                    *CHROMIUM_FLAGS,
                    *through,
                    f"--user-data-dir={profile}",
                    f"--window-size={size}",
                    f"--virtual-time-budget={budget_ms * attempt}",
                    f"--screenshot={png}",
                    "--dump-dom",
                    url,
                ],
                check=True,
                capture_output=True,
                timeout=180,
            )
        if expect in done.stdout.decode(errors="replace"):
            break
        print(f"  {png.name}: no {expect!r} on the page yet, again with a longer budget")
    else:
        raise SystemExit(f"{url} never showed {expect!r}")
    if not png.exists() or png.stat().st_size > MAX_PNG_BYTES:
        raise SystemExit(f"{png}: missing or over {MAX_PNG_BYTES} bytes")
    print(f"  {png.name}: {png.stat().st_size // 1000} KB  ← {url}")


def run_cli(*args: str, env: dict[str, str], terminal: bool = False) -> str:
    """Run a `tendsocial` command; with `terminal`, under a pseudo-terminal (util-linux
    `script`), so rich draws exactly what a user's terminal gets (colours, live redraws)."""
    command = [*CLI, *args]
    if terminal:
        command = ["script", "-qec", shlex.join(command), "/dev/null"]
    extra = {"COLUMNS": str(COLUMNS), "LINES": "40", "TERM": "xterm-256color"}
    done = subprocess.run(command, env=env | extra, capture_output=True, timeout=180, check=True)
    # Bytes, decoded as is: text mode would turn the lone \r of a live redraw into a newline.
    return (done.stdout + done.stderr).decode()


def take(out: Path, *, budget_ms: int) -> None:
    data = Path(tempfile.mkdtemp(prefix="tendsocial-shots-"))
    ports = free_ports()
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "PREFECT_API_URL")}
    env["TENDSOCIAL_DATA_DIR"] = str(data)
    log = (data / "dev.log").open("w")
    dev = subprocess.Popen(
        [
            *CLI,
            "dev",
            f"--data-dir={data}",
            f"--api-port={ports['api']}",
            f"--emulator-port={ports['emulator']}",
            f"--sandbox-port={ports['sandbox']}",
            f"--prefect-port={ports['prefect']}",
        ],
        env=env | {"COLUMNS": str(COLUMNS)},
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:

        def stack_ready() -> bool:
            if dev.poll() is not None:
                raise SystemExit(f"tendsocial dev exited: {(data / 'dev.log').read_text()}")
            return "Try it" in (data / "dev.log").read_text()

        wait_for("tendsocial dev", stack_ready, timeout=240)
        from deployments.prefect_server import authorization_header

        signed = authorization_header((data / "prefect-auth").read_text().strip())
        prefect = Prefect(f"http://127.0.0.1:{ports['prefect']}", headers=signed)
        api = f"http://127.0.0.1:{ports['api']}"
        print(f"stack up (data folder {data}); running the demos and a sync")
        run_cli("demo", f"--data-dir={data}", env=env)
        failing = run_cli(
            "demo", f"--data-dir={data}", "--fail", "instagram", env=env, terminal=True
        )
        secret = (data / "webhook-secret").read_text().strip()
        sync = httpx.post(
            f"{api}/api/jobs/sync-analytics",
            headers={"X-Webhook-Secret": secret},
            json={"idempotencyKey": "readme"},
            timeout=30,
        )
        sync.raise_for_status()
        children = sync.json()["jobsCreated"]
        run_cli("flows", "views", "apply", env=env | {"PREFECT_API_URL": f"{prefect.ui_url}/api"})

        post_id = re.search(r"tag=post:([0-9a-f-]{36})", failing).group(1)  # type: ignore[union-attr]
        failed_post = wait_for(
            "the failing demo's 3 runs",
            lambda: prefect.settled(prefect.runs(tags={"all_": [f"post:{post_id}"]}), 3),
            timeout=120,
        )
        wait_for(
            "6 publish runs",
            lambda: prefect.settled(
                prefect.post(
                    "/flow_runs/filter",
                    {"flows": {"name": {"any_": ["publish-post"]}}, "limit": 50},
                ),
                6,
            ),
            timeout=120,
        )
        parent = wait_for(
            "the sync parent",
            lambda: prefect.settled(prefect.runs(tags={"all_": ["trigger:readme"]}), 1),
            timeout=120,
        )[0]
        wait_for(
            f"its {children} children",
            lambda: prefect.settled(
                prefect.runs(parent_flow_run_id={"any_": [parent["id"]]}), children
            ),
            timeout=120,
        )
        instagram = next(r for r in failed_post if "platform:instagram" in r["tags"])

        out.mkdir(parents=True, exist_ok=True)
        key = json.loads((data / "demo.json").read_text())["apiKey"]
        (data / "demo-fail-instagram.ansi").write_text(failing)
        html = data / "demo-fail-instagram.html"
        page = terminal_html(
            "$ tendsocial demo --fail instagram\n" + failing.replace(key, "ts_…"),
            title="tendsocial demo --fail instagram",
        )
        html.write_text(page)
        print("screenshots:")
        ui = prefect.ui_url
        publish_flow = prefect.flow_id("publish-post")
        run_name = instagram["name"]
        shots = [
            (f"{ui}/runs?flow={publish_flow}", "prefect-runs.png", "1440,1290", run_name),
            (
                f"{ui}/runs/flow-run/{instagram['id']}",
                "prefect-publish-run.png",
                "1440,900",
                "step ",
            ),
            (f"{ui}/runs/flow-run/{parent['id']}", "prefect-sync-run.png", "1440,860", "child job"),
            (
                f"{ui}/runs?flow={publish_flow}&tag=platform:instagram&state=Failed"
                "&type=span&seconds=-604800",  # = the saved filter of failed Instagram publishes
                "prefect-saved-filter.png",
                "1440,900",
                run_name,
            ),
            (f"{ui}/deployments", "prefect-deployments.png", "1600,520", "sync-analytics-every-6h"),
            (html.as_uri(), "demo-fail-instagram.png", "1000,360", "platforms published"),
        ]
        with signing_proxy(port=ports["prefect"], headers=signed) as proxy:
            for url, name, size, expect in shots:
                chromium_shot(
                    url, out / name, size=size, budget_ms=budget_ms, expect=expect, proxy=proxy
                )
    finally:
        if dev.poll() is None:
            dev.send_signal(signal.SIGINT)  # Ctrl-C: the stack stops its services itself
            try:
                dev.wait(timeout=90)
            except subprocess.TimeoutExpired:
                dev.terminate()
                dev.wait(timeout=30)
        log.close()
        print(f"stack stopped (exit {dev.returncode}); its data folder: {data}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=HERE, help="where the PNGs go")
    parser.add_argument("--budget-ms", type=int, default=20_000, help="Chromium virtual time")
    args = parser.parse_args()
    take(args.out, budget_ms=args.budget_ms)


if __name__ == "__main__":
    main()
