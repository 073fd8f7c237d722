"""How it runs: the `tendsocial` CLI, the one-command local stack and its supervisor, the local
stand-ins for the outside world (the Cloud Tasks emulator in `emulator/`, the social platforms in
`sandbox/`), the queue definitions applied to Cloud Tasks, the Prefect deployments, and the
Google Cloud files (`cloud/`).

May import `dispatch`, `flows`, `tasks` and `models`.
"""
