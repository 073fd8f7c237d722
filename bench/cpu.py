"""CPU time per process group and per PostgreSQL database, read from /proc (Linux), so a bench
can say where the CPU of a phase went: the API, the reporter, the Prefect server, and the
PostgreSQL backends of the pipeline's database and of Prefect's.

A process group, not a pid: `prefect server start` and `tendsocial` run children of their own
(each is started in a session of its own, so its pid is the group id). PostgreSQL backends are
found through `pg_stat_activity` (pid → database) and read from /proc too: the server must run
on this machine.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

_TICK = os.sysconf("SC_CLK_TCK")


def _stat(pid: str) -> list[str] | None:
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().rsplit(")", 1)[1].split()
    except OSError:
        return None


def group_cpu_seconds(pgid: int) -> float:
    """User + system CPU of the live processes of a process group, and of their waited-for
    children (`cutime`/`cstime`)."""
    total = 0.0
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        fields = _stat(pid)
        if fields is None or int(fields[2]) != pgid:
            continue
        total += sum(int(v) for v in fields[11:15]) / _TICK
    return total


def pid_cpu_seconds(pids: list[int]) -> float:
    total = 0.0
    for pid in pids:
        fields = _stat(str(pid))
        if fields is not None:
            total += (int(fields[11]) + int(fields[12])) / _TICK
    return total


def postgres_backends(database_url: str) -> dict[int, str]:
    """pid → database of PostgreSQL's client backends now."""
    from sqlalchemy import create_engine, text

    engine = create_engine(database_url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(
                text("SELECT pid, datname FROM pg_stat_activity WHERE datname IS NOT NULL")
            ).all()
    finally:
        engine.dispose()
    return {int(pid): str(datname) for pid, datname in rows}


def machine_busy_seconds() -> float:
    """CPU seconds the whole machine spent busy (all cores, all processes, other users too)."""
    with open("/proc/stat") as handle:
        values = [int(v) for v in handle.readline().split()[1:]]
    return (sum(values) - values[3] - values[4]) / _TICK


class CpuMeter:
    """Readings of named process groups, PostgreSQL databases and the machine; `since(before)`
    gives each one's CPU seconds between two readings.

    PostgreSQL is read per backend: a backend that connected during the phase counts from zero,
    one that exited during it is lost (pooled connections mostly live across phases)."""

    def __init__(
        self, *, groups: Mapping[str, int], database_url: str, databases: Mapping[str, str]
    ) -> None:
        self.groups = dict(groups)
        self.database_url = database_url
        self.databases = dict(databases)

    def read(self) -> dict[str, float]:
        reading = {name: group_cpu_seconds(pgid) for name, pgid in self.groups.items()}
        reading["machine"] = machine_busy_seconds()
        for pid, datname in postgres_backends(self.database_url).items():
            for label, wanted in self.databases.items():
                if datname == wanted:
                    reading[f"{label}#{pid}"] = pid_cpu_seconds([pid])
        return reading

    def since(self, before: Mapping[str, float], after: Mapping[str, float]) -> dict[str, float]:
        spent = {k: 0.0 for k in self.databases}
        for key, value in after.items():
            label = key.split("#", 1)[0]
            spent[label] = spent.get(label, 0.0) + max(0.0, value - before.get(key, 0.0))
        return spent
