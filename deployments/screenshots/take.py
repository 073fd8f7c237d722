"""Re-take the docs' pictures from a fresh local stack, with headless Chromium.

    .venv/bin/python -m deployments.screenshots.take   # writes deployments/screenshots/*.png

Starts `tendsocial dev` on free ports with a data folder of its own (a temporary one,
`stack.fresh_stack`), runs `tendsocial demo` and `tendsocial demo --fail instagram`, triggers an
analytics sync the Cloud Scheduler way, applies the data team's views, waits until the reporter
has shipped every run and the sync's table artifacts to Prefect (polling Prefect's API, `POST
/api/flow_runs/filter` and `POST /api/artifacts/filter`), then photographs the Prefect UI (the
publish runs, one post's staging and publish runs, a failed staging, the sync's graph, its
children with LinkedIn's "Not available", its table artifact, a saved filter, the deployments)
and the demo's terminal output, draws the
metrics chart on the same stack (`metrics_chart.py`; `--no-chart` skips it), and stops the stack
with SIGINT (what Ctrl-C does). Needs `chromium` on the PATH (Debian: `apt-get install -y
chromium fonts-noto-color-emoji`, the latter for the demo's ✅/❌).

A link does not open a run page's Artifacts tab in Prefect 3's UI (its `?tab=` names a tab that
is hidden until the run has loaded, and the page shows Logs instead): the sync's table is shown
on the artifact's own page (`/artifacts/artifact/<id>`, the route in the UI's
`prefect/server/ui/assets/index-*.js`), and the children's states on the runs list filtered to
the sync's window tag.

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
import re
import shutil
import subprocess
import tempfile
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit

import httpx

from deployments.screenshots.stack import COLUMNS, Stack, fresh_stack, run_cli, wait_for
from models.outbox import artifact_key

HERE = Path(__file__).resolve().parent
MAX_PNG_BYTES = 400_000
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


def run_the_demos(stack: Stack) -> dict[str, Any]:
    """The two demos, a sync triggered the Cloud Scheduler way and the data team's views; waits
    until Prefect has every run and the sync's table artifacts. Returns what the shots name."""
    prefect, data, env = stack.prefect, stack.data, stack.env
    print("running the demos and a sync")
    run_cli("demo", f"--data-dir={data}", env=env)
    failing = run_cli("demo", f"--data-dir={data}", "--fail", "instagram", env=env, terminal=True)
    secret = (data / "webhook-secret").read_text().strip()
    sync = httpx.post(
        f"{stack.api}/api/jobs/sync-analytics",
        headers={"X-Webhook-Secret": secret},
        json={"idempotencyKey": "readme"},
        timeout=30,
    )
    sync.raise_for_status()
    job_id, children = sync.json()["jobId"], sync.json()["jobsCreated"]
    run_cli("flows", "views", "apply", env=env | {"PREFECT_API_URL": f"{prefect.ui_url}/api"})

    post_id = re.search(r"tag=post:([0-9a-f-]{36})", failing).group(1)  # type: ignore[union-attr]
    # Its media staged on each platform (Instagram's staging fails the target ahead of the
    # instant), then LinkedIn's and X's publish: 5 runs.
    failed_post = wait_for(
        "the failing demo's 5 runs",
        lambda: prefect.settled(prefect.runs(tags={"all_": [f"post:{post_id}"]}), 5),
        timeout=120,
    )
    wait_for(
        "5 publish runs",  # 3 + 2: the failing demo's Instagram fails at its staging
        lambda: prefect.settled(
            prefect.post(
                "/flow_runs/filter",
                {"flows": {"name": {"any_": ["publish-post"]}}, "limit": 50},
            ),
            5,
        ),
        timeout=120,
    )
    parent = wait_for(
        "the sync parent",
        lambda: prefect.settled(prefect.runs(tags={"all_": ["trigger:readme"]}), 1),
        timeout=120,
    )[0]
    child_runs = wait_for(
        f"its {children} children",
        lambda: prefect.settled(
            prefect.runs(parent_flow_run_id={"any_": [parent["id"]]}), children
        ),
        timeout=120,
    )
    # The tables are shipped after their runs (`flows/reporter/shipping.py`): poll for them.
    sync_table = wait_for(
        "the sync's table artifact",
        lambda: prefect.artifacts(key={"any_": [artifact_key("sync", job_id)]}),
        timeout=120,
    )[0]
    wait_for(
        "the children's table artifacts",
        lambda: (
            len(prefect.artifacts(flow_run_id={"any_": [r["id"] for r in child_runs]})) >= children
        ),
        timeout=120,
    )
    linkedin = next(r for r in child_runs if "platform:linkedin" in r["tags"])
    if (linkedin["state_type"], linkedin["state_name"]) != ("COMPLETED", "Not available"):
        raise SystemExit(f"the LinkedIn child is {linkedin['state_name']}, not Not available")
    return {
        "failing": failing,
        "post_id": post_id,
        "instagram": next(
            r
            for r in failed_post
            if "platform:instagram" in r["tags"] and r["state_type"] == "FAILED"
        ),
        "parent": parent,
        "sync_table": sync_table,
        "window": next(t for t in parent["tags"] if t.startswith("sync-window:")),
    }


