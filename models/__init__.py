"""SQLAlchemy 2.0 models, engine and sessions, Alembic migrations, and the queries that read and
change state. Imports nothing of ours."""
