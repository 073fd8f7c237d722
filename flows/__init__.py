"""Orchestration above single units of work: the analytics fan-out (`sync_fanout`), the due-post
sweeper (`sweeper`), the reporter that ships run records to Prefect (`reporter`), and the thin
Prefect flow wrappers of the scheduled jobs (`prefect_flows`, the only module here that imports
Prefect).

May import `tasks` and `models`.
"""