def take(out: Path, *, budget_ms: int, chart: bool) -> None:
    with fresh_stack() as stack:
        ran = run_the_demos(stack)
        data, prefect = stack.data, stack.prefect
        out.mkdir(parents=True, exist_ok=True)
        key = json.loads((data / "demo.json").read_text())["apiKey"]
        (data / "demo-fail-instagram.ansi").write_text(ran["failing"])
        html = data / "demo-fail-instagram.html"
        page = terminal_html(
            "$ tendsocial demo --fail instagram\n" + ran["failing"].replace(key, "ts_…"),
            title="tendsocial demo --fail instagram",
        )
        html.write_text(page)
        print("screenshots:")
        ui = prefect.ui_url
        publish_flow = prefect.flow_id("publish-post")
        children = urlencode(
            {"flow": prefect.flow_id("sync-platform-analytics"), "tag": ran["window"]}
        )
        instagram, parent = ran["instagram"], ran["parent"]
        run_name = instagram["name"]
        shots = [
            (f"{ui}/runs?flow={publish_flow}", "prefect-runs.png", "1440,1290", "publish-post"),
            # One post's runs: each platform's media staged ahead, then its publish.
            (
                f"{ui}/runs?tag=post:{ran['post_id']}",
                "prefect-post-runs.png",
                "1440,1180",
                run_name,
            ),
            (
                f"{ui}/runs/flow-run/{instagram['id']}",
                "prefect-publish-run.png",
                "1440,900",
                "media staging failed",
            ),
            (f"{ui}/runs/flow-run/{parent['id']}", "prefect-sync-run.png", "1440,860", "child job"),
            # The sync's children listed with their states: LinkedIn's is "Not available".
            (f"{ui}/runs?{children}", "prefect-sync-children.png", "1440,1330", "Not available"),
            # The sync's table, on the artifact's own page (the run's Artifacts tab lists cards);
            # wide enough for the longest reason. The expected text is in LinkedIn's row.
            (
                f"{ui}/artifacts/artifact/{ran['sync_table']['id']}",
                "prefect-sync-artifact.png",
                "2100,640",
                "r_member_social",
            ),
            (
                f"{ui}/runs?flow={publish_flow}&flow={prefect.flow_id('stage-media')}"
                "&tag=platform:instagram&state=Failed"
                "&type=span&seconds=-604800",  # = the saved filter of failed Instagram publishes
                "prefect-saved-filter.png",
                "1440,900",
                run_name,
            ),
            (f"{ui}/deployments", "prefect-deployments.png", "1600,520", "sync-analytics-every-6h"),
            (html.as_uri(), "demo-fail-instagram.png", "1000,360", "platforms published"),
        ]
        with signing_proxy(port=stack.ports["prefect"], headers=stack.signed) as proxy:
            for url, name, size, expect in shots:
                chromium_shot(
                    url, out / name, size=size, budget_ms=budget_ms, expect=expect, proxy=proxy
                )
        if chart:
            from deployments.screenshots.metrics_chart import chart_of_stack

            chart_of_stack(stack, out / "metrics-history.png")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=HERE, help="where the PNGs go")
    parser.add_argument("--budget-ms", type=int, default=20_000, help="Chromium virtual time")
    parser.add_argument(
        "--no-chart",
        dest="chart",
        action="store_false",
        help="skip the metrics chart (metrics_chart.py; it needs matplotlib)",
    )
    args = parser.parse_args()
    take(args.out, budget_ms=args.budget_ms, chart=args.chart)


if __name__ == "__main__":
    main()
