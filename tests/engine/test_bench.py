import argparse
import io
import json

import pytest

from engine import bench
from engine.cli import UsageError


def run_bench(*argv: str) -> str:
    parser = argparse.ArgumentParser()
    bench.add_parser(parser.add_subparsers(dest="command"))
    out = io.StringIO()
    assert bench.cmd_bench(parser.parse_args(["bench", *argv]), out) == 0
    return out.getvalue()


def test_bench_reports_speed_mfu_and_memory_for_each_row():
    args = ("--presets", "tiny", "--batch", "1,2", "--threads", "1", "--iters", "3", "--json")
    result = json.loads(run_bench(*args))
    assert result["blas"] and result["peak_gflops"]["1"] > 0
    rows = result["rows"]
    assert [(r["preset"], r["batch"], r["threads"]) for r in rows] == [("tiny", 1, 1), ("tiny", 2, 1)]
    for r in rows:
        assert r["ms_p10"] <= r["ms_median"] <= r["ms_p90"]
        assert r["gflops"] > 0 and 0 < r["mfu"]
        assert 1.0 <= r["arena_ratio"] <= 1.2  # arena high-water against the analytic activations
        assert r["rss_mb"] > 0


def test_bench_prints_a_table_with_versions():
    text = run_bench("--presets", "tiny", "--batch", "1", "--threads", "1", "--iters", "2")
    assert "BLAS" in text and "GFLOP/s" in text
    assert any(line.startswith("tiny") for line in text.splitlines())


def test_bench_refuses_bad_lists():
    with pytest.raises(UsageError, match="whole numbers"):
        run_bench("--batch", "one")
    with pytest.raises(UsageError, match="--iters takes a number of iterations"):
        run_bench("--iters", "-3")
