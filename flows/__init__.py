"""Prefect flows that orchestrate tasks: analytics sync and its fan-out, the due-post sweeper.

May import tasks, models and dispatch's queue client."""
