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


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--presets", ""], "--presets takes comma-separated names (tiny, small, "),  # an empty table
        (["--presets", " , "], "--presets takes comma-separated names"),
        (["--batch", "5000"], "--batch must be at most 4,096, got 5,000"),  # a traceback
    ],
)
def test_bench_refuses_an_empty_list_or_a_batch_no_run_may_have(args, message, capsys):
    from engine import cli

    assert cli.main(["bench", "--threads", "1", *args]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1


@pytest.fixture
def untimed(monkeypatch):
    """Rows and peaks made up: what is checked is what the table says, not what it measured."""

    def row(name: str, batch: int, threads: int, iters: int | None, *, torch: bool = False) -> bench.Row:
        return bench.Row(name, batch, threads, *[1] * 11, peak_gflops=1.0)

    monkeypatch.setattr(bench, "bench_row", row)
    monkeypatch.setattr(bench, "matmul_peak_gflops", lambda threads: 1.0)


def test_the_nanogpt_row_says_it_keeps_its_own_batch(untimed, capsys):
    said = "the nanogpt row is timed at nanoGPT's own batch of 12, not at --batch 1\n"
    text = run_bench("--presets", "tiny,nanogpt", "--batch", "1", "--threads", "1")
    assert said in text  # the row ran at 12 where 1 was asked for, and nothing said so
    rows = [line.split()[:2] for line in text.splitlines() if line.startswith(("tiny", "nanogpt"))]
    assert rows == [["tiny", "1"], ["nanogpt", "12"]]
    assert "own batch" not in run_bench("--presets", "tiny,nanogpt", "--threads", "1")  # none asked
    result = json.loads(run_bench("--presets", "nanogpt", "--batch", "1", "--threads", "1", "--json"))
    assert [r["batch"] for r in result["rows"]] == [12] and capsys.readouterr().err == said
