"""The memory training needs, and how much this process can still take.

The system's available memory is not the whole answer: in a container, or a systemd slice
with MemoryMax, a cgroup limit ends the process (the kernel's OOM killer, no traceback)
long before the machine runs short: engine.cgroups finds the limits.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import psutil

from engine.blas import cpu_count
from engine.cgroups import CGROUP_ROOT, PROC_CGROUP, groups
from engine.config import ModelConfig, TrainConfig, format_bytes
from engine.errors import InputError
from engine.model import activation_bytes
from engine.parallel import shards_for

# -- what training needs ----------------------------------------------------------
ARENA_MARGIN = 1.2  # the arena's high-water mark over the activations: 1.02-1.17 (chargpt bench)
HELPER_BYTES = 40_000_000  # a helper process's interpreter and NumPy: 28 MB measured, large at batch 65
# Of the memory available, what training may take. The estimate came within 1 % of the peak
# measured (anonymous and shared memory in a cgroup, large at batch 62), yet a run that fit
# the whole of a 3 GiB limit was killed by it: the page cache, the checkpoints being written
# and the other programs need the rest.
TRAINING_SHARE = 0.9


class NotEnoughMemory(InputError):
    """Training as asked would need more memory than the machine has available."""


def memory_needed(model_cfg: ModelConfig, train_cfg: TrainConfig, batch_size: int | None = None) -> int:
    """Bytes a training iteration needs at most: the arena's activations; the parameters,
    their gradients and AdamW's two moments; and, where the batch is split on all of this
    machine's cores, each helper process with its own gradients. This process's
    interpreter is not counted: it is already running, and what is available excludes it."""
    itemsize = np.dtype(train_cfg.dtype).itemsize
    batch = train_cfg.batch_size if batch_size is None else batch_size
    arena = ARENA_MARGIN * activation_bytes(model_cfg, batch, itemsize)
    helpers = shards_for(model_cfg, batch, cpu_count()) - 1
    params = model_cfg.n_params * itemsize
    return math.ceil(arena) + 4 * params + helpers * (HELPER_BYTES + params)


def memory_for_training(available: int | None = None) -> int:
    """Bytes training can have: a share of ``available`` (by default, what the system and
    this process's cgroup leave now)."""
    return int(TRAINING_SHARE * (available_memory() if available is None else available))


def check_memory(
    model_cfg: ModelConfig, train_cfg: TrainConfig, available: int | None = None, *, resuming: bool = False
) -> None:
    """Refuse, with the largest batch that fits, a run that would exhaust the memory
    ``available`` (by default, what the system and this process's cgroup leave now): better
    than swapping for hours or being killed.
    ``resuming``: a checkpoint's run, whose batch size cannot change."""
    free = available_memory() if available is None else available
    room = memory_for_training(free)
    need = memory_needed(model_cfg, train_cfg)
    if need <= room:
        return
    fixed = memory_needed(model_cfg, train_cfg, batch_size=0)
    fits = int((room - fixed) / (memory_needed(model_cfg, train_cfg, batch_size=1) - fixed))
    while fits > 0 and memory_needed(model_cfg, train_cfg, fits) > room:  # the estimate rounds up
        fits -= 1
    if resuming:
        advice = "a checkpoint keeps its batch size: resume it on a machine with more memory"
    elif fits >= 1:
        advice = f"lower the batch size to {fits:,} or less"
    else:
        advice = "choose a smaller model"
    raise NotEnoughMemory(
        f"training at batch {train_cfg.batch_size:,} needs about {format_bytes(need)} of memory and "
        f"this machine can spare {format_bytes(room)} ({TRAINING_SHARE:.0%} of the {format_bytes(free)} "
        f"available); {advice}, or close other programs"
    )


# -- what there is -----------------------------------------------------------------
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
    rooms = [
        room
        for group, is_v2 in groups("memory", proc_cgroup, root)
        if (room := _room(group, _V2 if is_v2 else _V1)) is not None
    ]
    return min(rooms, default=None)


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
