"""ASGI entry point for uvicorn / Cloud Run: `dispatch.main:app`."""

from dispatch.app import create_app

app = create_app()
