"""Orchestration only, over the use cases of `tasks`: the due-post sweep's order of steps and its
run record (`sweeper`), the reporter that ships run records to Prefect (`reporter`), the
resources of runs outside the API process (`standalone`), and the thin Prefect flow wrappers of
the scheduled jobs (`prefect_flows`, the only module here that imports Prefect).

May import `tasks` and `models`.
"""
