"""Give each gateway worker a CPU budget of its own (a cgroup CPU quota), to measure how delivery scales with
workers on a box with fewer free cores than the workers plus the load generator need.

On the 2-core development box two workers and the client cannot each have a core; with every worker capped
at, say, 0.35 of a core, one worker and two workers both run CPU-bound at their caps while the client has
the rest, so "2 workers deliver at least 1.8x one" can be checked for what it asks: that nothing shared
(the broker, the readers, the relay) stops a second worker's CPU from turning into deliveries.

Linux only, and root only (it writes under /sys/fs/cgroup): cgroup v1's `cpu` controller, or v2 with `cpu`
enabled at the root.
"""

from __future__ import annotations

import contextlib
import secrets
from collections.abc import Iterator
from pathlib import Path

from loadtests.procstat import tree

PERIOD_US = 100_000
V1_ROOT = Path("/sys/fs/cgroup/cpu")
V2_ROOT = Path("/sys/fs/cgroup")


def _hierarchy() -> tuple[Path, bool]:
    """(root directory, is cgroup v2)."""
    if (V1_ROOT / "cpu.cfs_quota_us").exists():
        return V1_ROOT, False
    controllers = V2_ROOT / "cgroup.controllers"
    if controllers.exists() and "cpu" in controllers.read_text().split():
        return V2_ROOT, True
    raise RuntimeError("no writable cgroup CPU controller found (needs Linux cgroups and root)")


def worker_pids(root_pid: int) -> list[int]:
    """The processes that serve requests: the children of a supervisor, or the root if it has none."""
    children = [pid for pid in tree(root_pid) if pid != root_pid]
    return children or [root_pid]


@contextlib.contextmanager
def capped_workers(root_pid: int, cores: float) -> Iterator[list[int]]:
    """Every worker of the server at `root_pid` in a cgroup of its own, limited to `cores` of CPU time;
    the cgroups are removed afterwards (the processes go back to the root cgroup if still alive)."""
    root, v2 = _hierarchy()
    quota = int(cores * PERIOD_US)
    tag = secrets.token_hex(3)
    made: list[Path] = []
    pids = worker_pids(root_pid)
    try:
        for pid in pids:
            group = root / f"gwbench-{tag}-{pid}"
            group.mkdir()
            made.append(group)
            if v2:
                (group / "cpu.max").write_text(f"{quota} {PERIOD_US}")
            else:
                (group / "cpu.cfs_period_us").write_text(str(PERIOD_US))
                (group / "cpu.cfs_quota_us").write_text(str(quota))
            (group / "cgroup.procs").write_text(str(pid))
        yield pids
    finally:
        for group in made:
            with contextlib.suppress(OSError):
                for pid in (group / "cgroup.procs").read_text().split():
                    (root / "cgroup.procs").write_text(pid)
            with contextlib.suppress(OSError):
                group.rmdir()
