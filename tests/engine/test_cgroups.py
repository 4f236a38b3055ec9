"""CPU quotas from cgroups (memory limits are tested in test_memory), on fake hierarchies."""

from pathlib import Path

import pytest

from engine import blas
from engine.cgroups import cpu_limit
from tests.engine.test_memory import v2, write


def test_a_v2_quota_allows_its_cpus_rounded_up_and_the_tightest_ancestor_binds(tmp_path: Path) -> None:
    proc = v2(tmp_path, "machine.slice/app", cpu_max="150000 100000")
    assert cpu_limit(proc, tmp_path) == 2  # 1.5 CPUs of time: two threads get their share
    write(tmp_path / "machine.slice", cpu_max="100000 100000")
    assert cpu_limit(proc, tmp_path) == 1
    write(tmp_path / "machine.slice", cpu_max="max 100000")
    (tmp_path / "machine.slice" / "app" / "cpu.max").write_text("max 100000\n")
    assert cpu_limit(proc, tmp_path) is None


def test_a_v1_quota_under_the_joined_controllers_mount(tmp_path: Path) -> None:
    """Docker on a hybrid host: cpu and cpuacct share a mount named after both."""
    container = tmp_path / "cpu,cpuacct" / "docker" / "c1"
    write(container, cpu_cfs_quota_us="200000", cpu_cfs_period_us="100000")
    write(tmp_path / "cpu,cpuacct", cpu_cfs_quota_us="-1", cpu_cfs_period_us="100000")
    write(tmp_path / "unified")
    proc = tmp_path / "self-cgroup"
    proc.write_text("5:cpu,cpuacct:/docker/c1\n4:memory:/docker/c1\n0::/\n")
    assert cpu_limit(proc, tmp_path) == 2
    (container / "cpu.cfs_quota_us").write_text("-1\n")
    assert cpu_limit(proc, tmp_path) is None


def test_no_cgroups_or_unreadable_quotas_are_no_limit(tmp_path: Path) -> None:
    assert cpu_limit(tmp_path / "missing", tmp_path) is None
    proc = v2(tmp_path, "a", cpu_max="garbage")
    assert cpu_limit(proc, tmp_path) is None
    (tmp_path / "a" / "cpu.max").write_text("100000 0\n")
    assert cpu_limit(proc, tmp_path) is None


def test_the_cores_used_are_the_fewer_of_affinity_and_quota(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(blas, "cores_here", lambda: 64)
    monkeypatch.setattr(blas, "cpu_limit", lambda: 2)
    assert blas.cpu_count() == 2  # a container with --cpus=2 on a 64-core host
    monkeypatch.setattr(blas, "cpu_limit", lambda: 128)
    assert blas.cpu_count() == 64
    monkeypatch.setattr(blas, "cpu_limit", lambda: None)
    assert blas.cpu_count() == 64
