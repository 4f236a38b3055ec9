"""This process's cgroups: the limits a container or a systemd slice sets below the machine's.

Both versions are read, and the hybrid layout of the two (v1 controllers under their own
mounts, v2 at root/unified), with every ancestor group: a parent's limit binds its children
too. Memory (engine.memory) and CPU time (engine.blas.cpu_count) are limited this way.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path

CGROUP_ROOT = Path("/sys/fs/cgroup")
PROC_CGROUP = Path("/proc/self/cgroup")


def groups(
    controller: str, proc_cgroup: Path = PROC_CGROUP, root: Path = CGROUP_ROOT
) -> Iterator[tuple[Path, bool]]:
    """Each group of this process in which ``controller`` ("memory", "cpu") acts, then its
    ancestors, with whether it is a v2 group. Nothing where cgroups cannot be read."""
    try:
        lines = proc_cgroup.read_text().splitlines()
    except OSError:
        return
    for line in lines:
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        hierarchy, controllers, path = parts
        if hierarchy == "0" and controllers == "":
            # unified (v2): mounted at the root, or at root/unified beside v1 controllers
            base, is_v2 = (root if (root / "cgroup.controllers").exists() else root / "unified"), True
        elif controller in controllers.split(","):
            # v1: mounted under the controllers' joined name ("cpu,cpuacct"), often linked as each
            base = next((b for b in (root / controllers, root / controller) if b.is_dir()), root / controller)
            is_v2 = False
        else:
            continue
        group = base / path.lstrip("/")
        if not group.is_dir():  # a path from outside this cgroup namespace: ours is the base
            group = base
        while True:
            yield group, is_v2
            if group == base:
                break
            group = group.parent


def cpu_limit(proc_cgroup: Path = PROC_CGROUP, root: Path = CGROUP_ROOT) -> int | None:
    """The CPUs' worth of time the tightest CPU quota of this process's groups allows, rounded
    up (1.5 CPUs allow 2 busy threads their share), or None where no group sets one."""
    limits = []
    for group, is_v2 in groups("cpu", proc_cgroup, root):
        try:
            if is_v2:
                quota, _, period = (group / "cpu.max").read_text().strip().partition(" ")
            else:
                quota = (group / "cpu.cfs_quota_us").read_text().strip()
                period = (group / "cpu.cfs_period_us").read_text().strip()
            if quota in ("max", "-1"):
                continue
            limits.append(max(1, math.ceil(int(quota) / int(period))))
        except (OSError, ValueError, ZeroDivisionError):
            continue
    return min(limits, default=None)
