"""ASGI entry point for uvicorn / Cloud Run: `dispatch.main:app`.

Logging is configured here, in every worker process, before the app (and Prefect, which installs
a console handler of its own when imported) is loaded.
"""

from dispatch.observability import configure_logging

configure_logging()

from dispatch.app import create_app  # noqa: E402

app = create_app()
