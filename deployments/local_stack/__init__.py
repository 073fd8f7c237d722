"""The whole product on one machine: `tendsocial dev`.

Starts PostgreSQL (embedded unless `DATABASE_URL` is set) and its migrations, then together the
Cloud Tasks emulator (queues applied), the sandbox platforms, the API/webhook server and a Prefect
server with its UI on the same PostgreSQL, then the reporter and the Prefect deployments
(`tendsocial flows serve`: sync, sweeper, token refresh, with their schedules); seeds a demo
company with one account on each sandbox platform; runs the due-post sweeper once; prints the
URLs. Ctrl-C stops every process it started, newest first. Everything lives under the data
folder, so a restart keeps the data and the tasks still pending (the emulator persists them).

Each service is a child process running a `tendsocial` command, so what runs locally is exactly
what runs in production, one process per service. Each child is given the stack's environment
explicitly (`LocalStack.env`); the supervisor never changes its own.

Where it is: `stack.json` in the data folder records the endpoints (database, emulator, webhook
URL and secret, Prefect, sandbox, platform base URLs) and the process ids. Every other command
takes its environment from it while that `tendsocial dev` is alive (`stack_environment`), and the
variables set in the shell still win.

How it cleans up: every child dies with `tendsocial dev` however that dies. Children are started
with Linux's parent-death signal (SIGTERM when we exit, even by SIGKILL), and a tiny watchdog
process, holding the read end of a pipe only we write to, wakes up when we are gone and stops
whatever is left (grandchildren, the embedded PostgreSQL that `pg_ctl` detached). A `tendsocial
dev` started after a hard kill of everything (watchdog included) does the same clean-up first,
from the pids recorded in `stack.json`, each checked against its start time and command line so a
recycled pid is never killed.

Secrets stay private: the data folder is created 0700 (and one of ours found open is closed;
`models.crypto.private_data_dir`, which says why an embedded PostgreSQL run as root needs 0711),
every file in it is created 0600 (the process umask is 077, inherited by every child: the
emulator's state holds the webhook secret, logs may hold URLs), and `stack.json` and
`demo.json` are written atomically with mode 0600. The Prefect server asks every client for a
generated auth string (`prefect-auth`, 0600, recorded for the commands beside the stack) and
allows no other web origin than its UI's (`deployments/prefect_server.py`).

Where each part is: `core` (the stack, its ports and children, process records, `StackError`),
`files` (private files, the endpoints file, generated secrets), `supervisor` (children, the
watchdog, stale stacks, stopping), `services` (checks, the environment, the start-up order),
`demo` (the demo company and the sandbox's registrations), `diagnostics` (one-line errors);
`python -m deployments.local_stack` (`__main__`) is how children and the watchdog start.
"""

from deployments.local_stack.core import (
    DEMO_PLATFORMS,
    STACK_ID_ENV,
    STOP_TIMEOUT_SECONDS,
    Child,
    LocalStack,
    Ports,
    ProcessRecord,
    StackError,
)
from deployments.local_stack.demo import (
    LOCAL_CONNECT_REDIRECT_URI,
    LOCAL_OAUTH_APPS,
    seed_demo,
    seed_demo_in_child,
)
from deployments.local_stack.diagnostics import explain_failure
from deployments.local_stack.files import (
    STACK_FILE,
    close_an_older_data_folder,
    ensure_private_dir,
    read_stack_file,
    stable_secret,
    stack_env_keys,
    stack_environment,
    stack_file,
    write_private_file,
    write_stack_file,
)
from deployments.local_stack.services import (
    check_dependencies,
    check_ports_free,
    prepare,
    start_prefect_server,
    start_reporter,
    start_services,
)
from deployments.local_stack.supervisor import (
    start_child,
    start_watchdog,
    stop_all,
    stop_orphaned_embedded_postgres,
    stop_stale_stack,
    supervise,
)

# The names the tests knew these by, before they were public.
_close_an_older_data_folder = close_an_older_data_folder
_stable_secret = stable_secret

__all__ = [
    "DEMO_PLATFORMS",
    "LOCAL_CONNECT_REDIRECT_URI",
    "LOCAL_OAUTH_APPS",
    "STACK_FILE",
    "STACK_ID_ENV",
    "STOP_TIMEOUT_SECONDS",
    "Child",
    "LocalStack",
    "Ports",
    "ProcessRecord",
    "StackError",
    "check_dependencies",
    "check_ports_free",
    "close_an_older_data_folder",
    "ensure_private_dir",
    "explain_failure",
    "prepare",
    "read_stack_file",
    "seed_demo",
    "seed_demo_in_child",
    "stable_secret",
    "stack_env_keys",
    "stack_environment",
    "stack_file",
    "start_child",
    "start_prefect_server",
    "start_reporter",
    "start_services",
    "start_watchdog",
    "stop_all",
    "stop_orphaned_embedded_postgres",
    "stop_stale_stack",
    "supervise",
    "write_private_file",
    "write_stack_file",
]
