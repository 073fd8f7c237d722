"""The data layer: SQLAlchemy 2.0 tables, the status enums, engine and sessions, Alembic
migrations, the one settings root, and the statements that read and change state, by domain
(`posts`, `targets` and claims, `staging`, `outbox`, `analytics`, `accounts`, `quotas`).
Nothing here commits: the caller owns the transaction.

Imports nothing of ours.
"""
