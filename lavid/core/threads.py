"""How many CPU threads a process should use."""

from __future__ import annotations

import os


def usable_cores() -> int:
    """The cores this process may run on (its affinity mask, e.g. under ``taskset`` or a cgroup cpuset),
    not the machine's: two compute threads on one allowed core spin-wait on each other."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1
