"""`python -m deployments` runs the `tendsocial` CLI."""

from deployments.cli import app

app()
