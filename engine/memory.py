"""How much memory this process can still take.

The system's available memory is not the whole answer: in a container, or a systemd slice
with MemoryMax, a cgroup limit ends the process (the kernel's OOM killer, no traceback)
long before the machine runs short. Both cgroup versions are read, with every ancestor
group, since a parent's limit binds its children too.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import psutil

CGROUP_ROOT = Path("/sys/fs/cgroup")
PROC_CGROUP = Path("/proc/self/cgroup")
NO_LIMIT = 1 << 60  # cgroup v1 writes "no limit" as a number near 2^63

# (limit file, usage file, the usage's reclaimable page cache in memory.stat) per version
_V2 = ("memory.max", "memory.current", "inactive_file")
_V1 = ("memory.limit_in_bytes", "memory.usage_in_bytes", "total_inactive_file")


def available_memory() -> int:
    """Bytes this process can allocate before the system or its cgroup runs out."""
    free = int(psutil.virtual_memory().available)
    room = cgroup_room()
    return free if room is None else min(free, room)


def cgroup_room(proc_cgroup: Path = PROC_CGROUP, root: Path = CGROUP_ROOT) -> int | None:
    """The smallest room left under a memory limit of this process's cgroups, or None where
    no group sets one (or cgroups cannot be read)."""
    try:
        lines = proc_cgroup.read_text().splitlines()
    except OSError:
        return None
    rooms = [room for group, files in _groups(lines, root) if (room := _room(group, files)) is not None]
    return min(rooms, default=None)


def _groups(lines: list[str], root: Path) -> Iterator[tuple[Path, tuple[str, str, str]]]:
    """Each memory cgroup of the process and its ancestors, with the files of its version."""
    for line in lines:
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        hierarchy, controllers, path = parts
        if hierarchy == "0" and controllers == "":
            # unified (v2): mounted at the root, or at root/unified beside v1 controllers
            base, files = (root if (root / "cgroup.controllers").exists() else root / "unified"), _V2
        elif "memory" in controllers.split(","):
            base, files = root / "memory", _V1
        else:
            continue
        group = base / path.lstrip("/")
        if not group.is_dir():  # a path from outside this cgroup namespace: ours is the base
            group = base
        while True:
            yield group, files
            if group == base:
                break
            group = group.parent


def _room(group: Path, files: tuple[str, str, str]) -> int | None:
    limit_file, usage_file, inactive_key = files
    try:
        limit_text = (group / limit_file).read_text().strip()
        if limit_text == "max" or int(limit_text) >= NO_LIMIT:
            return None
        usage = int((group / usage_file).read_text())
    except (OSError, ValueError):
        return None
    # The usage counts page cache the kernel drops before it kills anything (docker stats
    # and the v2 docs count the working set the same way).
    inactive = 0
    try:
        for stat in (group / "memory.stat").read_text().splitlines():
            key, _, value = stat.partition(" ")
            if key == inactive_key:
                inactive = int(value)
    except (OSError, ValueError):
        pass
    return max(0, int(limit_text) - (usage - inactive))
