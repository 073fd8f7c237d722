"""Test and benchmark support: plain modules (never conftests) that tests and `bench/` import.

- `ports`: free ports, waiting for a port to listen;
- `servers`: an ASGI app under uvicorn in a thread;
- `clients`: httpx clients that share one SSL context (a new one costs ~40 ms);
- `waiting`: `eventually` / `wait_until` (poll a condition with a deadline), `consistently` /
  `holds_for` (a condition that must hold for a while); no test sleeps in place of these;
- `databases`: a throwaway migrated PostgreSQL database;
- `sandbox`: the sandbox platforms and the handle on their control API;
- `tenants`: companies with accounts (on the sandbox or with dummy tokens), scheduling posts;
- `stacks`: the app served over HTTP, on an in-memory queue or enqueueing to the emulator;
- `analytics`: what the analytics tests read and wait for on their stack;
- `emulator`: the Cloud Tasks emulator as a subprocess, the official client against it, a
  scripted HTTP target it calls;
- `processes`: the services as subprocesses (API, sandbox), as in production;
- `exactly_once`: target states and the "each (post, platform) once" check;
- `load`: the load run of `bench/bench_load.py`, shared with `tests/faults`;
- `prefect`: a real Prefect server for the visibility tests;
- `settings`: the settings root built for a test.
"""
