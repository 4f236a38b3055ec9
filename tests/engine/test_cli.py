import io
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from engine.blas import cpu_count
from engine.config import PRESETS
from engine.memory import HELPER_BYTES
from engine.parallel import shards_for
from tests.conftest import fail_steps

ROOT = Path(__file__).resolve().parents[2]


def chargpt(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-m", "engine.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        cwd=Path.cwd(),  # a test's own folder (see run_in_tmp_path): runs/ lands there
        check=False,
    )


pytestmark = pytest.mark.usefixtures("run_in_tmp_path")


def test_train_tiny_for_50_iterations_prints_a_decreasing_loss(corpus_file):
    r = chargpt("train", "--preset", "tiny", "--iters", "50", "--corpus", str(corpus_file), "--threads", "1")
    assert r.returncode == 0, r.stderr
    losses = [float(x) for x in re.findall(r"^iter.* loss (\d+\.\d+)", r.stdout, re.MULTILINE)]
    assert 5 <= len(losses) <= 21  # "about 20 lines" (50 iterations printed 25)
    assert losses[-1] < losses[0] - 0.5
    assert "validation loss" in r.stdout and "sample:" in r.stdout


def test_json_summary_is_the_last_line(corpus_file):
    r = chargpt(
        "train", "--iters", "5", "--batch", "4", "--corpus", str(corpus_file), "--json", "--threads", "1"
    )
    assert r.returncode == 0, r.stderr
    summary = json.loads(r.stdout.strip().splitlines()[-1])
    for key in ("preset", "params", "iters", "train_loss", "val_loss", "ms_per_iter", "threads"):
        assert key in summary
    assert summary["iters"] == 5 and summary["threads"] == 1


def test_every_setting_can_be_overridden(corpus_file):
    r = chargpt(
        "train",
        "--corpus",
        str(corpus_file),
        "--json",
        "--layers",
        "2",
        "--heads",
        "4",
        "--dims",
        "32",
        "--ff",
        "64",
        "--context",
        "16",
        "--batch",
        "3",
        "--iters",
        "4",
        "--lr",
        "0.01",
        "--min-lr",
        "0.001",
        "--warmup",
        "2",
        "--weight-decay",
        "0.05",
        "--clip",
        "0.5",
        "--seed",
        "7",
        "--threads",
        "1",
    )
    assert r.returncode == 0, r.stderr
    s = json.loads(r.stdout.strip().splitlines()[-1])
    assert s["model"] | {"vocab_size": 0} == {
        "vocab_size": 0,
        "n_layers": 2,
        "n_heads": 4,
        "d_model": 32,
        "d_ff": 64,
        "context": 16,
    }
    assert s["train"]["batch_size"] == 3 and s["train"]["lr"] == 0.01 and s["train"]["grad_clip"] == 0.5
    assert s["train"]["seed"] == 7 and s["train"]["weight_decay"] == 0.05 and s["train"]["warmup_iters"] == 2


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--preset", "huge"], "unknown preset 'huge'"),
        (["--corpus", "/no/such/file.txt"], "corpus file not found"),
        (["--corpus", "/dev/null"], "/dev/null is empty"),  # not "null is empty"
        (["--heads", "3"], "--heads must divide the model width (64), got 3"),
        (["--iters", "0"], "--iters must be at least 1, got 0"),  # flags named as typed, not fields
        (["--warmup", "-5"], "--warmup must be 0 or more, got -5"),
        (["--eval-every", "-1"], "--eval-every must be 0 or more"),
        (["--seed", "-1"], "--seed must be 0 or more, got -1"),
        (["--sample-chars", "-4"], "--sample-chars takes a number of characters"),  # not after training
        (["--log-every", "-1"], "--log-every takes a number of iterations"),
        (["--min-lr", "0.01"], "--min-lr 0.01 is above the learning rate 0.003"),  # it would climb
        (["--lr", "inf"], "--lr must be a positive number"),
        (["--preset", "large", "--batch", "4096"], "lower the batch size to"),  # 180 GB
        # what the window's fields cannot hold: such a run would load there with wrong settings
        (["--seed", "3000000000"], "--seed must be at most 2,147,483,647, got 3,000,000,000"),
        (["--iters", "99999999999999999999999"], "--iters must be at most 10,000,000"),
        (["--batch", "5000"], "--batch must be at most 4,096, got 5,000"),
        (["--threads", "999"], "--threads must be between"),
    ],
)
def test_bad_input_exits_nonzero_with_one_line(args, message):
    r = chargpt("train", *args)
    assert r.returncode == 2
    assert message in r.stderr
    assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1


