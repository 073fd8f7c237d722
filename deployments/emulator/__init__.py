"""A local Google Cloud Tasks v2 emulator (gRPC), reached with the official client.

Start it with `serve(...)` inside an event loop, `run(...)` (blocking, handles SIGINT/SIGTERM),
`python -m deployments.emulator`, or `tendsocial emulator`. Emulator-only extras:

- dead-letter copies: a task that runs out of retries is deleted like on Google and, when a queue
  named `<queue>-dlq` exists (or `dead_letter_queues` / `dead_letter_all` say so, creating it
  paused), copied there so it can be inspected and re-run by hand (`RunTask`);
- OIDC tokens signed with the emulator's own key, verifiable against `oidc_endpoints(...)`,
  for the service accounts it was started with only (`engine.py`, caller rights);
- no credential in what it shows: task views redact credential headers (`redaction.py`).
"""

from deployments.emulator.clock import Clock, ManualClock, SystemClock
from deployments.emulator.oidc import OidcEndpoints, oidc_endpoints
from deployments.emulator.retry import backoff_seconds, retries_exhausted
from deployments.emulator.server import RunningEmulator, default_state_dir, run, serve

__all__ = [
    "Clock",
    "ManualClock",
    "OidcEndpoints",
    "RunningEmulator",
    "SystemClock",
    "backoff_seconds",
    "default_state_dir",
    "oidc_endpoints",
    "retries_exhausted",
    "run",
    "serve",
]
