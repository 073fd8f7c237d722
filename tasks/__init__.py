"""Every use case, plain async Python shared by the webhooks, the flows and the CLI:

- scheduling a company's posts: the commands (`scheduling`), their checks (`post_validation`),
  the reads (`post_reads`), media registration (`media_registration`), and the one way targets
  go on the queue (`dispatcher`, with fair dispatch);
- staging a target's media ahead of its instant (`staging`); publishing one target
  (`publishing`); the sweep's decisions (`sweeping`);
- analytics: the sync fan-out (`sync_fanout`), one company × platform (`metrics`), the reads
  (`analytics_reads`);
- the token lifecycle (`accounts`, `token_refresh`, `account_connect`, `account_servers`) and
  administration (`administration`, `api_keys`, `tenants`);
- how the shared services are built from the settings (`composition`), Cloud Tasks as the
  pipeline uses it (`cloud_tasks`, `task_specs`), safe media fetching (`media`), and one adapter
  per platform behind one interface (`platforms/`).

Refusals are the domain errors of `errors`, which the HTTP edge maps to statuses.

May import `models` only.
"""
