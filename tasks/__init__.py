"""Units of work and use cases, plain async Python shared by the webhooks, the flows and the CLI:
publish one target (`publishing`), sync one company × platform (`metrics`), the token lifecycle
(`accounts`, `token_refresh`), the scheduling use cases (`scheduling`), Cloud Tasks as the
pipeline uses it (`cloud_tasks`, `task_specs`), safe media fetching (`media`), and one adapter
per platform behind one interface (`platforms/`).

May import `models` only.
"""
