"""Threads: the adapter (`adapter.py`), the facts (`spec.py`),
how an account connects (`connect.py`)."""
