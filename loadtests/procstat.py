"""CPU and memory of the server under test, read from /proc (Linux only).

A server is a process tree: `gateway serve --workers N` is uvicorn's supervisor plus N worker children, so
every figure sums the root and all its descendants. CPU is utime+stime (what the kernel charged the processes,
independent of what else runs on the box); the machine's total busy time is read too, so a report can say
how much CPU other processes took during a run (other engineers' tests share these two cores).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")


def _stat_fields(pid: int) -> list[str]:
    with open(f"/proc/{pid}/stat", "rb") as handle:
        raw = handle.read().decode()
    # The command name may contain spaces and parentheses: split after its closing parenthesis.
    return raw[raw.rindex(")") + 2 :].split()


def tree(root: int) -> list[int]:
    """`root` and every descendant alive now."""
    children: dict[int, list[int]] = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            ppid = int(_stat_fields(int(name))[1])
        except (OSError, ValueError, IndexError):
            continue
        children.setdefault(ppid, []).append(int(name))
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo.extend(children.get(pid, []))
    return found


def cpu_seconds(pids: list[int]) -> tuple[float, float]:
    """(utime, stime) of `pids`, in seconds (processes that exited are skipped)."""
    user = system = 0
    for pid in pids:
        try:
            fields = _stat_fields(pid)
        except OSError:
            continue
        user += int(fields[11])  # utime (field 14 of stat)
        system += int(fields[12])  # stime (field 15)
    return user / CLOCK_TICKS, system / CLOCK_TICKS


def rss_bytes(pids: list[int]) -> int:
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/statm", "rb") as handle:
                total += int(handle.read().split()[1]) * PAGE_SIZE
        except OSError:
            continue
    return total


def machine_busy_seconds() -> float:
    """CPU time spent by everything on the machine (all cores), from /proc/stat."""
    with open("/proc/stat", "rb") as handle:
        fields = [int(v) for v in handle.readline().split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    return (sum(fields[:8]) - idle) / CLOCK_TICKS


@dataclass(frozen=True)
class Sample:
    server_user: float
    server_system: float
    own_cpu: float
    machine_cpu: float

    @property
    def server_cpu(self) -> float:
        return self.server_user + self.server_system

    @classmethod
    def take(cls, pids: list[int]) -> Sample:
        own = os.times()
        user, system = cpu_seconds(pids)
        return cls(user, system, own.user + own.system, machine_busy_seconds())

    def __sub__(self, other: Sample) -> Sample:
        return Sample(
            self.server_user - other.server_user,
            self.server_system - other.server_system,
            self.own_cpu - other.own_cpu,
            self.machine_cpu - other.machine_cpu,
        )