def test_a_learning_rate_brings_the_presets_minimum_along_in_proportion():
    from engine.cli import build_configs, build_parser

    def train(*flags: str):
        return build_configs(build_parser().parse_args(["train", *flags]), 65)[1]

    tiny = PRESETS["tiny"].train  # lr 3e-3, min_lr 3e-4
    assert train("--lr", "1e-4").min_lr == pytest.approx(1e-5)  # not 3e-4, above the rate
    assert train("--lr", "1e-4", "--min-lr", "0").min_lr == 0
    assert train().min_lr == tiny.min_lr


def test_fewer_iterations_shorten_the_presets_warmup_in_proportion():
    """tiny warms up for 100 of its 2,000 iterations: a 100-iteration run was all warmup."""
    from engine.cli import build_configs, build_parser
    from engine.optim import lr_at

    def train(*flags: str):
        return build_configs(build_parser().parse_args(["train", *flags]), 65)[1]

    short = train("--iters", "100")
    assert short.warmup_iters == 5  # 100 x 100 / 2,000
    assert lr_at(99, short) < 0.5 * short.lr  # and it decays
    assert train("--iters", "20000").warmup_iters == 100  # never longer than the preset's
    assert train("--iters", "100", "--warmup", "50").warmup_iters == 50  # as given
    assert train("--iters", "1").warmup_iters == 0


def test_info_says_when_a_cgroup_holds_the_memory_down():
    from engine.cli import _limited

    assert _limited({"memory_available": 3, "memory_cgroup_room": 3}) == " (held there by a cgroup limit)"
    assert _limited({"memory_available": 3, "memory_cgroup_room": 9}) == ""  # the system's is less
    assert _limited({"memory_available": 3, "memory_cgroup_room": None}) == ""


def test_info_says_when_a_cpu_quota_holds_the_cores_down(monkeypatch):
    from engine import cli

    monkeypatch.setattr(cli, "cores_here", lambda: 64)
    assert cli._quota({"cores_cgroup_limit": 2}) == " (held there by a cgroup CPU quota)"
    assert cli._quota({"cores_cgroup_limit": 64}) == ""
    assert cli._quota({"cores_cgroup_limit": None}) == ""


def test_version():
    from engine import __version__

    r = chargpt("--version")
    assert r.returncode == 0 and r.stdout == f"chargpt {__version__}\n"


def test_info_lists_presets_with_parameter_counts_and_blas():
    r = chargpt("info", "--json")
    assert r.returncode == 0, r.stderr
    info = json.loads(r.stdout)
    assert info["presets"]["small"]["params_at_vocab_65"] == 421_632
    # the memory training takes at the preset's batch (37 MB, and a helper process per further
    # core where the batch is split), against what this machine has
    small = PRESETS["small"]
    helpers = shards_for(small.model_for(65), small.train.batch_size, cpu_count()) - 1
    own = info["presets"]["small"]["train_bytes_at_vocab_65"] - helpers * (HELPER_BYTES + 4 * 421_632)
    assert 30e6 < own < 45e6 and info["memory_available"] > 0
    assert info["blas"]["library"] and info["cores"] >= 1


def test_auto_threads_reports_the_count_it_chose(corpus_file):
    r = chargpt("train", "--iters", "30", "--batch", "4", "--corpus", str(corpus_file), "--json")
    assert r.returncode == 0, r.stderr
    assert "is fastest here" in r.stderr
    summary = json.loads(r.stdout.strip().splitlines()[-1])
    assert 1 <= summary["threads"] <= (os.cpu_count() or 1)


def test_bench_runs_from_the_command_line():
    r = chargpt("bench", "--presets", "tiny", "--batch", "1", "--threads", "1", "--iters", "2")
    assert r.returncode == 0, r.stderr
    assert "GFLOP/s" in r.stdout
    r = chargpt("bench", "--presets", "nope")
    assert r.returncode == 2
    assert "unknown preset" in r.stderr


