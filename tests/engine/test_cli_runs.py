"""The command line's run folders, resume, Ctrl-C, sample and export."""

import errno
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import safetensors.numpy

from engine import checkpoint
from engine.runlog import RunFollower, read_run
from tests.engine.test_cli import ROOT, chargpt

FAST = ("--batch", "4", "--threads", "1", "--eval-iters", "2")


pytestmark = pytest.mark.usefixtures("run_in_tmp_path")


@pytest.fixture
def trained(tmp_path, corpus_file) -> Path:
    """A run folder of 16 iterations with checkpoints every 4 (a module's worth of setup)."""
    r = chargpt(
        "train", "--iters", "16", "--checkpoint-every", "4", "--keep", "2", "--eval-every", "4",
        "--sample-every", "8", "--corpus", str(corpus_file), "--run-dir", "straight", *FAST,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    return tmp_path / "straight"


def test_train_writes_a_run_folder(trained):
    run = read_run(trained)
    assert [r["iter"] for r in run.records] == list(range(1, 17))
    assert [r["iter"] for r in run.records if "val_loss" in r] == [4, 8, 12, 16]
    assert len(RunFollower(run.run_dir).poll_samples()) == 2
    assert run.config["preset"] == "tiny" and run.config["checkpoint_every"] == 4
    assert sorted(p.name for p in run.checkpoints) == [
        "best.safetensors",
        "final.safetensors",
        "iter_000012.safetensors",
        "iter_000016.safetensors",
    ]


def test_a_run_folder_that_holds_a_run_already_gets_a_numbered_sibling(trained, tmp_path, corpus_file):
    before = (trained / "metrics.jsonl").read_bytes()
    r = chargpt(
        "train", "--iters", "8", "--checkpoint-every", "4", "--keep", "2", "--corpus", str(corpus_file),
        "--run-dir", "straight", "--seed", "7", *FAST,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert "run folder: straight-2 (straight holds a run already)" in r.stdout
    assert (trained / "metrics.jsonl").read_bytes() == before  # the first run's records, as they were
    second = read_run(tmp_path / "straight-2")
    assert [rec["iter"] for rec in second.records] == list(range(1, 9))
    assert second.config["train"]["seed"] == 7
    # its own periodic checkpoints stay: the first run's later ones no longer count as newer
    assert {p.name for p in second.checkpoints} >= {"iter_000004.safetensors", "iter_000008.safetensors"}


def test_the_default_run_folder_is_new_under_runs(tmp_path, corpus_file):
    r = chargpt("train", "--iters", "2", "--corpus", str(corpus_file), "--json", *FAST)
    assert r.returncode == 0, r.stderr
    summary = json.loads(r.stdout.strip().splitlines()[-1])
    run_dir = Path(summary["run_dir"])
    assert run_dir.parent == Path("runs") and (tmp_path / run_dir / "config.json").exists()
    assert checkpoint.load(tmp_path / summary["checkpoint"]).iteration == 2


def test_resume_reproduces_the_uninterrupted_run(trained, tmp_path):
    # iter_000008 was rotated away by --keep 2; take the one at 12 (the run of 16 is what matters)
    r = chargpt(
        "train", "--resume", str(trained / "checkpoints" / "iter_000012.safetensors"), "--iters", "16",
        "--run-dir", "resumed", "--eval-iters", "2", "--threads", "1",
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert "resuming at iteration 12" in r.stdout
    straight, resumed = read_run(trained), read_run(tmp_path / "resumed")
    assert resumed.config["resumed_from"].endswith("iter_000012.safetensors")
    assert [(x["iter"], x["loss"], x.get("val_loss")) for x in resumed.records] == [
        (x["iter"], x["loss"], x.get("val_loss")) for x in straight.records[12:]
    ]
    a = safetensors.numpy.load_file(trained / "checkpoints" / "final.safetensors")
    b = safetensors.numpy.load_file(tmp_path / "resumed" / "checkpoints" / "final.safetensors")
    assert a.keys() == b.keys()
    for name in a:
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)


def test_a_model_of_no_preset_is_not_called_one(corpus_file):
    r = chargpt("train", "--layers", "2", "--iters", "2", "--corpus", str(corpus_file), "--json", *FAST)
    assert r.returncode == 0, r.stderr
    assert r.stderr.startswith("training a custom model: 2 layers × 64")  # not "training tiny"
    summary = json.loads(r.stdout.strip().splitlines()[-1])
    assert summary["preset"] is None and read_run(Path(summary["run_dir"])).config["preset"] is None
    assert not Path(summary["run_dir"]).name.endswith("_tiny")


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="needs CPU affinity (Linux)")
def test_on_one_core_auto_threads_has_nothing_to_time(corpus_file):
    one_core = (  # set in the child itself: a preexec_fn is not safe beside this process's threads
        "import os, runpy; os.sched_setaffinity(0, {min(os.sched_getaffinity(0))}); "
        "runpy.run_module('engine.cli', run_name='__main__')"
    )
    r = subprocess.run(
        [sys.executable, "-c", one_core, "train", "--iters", "2", "--corpus", str(corpus_file)],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        check=False,
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines()[0].endswith(", 1 BLAS thread")
    assert "is fastest here" not in r.stdout


def test_resume_refuses_settings_the_checkpoint_fixes_and_takes_them_as_they_are(trained, corpus_file):
    final = str(trained / "checkpoints" / "final.safetensors")
    r = chargpt(
        "train", "--resume", final, "--lr", "0.1", "--preset", "small", "--heads", "2", "--seed", "1234567"
    )
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1
    for said in (
        "--preset small (the checkpoint's model is tiny)",
        "--lr 0.1 (the checkpoint's is 0.003)",
        "--seed 1234567 (the checkpoint's is 1337)",  # as typed, not 1.23457e+06
    ):
        assert said in r.stderr
    assert "--heads" not in r.stderr  # tiny has 2
    # the first command line, with --resume and a new total: what is fixed is given as it is
    r = chargpt(
        "train", "--iters", "20", "--corpus", str(corpus_file), "--run-dir", "again", *FAST,
        "--preset", "tiny", "--resume", final,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert checkpoint.load(Path("again") / "checkpoints" / "final.safetensors").iteration == 20


def test_resume_takes_the_first_command_line_of_a_customised_model(corpus_file):
    line = [
        "train",
        "--preset",
        "tiny",
        "--layers",
        "2",
        "--lr",
        "0.001",
        "--corpus",
        str(corpus_file),
        *FAST,
    ]
    assert chargpt(*line, "--iters", "4", "--run-dir", "first").returncode == 0
    # --preset with the model's overrides describes the checkpoint's model; --min-lr as it was derived
    r = chargpt(
        *line,
        "--min-lr",
        "0.0001",
        "--iters",
        "6",
        "--run-dir",
        "again",
        "--resume",
        "first/checkpoints/final.safetensors",
    )
    assert r.returncode == 0, r.stderr
    assert checkpoint.load("again/checkpoints/final.safetensors").iteration == 6


def test_resume_asks_for_a_corpus_that_is_gone(tmp_path, corpus_file):
    text = tmp_path / "moved.txt"
    text.write_text(corpus_file.read_text(encoding="utf-8"), encoding="utf-8")
    r = chargpt("train", "--iters", "2", "--corpus", str(text), "--run-dir", "r", *FAST)
    assert r.returncode == 0, r.stderr
    text.rename(tmp_path / "elsewhere.txt")
    final = str(tmp_path / "r" / "checkpoints" / "final.safetensors")
    r = chargpt("train", "--resume", final, "--iters", "3", "--threads", "1")
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1
    assert "moved.txt" in r.stderr and "--corpus FILE" in r.stderr
    r = chargpt("train", "--resume", final, "--iters", "3", "--corpus", str(tmp_path / "elsewhere.txt"))
    assert r.returncode == 0, r.stderr


@pytest.mark.parametrize(
    ("signum", "told"),
    [
        (signal.SIGINT, "interrupted"),  # Ctrl-C
        (signal.SIGTERM, "stopped by SIGTERM"),  # kill, timeout, a cancelled CI job: all was lost
        (signal.SIGHUP, "stopped by SIGHUP"),  # its terminal closed: all was lost
    ],
)
def test_a_stop_signal_saves_at_the_iteration_boundary_and_exits_128_plus_it(
    tmp_path, corpus_file, signum, told
):
    with training_endlessly(corpus_file) as proc:
        proc.send_signal(signum)
        out, err = proc.communicate(timeout=60)
    assert proc.returncode == 128 + signum, err
    assert "Traceback" not in err and f"{told} at iteration" in out
    assert f"continue with: {RESUME}" in out
    assert_saved_where_it_stopped(tmp_path)


def test_a_closed_output_stops_training_as_ctrl_c_does_and_exits_141(tmp_path, corpus_file):
    with training_endlessly(corpus_file) as proc:
        proc.stdout.close()  # `chargpt train | head -3`: it went on saying nothing, then exited 0
        err = proc.stderr.read()
        proc.wait(timeout=60)
    assert proc.returncode == 128 + signal.SIGPIPE, err
    [line] = err.splitlines()
    assert line.startswith("chargpt: output closed at iteration") and f"; continue with: {RESUME}" in line
    assert_saved_where_it_stopped(tmp_path)


def test_with_standard_error_closed_too_the_run_still_ends_saved_and_exits_141(tmp_path, corpus_file):
    with training_endlessly(corpus_file) as proc:
        proc.stdout.close()
        proc.stderr.close()
        proc.wait(timeout=60)
    assert proc.returncode == 128 + signal.SIGPIPE  # not 1 (a traceback) or 120 (a failed flush)
    assert_saved_where_it_stopped(tmp_path)


# one BLAS thread keeps a resumed run the very same: the command says so
RESUME = "chargpt train --resume run/checkpoints/final.safetensors --iters 100000 --threads 1"


@contextmanager
def training_endlessly(corpus_file: Path) -> Iterator[subprocess.Popen[str]]:
    """``chargpt train`` of 100,000 iterations into run/, once its first progress line is out."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "engine.cli", "train", "--iters", "100000", "--log-every", "1",
         "--corpus", str(corpus_file), "--run-dir", "run", *FAST],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            if line.startswith("iter"):
                break
        yield proc
    finally:
        proc.kill()


def assert_saved_where_it_stopped(tmp_path: Path) -> None:
    ckpt = checkpoint.load(tmp_path / "run" / "checkpoints" / "final.safetensors")
    assert 1 <= ckpt.iteration < 100000
    assert read_run(tmp_path / "run").records[-1]["iter"] == ckpt.iteration


def test_a_second_stop_signal_interrupts_at_once_with_its_own_status(monkeypatch):
    from engine import cli
    from engine.cli import Interrupted, Stop

    before = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    stop = Stop()
    with stop.on_signals():
        signal.raise_signal(signal.SIGTERM)  # the first waits for the iteration to end
        assert stop.signum == signal.SIGTERM
        with pytest.raises(Interrupted) as second:
            signal.raise_signal(signal.SIGHUP)
    assert second.value.signum == signal.SIGHUP
    assert {s: signal.getsignal(s) for s in before} == before  # as they were

    def interrupted(*args):
        raise second.value

    monkeypatch.setattr(cli, "cmd_info", interrupted)
    assert cli.main(["info"]) == 128 + signal.SIGHUP


def test_a_signal_set_to_be_ignored_stays_ignored(monkeypatch):
    """Under `nohup`, SIGHUP is ignored so that the run outlives its terminal: the handler
    replaced that, and closing the terminal stopped the run."""
    from engine.cli import Stop

    previous = signal.signal(signal.SIGHUP, signal.SIG_IGN)
    try:
        stop = Stop()
        with stop.on_signals():
            signal.raise_signal(signal.SIGHUP)
            assert stop.signum is None
            assert signal.getsignal(signal.SIGHUP) == signal.SIG_IGN
        assert signal.getsignal(signal.SIGHUP) == signal.SIG_IGN
    finally:
        signal.signal(signal.SIGHUP, previous)


def test_sample_streams_a_reproducible_continuation(trained):
    ckpt = str(trained / "checkpoints" / "final.safetensors")
    args = ("sample", ckpt, "--prompt", "To be", "--tokens", "30", "--temperature", "0.9", "--top-k", "8")
    first = chargpt(*args, "--seed", "5", "--num-samples", "2")
    assert first.returncode == 0, first.stderr
    samples = first.stdout.split("\n---\n")
    assert len(samples) == 2 and all(s.startswith("To be") and len(s.rstrip("\n")) == 35 for s in samples)
    assert chargpt(*args, "--seed", "5", "--num-samples", "2").stdout == first.stdout
    assert chargpt(*args, "--seed", "6").stdout != samples[0]
    assert chargpt(*args, "--seed", "5").stdout == samples[0]  # the first is the seed's own
    assert chargpt(*args, "--seed", "6").stdout != samples[1]  # the second, no other's first


def test_resuming_a_run_at_its_end_asks_for_a_larger_total(trained, tmp_path):
    final = str(trained / "checkpoints" / "final.safetensors")  # iteration 16 of 16
    cases = [([], "the checkpoint's run ended at iteration 16"), (["--iters", "10"], "--iters 10 is")]
    for extra, said in cases:
        r = chargpt("train", "--resume", final, "--run-dir", "again", *extra)
        assert r.returncode == 2 and said in r.stderr and "--iters (32, say)" in r.stderr
        assert not (tmp_path / "again").exists()  # no run folder holding a copy


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--prompt", "Zounds!"], "not in the model's vocabulary: '!' 'Z'"),
        (["--temperature", "0"], "--temperature must be a positive number, got 0.0"),
        (["--temperature", "nan"], "--temperature must be a positive number, got nan"),
        (["--temperature", "inf"], "--temperature must be a positive number, got inf"),
        (["--seed", "-1"], "--seed must be 0 or more, got -1"),
        (["--top-k", "-3"], "--top-k must be 0 (every character) or more"),
    ],
)
def test_bad_sample_input_is_one_line_and_exit_2(trained, args, message):
    r = chargpt("sample", str(trained / "checkpoints" / "final.safetensors"), *args)
    assert r.returncode == 2 and message in r.stderr
    assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("content", [b"not a checkpoint at all", None])
def test_a_bad_or_missing_checkpoint_is_one_line_and_exit_2(tmp_path, content):
    path = tmp_path / "bad.safetensors"
    if content is not None:
        path.write_bytes(content)
    for args in (
        ["sample", str(path)],
        ["train", "--resume", str(path)],
        ["export", str(path), "--weights-only", "w"],
    ):
        r = chargpt(*args)
        assert r.returncode == 2, args
        assert "bad.safetensors" in r.stderr and "Traceback" not in r.stderr
        assert len(r.stderr.strip().splitlines()) == 1


def test_export_writes_pytorch_named_weights(trained, tmp_path):
    r = chargpt(
        "export", str(trained / "checkpoints" / "final.safetensors"), "--weights-only", "w.safetensors"
    )
    assert r.returncode == 0, r.stderr
    weights = safetensors.numpy.load_file(tmp_path / "w.safetensors")
    cfg = checkpoint.load(trained / "checkpoints" / "final.safetensors").model_cfg
    expected = {checkpoint.torch_name(name): shape for name, shape in cfg.param_shapes()}
    assert {k: v.shape for k, v in weights.items()} == expected
    assert "transformer.h.0.attn.c_attn.weight" in weights and "lm_head.weight" in weights


def test_export_refuses_to_write_over_the_checkpoint_it_exports(trained):
    final = trained / "checkpoints" / "final.safetensors"
    before = final.read_bytes()
    r = chargpt(
        "export",
        str(final),
        "--weights-only",
        str(trained / "checkpoints" / ".." / "checkpoints" / final.name),
    )
    assert (
        r.returncode == 2 and "is the checkpoint being exported" in r.stderr and "Traceback" not in r.stderr
    )
    assert final.read_bytes() == before


def test_a_diverging_run_is_told_in_one_line_and_its_iterations_are_kept(corpus_file):
    r = chargpt(
        "train",
        "--iters",
        "50",
        "--lr",
        "1e30",
        "--clip",
        "0",
        "--corpus",
        str(corpus_file),
        "--run-dir",
        "r",
        *FAST,
    )
    assert r.returncode == 1
    assert ": the loss is nan; lower the learning rate (--lr)" in r.stdout
    assert (
        "Warning" not in r.stderr
    )  # NumPy's overflow warnings, with their source lines, are not for a person
    assert checkpoint.load("r/checkpoints/final.safetensors").iteration >= 1
    r = chargpt("sample", "r/checkpoints/final.safetensors", "--tokens", "20")  # its weights overflow
    assert r.returncode == 2 and "not finite" in r.stderr
    assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1


def test_a_loss_that_settles_above_a_uniform_guess_is_said_once_and_training_goes_on(corpus_file):
    """The window said so; the command line printed a loss of 20 at iteration 100 without a word."""
    common = ("--iters", "150", "--warmup", "0", "--eval-every", "0", "--corpus", str(corpus_file), *FAST)
    r = chargpt("train", "--lr", "3", "--run-dir", "high", *common)
    assert r.returncode == 0, r.stderr
    [said] = [line for line in r.stdout.splitlines() if "worse than knowing nothing" in line]
    assert said.startswith("warning: over the last 100 iterations the loss averaged") and "--lr" in said
    r = chargpt("train", "--run-dir", "fine", *common)  # the preset's rate learns
    assert r.returncode == 0 and "worse than knowing nothing" not in r.stdout


def test_a_split_batch_is_named_as_processes_not_as_blas_threads(corpus_file):
    r = chargpt(
        "train", "--preset", "small", "--batch", "16", "--iters", "1", "--threads", "2", "--eval-iters", "1",
        "--corpus", str(corpus_file), "--run-dir", "split",
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines()[0].endswith(", 2 processes of 1 BLAS thread, the batch split between them")


def test_a_run_resumed_on_another_text_is_not_judged_against_a_uniform_guess(
    corpus_file, tmp_path, monkeypatch, capsys
):
    """Adapting to a new text, a model may start worse than a guess: the window keeps quiet
    then, and so does the command line."""
    from engine import cli, trainer

    monkeypatch.setattr(trainer, "worse_than_a_guess", lambda losses, vocab: 9.9)  # always, here
    common = ["--threads", "1", "--eval-every", "0", "--sample-chars", "0"]
    assert cli.main(["train", "--iters", "3", "--warmup", "0", "--corpus", str(corpus_file), "--run-dir", "r",
                     "--batch", "2", *common]) == 0  # fmt: skip
    other = tmp_path / "other.txt"
    other.write_text(corpus_file.read_text(encoding="utf-8")[::-1], encoding="utf-8")  # its characters
    final = "r/checkpoints/final.safetensors"
    for text, judged in ((corpus_file, True), (other, False)):
        capsys.readouterr()
        assert cli.main(["train", "--resume", final, "--iters", "6", "--corpus", str(text), *common]) == 0
        assert ("worse than knowing nothing" in capsys.readouterr().out) is judged


def test_characters_the_output_encoding_lacks_are_written_in_utf8_to_a_file(tmp_path, monkeypatch):
    """On Windows, output to a file or a pipe is in the ANSI code page (cp1252, say), which has no
    byte for a Chinese text's characters: the closing sample and `sample` were a traceback, exit 1."""
    text = tmp_path / "zh.txt"
    text.write_text("天地玄黄，宇宙洪荒。日月盈昃，辰宿列张。\n" * 20, encoding="utf-8")
    monkeypatch.setenv("PYTHONIOENCODING", "cp1252")
    r = chargpt("train", "--iters", "2", "--corpus", str(text), "--run-dir", "zh", *FAST)
    assert r.returncode == 0, r.stderr
    closing = r.stdout.split("sample:\n")[1]
    assert set(closing.strip()) <= set(text.read_text(encoding="utf-8")) and closing.strip()
    zh = "zh/checkpoints/final.safetensors"
    r = chargpt("sample", zh, "--prompt", "天地", "--tokens", "10", "--seed", "1")
    assert r.returncode == 0, r.stderr
    # the prompt, 10 characters (newlines among them, at times: not to be stripped), the line's end
    assert r.stdout.startswith("天地") and r.stdout.endswith("\n") and len(r.stdout) == 12 + 1


def test_a_run_on_a_text_of_windows_line_ends_resumes_on_that_text(corpus_file, tmp_path, capsys):
    """A checkpoint records the sha256 of the text as read, its line ends made newlines: reading
    a file the same way must keep that digest, or resuming calls the very same text another."""
    from engine import cli

    crlf = tmp_path / "crlf.txt"
    text = corpus_file.read_text(encoding="utf-8").replace(" ", "\n")
    crlf.write_bytes(text.replace("\n", "\r\n").encode("utf-8"))
    common = ["--threads", "1", "--eval-every", "0", "--sample-chars", "0", "--batch", "2"]
    assert cli.main(["train", "--iters", "2", "--corpus", str(crlf), "--run-dir", "r", *common]) == 0
    final = "r/checkpoints/final.safetensors"
    record = checkpoint.load(final).metadata["corpus"]
    assert record["sha256"] == hashlib.sha256(text.encode("utf-8")).hexdigest()
    capsys.readouterr()
    assert cli.main(["train", "--resume", final, "--iters", "3", *common]) == 0
    assert "warning" not in capsys.readouterr().out


def test_a_full_disk_at_the_run_folders_start_is_one_line_exit_2_and_no_folder(
    tmp_path, corpus_file, monkeypatch, capsys
):
    from engine import cli
    from tests.engine.test_runlog import fail_writing

    fail_writing(monkeypatch, "config.json", errno.ENOSPC)
    code = cli.main(["train", "--iters", "2", "--corpus", str(corpus_file), "--run-dir", "full", *FAST])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err
    assert err.strip() == (
        "chargpt: error: cannot write the run folder full: the disk is full; "
        "free some space or save somewhere else"
    )
    assert not (tmp_path / "full").exists()


def refuse_saving(monkeypatch, *where: Path) -> None:
    """Checkpoints named final.safetensors, or under any of ``where``, cannot be written, as on a
    full disk."""
    real_save = checkpoint.save

    def save(trainer, path, run_dir=None):
        path = Path(path)
        if path.name == "final.safetensors" or any(path.is_relative_to(w) for w in where):
            full = "the disk is full; free some space or save somewhere else"
            raise checkpoint.CheckpointError(f"cannot save the checkpoint to {path}: {full}")
        return real_save(trainer, path, run_dir)

    monkeypatch.setattr(checkpoint, "save", save)


def test_a_final_checkpoint_the_run_folder_refuses_is_saved_in_the_working_folder(
    tmp_path, corpus_file, monkeypatch, capsys
):
    from engine import cli

    taken = tmp_path / "chargpt-r-iter_000003.safetensors"
    taken.write_bytes(b"someone's")
    refuse_saving(monkeypatch)
    code = cli.main(["train", "--iters", "3", "--corpus", str(corpus_file), "--run-dir", "r", *FAST])
    out, err = capsys.readouterr()
    kept = tmp_path / "chargpt-r-iter_000003-2.safetensors"
    assert code == 2 and taken.read_bytes() == b"someone's"  # was the model lost, and exit 2
    assert checkpoint.load(kept).iteration == 3
    assert err.strip() == (
        "chargpt: error: cannot save the checkpoint to r/checkpoints/final.safetensors: the disk is full; "
        f"free some space or save somewhere else; the model was saved to {kept} instead"
    )
    assert f"continue with: chargpt train --resume {kept} --iters 6 --threads 1" in out


def test_a_final_checkpoint_nowhere_else_to_go_goes_to_the_temp_folder_at_a_stop_by_signal(
    tmp_path, corpus_file, monkeypatch, capsys
):
    from engine import cli
    from engine.trainer import Trainer

    temp = tmp_path / "temp"
    temp.mkdir()
    monkeypatch.setattr(cli.tempfile, "gettempdir", lambda: str(temp))
    refuse_saving(monkeypatch, tmp_path / "r", tmp_path / "chargpt-r-iter_000002.safetensors")
    real_step = Trainer.step

    def step(self: Trainer):  # SIGTERM during iteration 2
        if self.iteration == 1:
            os.kill(os.getpid(), signal.SIGTERM)
        return real_step(self)

    monkeypatch.setattr(Trainer, "step", step)
    code = cli.main(["train", "--iters", "50", "--corpus", str(corpus_file), "--run-dir", "r", *FAST])
    out = capsys.readouterr().out
    kept = temp / "chargpt-r-iter_000002.safetensors"
    assert code == 143 and checkpoint.load(kept).iteration == 2
    assert (
        "stopped by SIGTERM at iteration 2; cannot save the checkpoint to r/checkpoints/final.safetensors: "
        f"the disk is full; free some space or save somewhere else; saved {kept} instead\n"
        f"continue with: chargpt train --resume {kept} --iters 50 --threads 1"
    ) in out


def test_a_final_checkpoint_that_can_go_nowhere_says_where_it_was_tried(
    tmp_path, corpus_file, monkeypatch, capsys
):
    from engine import cli

    monkeypatch.setattr(cli.tempfile, "gettempdir", lambda: str(tmp_path / "temp"))
    refuse_saving(monkeypatch, tmp_path)
    code = cli.main(["train", "--iters", "2", "--corpus", str(corpus_file), "--run-dir", "r", *FAST])
    [line] = capsys.readouterr().err.splitlines()
    assert code == 2 and line.endswith(
        f"; nor could it be saved in {tmp_path} or {tmp_path / 'temp'}: the model is lost"
    )


def test_a_final_checkpoint_goes_to_the_temp_folder_when_the_working_folder_was_deleted(
    tmp_path, corpus_file, monkeypatch, capsys
):
    """The relative run folder of a working folder deleted mid-run has no path: resolving it
    for the file's name raised FileNotFoundError, a traceback, and the model was lost."""
    from engine import cli
    from engine.trainer import Trainer

    temp = tmp_path / "temp"
    temp.mkdir()
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    monkeypatch.setattr(cli.tempfile, "gettempdir", lambda: str(temp))
    real_step = Trainer.step

    def step(self: Trainer):
        if self.iteration == 1:
            shutil.rmtree(work)  # the folder the run was started in, and its run folder with it
        return real_step(self)

    monkeypatch.setattr(Trainer, "step", step)
    code = cli.main(["train", "--iters", "3", "--corpus", str(corpus_file), *FAST])
    assert code == 2
    [kept] = temp.glob("chargpt-*_tiny-iter_000003.safetensors")
    assert checkpoint.load(kept).iteration == 3
    assert f"saved to {kept} instead" in capsys.readouterr().err


@pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="needs two cores")
def test_the_summary_names_autos_choice_not_a_count_it_was_timing_when_the_run_ended(
    tmp_path, corpus_file, monkeypatch, capsys
):
    from engine import blas, cli

    class Scripted(blas.ThreadTuner):
        """Two threads take 1 ms a step, one takes 2; a look again after 20 steps."""

        def __init__(self, apply):
            self.count = 1
            super().__init__([1, 2], apply=self.track(apply), window=5, recheck_s=0.0)

        def track(self, apply):
            def tracked(n: int) -> int:
                self.count = n
                return apply(n)

            return tracked

        def after_step(self, seconds):
            return super().after_step(0.002 if self.count == 1 else 0.001)

    monkeypatch.setattr(cli, "ThreadTuner", Scripted)
    # chosen 2 at step 8; the look begins after step 28, and step 30 runs on one thread
    args = ["train", "--iters", "30", "--corpus", str(corpus_file), "--json", "--batch", "4"]
    assert cli.main([*args, "--eval-iters", "2", "--run-dir", str(tmp_path / "r")]) == 0
    summary = json.loads(capsys.readouterr().out.splitlines()[-1])
    assert summary["threads"] == 2


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_in_the_last_validation_is_a_stop_with_a_command_that_resumes(
    corpus_file, monkeypatch, capsys, signum
):
    """A signal during the last iteration's validation, which it cut short, left no loss to
    tell: the summary formatted None, a traceback and status 1."""
    from engine import cli
    from engine.trainer import Trainer

    real_evaluate = Trainer.evaluate

    def signalled(self: Trainer, *args, **kwargs):
        if self.iteration == self.train_cfg.max_iters:
            signal.raise_signal(signum)  # Ctrl-C, or kill, as the last validation starts
        return real_evaluate(self, *args, **kwargs)

    monkeypatch.setattr(Trainer, "evaluate", signalled)
    code = cli.main(["train", "--iters", "3", "--corpus", str(corpus_file), "--run-dir", "r", *FAST])
    out = capsys.readouterr().out
    assert code == 128 + signum, out
    assert checkpoint.load("r/checkpoints/final.safetensors").iteration == 3
    # at the total already: the command carries it on to a larger one, which --resume takes
    assert "at iteration 3; saved r/checkpoints/final.safetensors" in out
    assert "continue with: chargpt train --resume r/checkpoints/final.safetensors --iters 6 " in out


def test_sample_takes_a_weights_only_export_as_it_takes_the_checkpoint(trained, tmp_path):
    """The export's metadata holds the settings and the vocabulary, all that sampling needs
    besides the weights; it was refused as "exported weights only"."""
    final = str(trained / "checkpoints" / "final.safetensors")
    assert chargpt("export", final, "--weights-only", "w.safetensors").returncode == 0
    args = ("--prompt", "To be", "--tokens", "30", "--seed", "5")
    r = chargpt("sample", "w.safetensors", *args)
    assert r.returncode == 0, r.stderr
    assert r.stdout == chargpt("sample", final, *args).stdout
    # resuming needs the optimizer's state, which the export leaves out
    r = chargpt("train", "--resume", "w.safetensors")
    assert r.returncode == 2 and "use the checkpoint it was exported from" in r.stderr


@pytest.mark.parametrize(
    ("damage", "told"),
    [
        (lambda meta, tensors: tensors.pop("lm_head.weight"), "lacks tensor lm_head.weight"),
        (lambda meta, tensors: tensors["transformer.wpe.weight"].fill(np.nan), "NaN or infinite"),
        (lambda meta, tensors: meta["vocabulary"].pop(), "its vocabulary of"),
        (lambda meta, tensors: meta["model"].update(n_heads=3), "n_heads must divide"),
        (lambda meta, tensors: meta.update(version=99), "version 99"),
    ],
    ids=["missing", "nan", "vocabulary", "settings", "version"],
)
def test_a_damaged_weights_only_export_is_one_line_and_exit_2(trained, tmp_path, damage, told):
    final = str(trained / "checkpoints" / "final.safetensors")
    assert chargpt("export", final, "--weights-only", "w.safetensors").returncode == 0
    with safetensors.safe_open(tmp_path / "w.safetensors", "numpy") as f:
        header = f.metadata()
    tensors = safetensors.numpy.load_file(tmp_path / "w.safetensors")
    meta = json.loads(header[checkpoint.META_KEY])
    damage(meta, tensors)
    header[checkpoint.META_KEY] = json.dumps(meta)
    safetensors.numpy.save_file(tensors, tmp_path / "w.safetensors", metadata=header)
    r = chargpt("sample", "w.safetensors")
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    [line] = r.stderr.splitlines()
    assert line.startswith("chargpt: error: w.safetensors") and told in line
