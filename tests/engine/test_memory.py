from pathlib import Path

import psutil
import pytest

from engine import memory
from engine.config import format_bytes, format_count
from engine.memory import available_memory, cgroup_room

GB = 1 << 30


def write(path: Path, **files: str) -> None:
    path.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (path / name.replace("_", ".", 1)).write_text(text)


def v2(root: Path, group: str, **files: str) -> Path:
    (root / "cgroup.controllers").write_text("cpu memory\n")
    write(root / group, **files)
    proc = root / "self-cgroup"
    proc.write_text(f"0::/{group}\n")
    return proc


def test_v2_limit_leaves_the_limit_less_the_working_set(tmp_path: Path) -> None:
    proc = v2(
        tmp_path,
        "user.slice/app",
        memory_max=str(4 * GB),
        memory_current=str(3 * GB),
        memory_stat=f"anon 123\ninactive_file {GB}\nactive_file 7\n",
    )
    assert cgroup_room(proc, tmp_path) == 2 * GB  # the inactive page cache is reclaimable


def test_the_tightest_ancestor_binds(tmp_path: Path) -> None:
    proc = v2(tmp_path, "a/b", memory_max="max", memory_current=str(GB))
    write(tmp_path / "a", memory_max=str(3 * GB), memory_current=str(2 * GB))
    assert cgroup_room(proc, tmp_path) == GB


def test_no_limit_or_no_cgroups_is_none(tmp_path: Path) -> None:
    proc = v2(tmp_path, "a", memory_max="max", memory_current=str(GB))
    assert cgroup_room(proc, tmp_path) is None
    assert cgroup_room(tmp_path / "missing", tmp_path) is None
    (tmp_path / "a" / "memory.max").write_text("garbage\n")
    assert cgroup_room(proc, tmp_path) is None


def test_v1_beside_the_unified_hierarchy(tmp_path: Path) -> None:
    """The hybrid layout: v1 controllers under their own mounts, v2 at root/unified."""
    container = tmp_path / "memory" / "docker" / "c1"
    write(container, memory_limit_in_bytes=str(2 * GB), memory_usage_in_bytes=str(GB))
    (container / "memory.stat").write_text(f"cache 9\ntotal_inactive_file {GB // 2}\n")
    write(tmp_path / "memory", memory_limit_in_bytes="9223372036854771712", memory_usage_in_bytes="1")
    write(tmp_path / "unified")
    proc = tmp_path / "self-cgroup"
    proc.write_text("5:cpu,cpuacct:/docker/c1\n4:memory:/docker/c1\n0::/\n")
    assert cgroup_room(proc, tmp_path) == GB + GB // 2


def test_a_group_named_from_outside_the_namespace_reads_the_root(tmp_path: Path) -> None:
    """In a container the path names the host's group, which is mounted as the root."""
    proc = v2(tmp_path, "", memory_max=str(2 * GB), memory_current=str(GB))
    proc.write_text("0::/../../host/group\n")
    assert cgroup_room(proc, tmp_path) == GB


def test_available_memory_is_the_smaller(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(memory, "cgroup_room", lambda: 1000)
    assert available_memory() == 1000
    monkeypatch.setattr(memory, "cgroup_room", lambda: None)
    assert available_memory() == pytest.approx(psutil.virtual_memory().available, rel=0.2)


def test_sizes_are_rounded_into_the_next_unit_rather_than_shown_as_a_thousand():
    assert [format_count(n) for n in (999, 47_936, 999_400, 999_600, 19_050_000)] == [
        "999",
        "48K",
        "999K",
        "1.00M",
        "19.05M",
    ]
    assert [format_bytes(n) for n in (182e6, 999.4e6, 999.7e6, 61.3e9)] == [
        "182 MB",
        "999 MB",
        "1.0 GB",
        "61.3 GB",
    ]