def test_running_out_of_memory_is_one_line_not_a_traceback(corpus_file, monkeypatch, capsys):
    from engine import checkpoint, cli

    fail_steps(monkeypatch, MemoryError("Unable to allocate 3.1 GiB"), at=2)
    code = cli.main(
        ["train", "--iters", "5", "--corpus", str(corpus_file), "--threads", "1", "--run-dir", "r"]
    )
    captured = capsys.readouterr()
    err = captured.err.strip().splitlines()
    assert code == 1
    # the iterations done are kept, with the command that carries on from them
    assert checkpoint.load("r/checkpoints/final.safetensors").iteration == 2
    assert (
        "continue with: chargpt train --resume r/checkpoints/final.safetensors --iters 5 --threads 1"
        in captured.out
    )
    assert err[-1].startswith("chargpt: error: out of memory (Unable to allocate 3.1 GiB); lower the batch")


def test_an_output_closed_as_a_run_fails_still_closes_its_trainer(corpus_file, monkeypatch, capsys):
    from engine import cli
    from engine.trainer import Trainer

    closed = []
    real_close = Trainer.close

    def close(self: Trainer) -> None:
        closed.append(self)
        real_close(self)

    class ClosedAtSaved(io.StringIO):  # the reader leaves just as the failed run tells its checkpoint
        def write(self, text: str) -> int:
            if "saved" in text:
                raise BrokenPipeError(32, "Broken pipe")
            return super().write(text)

    monkeypatch.setattr(Trainer, "close", close)
    fail_steps(monkeypatch, MemoryError("Unable to allocate 3.1 GiB"), at=2)
    args = ["train", "--iters", "5", "--corpus", str(corpus_file), "--threads", "1", "--run-dir", "r"]
    code = cli.main(args, out=ClosedAtSaved())
    # the error is told and the trainer closed (which ends its helper processes and gives its
    # arena back), where the pipe's error skipped both and said 0
    assert code == 1 and closed
    assert "chargpt: error: out of memory" in capsys.readouterr().err


def test_every_train_option_says_what_it_does():
    from engine.cli import build_parser

    train = build_parser()._subparsers._group_actions[0].choices["train"]  # argparse keeps it there
    silent = [a.option_strings[0] for a in train._actions if a.option_strings and not a.help]
    assert not silent


def test_a_closing_sample_that_overflows_leaves_the_run_a_success(corpus_file, monkeypatch, capsys):
    from engine import cli
    from engine.trainer import NonFiniteModel, Trainer

    def overflowing(*args, **kwargs):
        raise NonFiniteModel("the model's outputs are not finite numbers")

    monkeypatch.setattr(Trainer, "generate", overflowing)
    args = ["train", "--iters", "3", "--batch", "4", "--corpus", str(corpus_file), "--threads", "1"]
    code = cli.main([*args, "--sample-every", "0", "--json", "--run-dir", "r"])
    captured = capsys.readouterr()
    assert code == 0 and json.loads(captured.out.strip().splitlines()[-1])["iters"] == 3
    assert "no sample: the model's outputs are not finite numbers" in captured.err


def test_resumed_whole_number_settings_are_the_same_only_when_equal():
    from engine.cli import _same

    assert not _same(1_234_567_890, 1_234_567_891)  # a seed one apart was taken as the same
    assert _same(0.0001, 0.0001 * 0.001 / 0.001) and _same(0.0001, 9.999999999999999e-05)


def test_a_checkpoint_from_before_the_limits_still_samples_and_resumes(tmp_path):
    """The limits are for new runs: a checkpoint with a seed past them was called damaged."""
    from engine import checkpoint
    from engine.data import Corpus
    from engine.trainer import Trainer
    from tests.engine.conftest import VERSE, tiny_configs

    text = tmp_path / "verse.txt"
    text.write_text(VERSE * 2, encoding="utf-8")
    corpus = Corpus.from_file(text)
    model_cfg, train_cfg = tiny_configs(corpus, seed=3_000_000_000, max_iters=4, batch_size=2)
    trainer = Trainer(model_cfg, train_cfg, corpus)
    trainer.step()
    old = checkpoint.save(trainer, tmp_path / "old.safetensors")
    trainer.close()
    r = chargpt("sample", str(old), "--tokens", "10", "--seed", "1")
    assert r.returncode == 0, r.stderr
    r = chargpt("train", "--resume", str(old), "--threads", "1", "--run-dir", "resumed")
    assert r.returncode == 0, r.stderr
    r = chargpt("train", "--resume", str(old), "--iters", "20000000")  # what is typed is checked
    assert r.returncode == 2 and "--iters must be at most 10,000,000" in r.stderr
