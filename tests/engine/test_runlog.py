import errno
import json
import os
import re
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest

from engine.runlog import (
    RunFolderGone,
    RunFollower,
    RunLog,
    RunLogError,
    history,
    led_to,
    new_run_dir,
    read_run,
    unused_run_dir,
)


def test_new_run_dirs_are_fresh_timestamped_folders(tmp_path):
    first, second = new_run_dir(tmp_path / "runs"), new_run_dir(tmp_path / "runs")
    assert first != second and first.is_dir() and second.is_dir()
    assert first.parent == tmp_path / "runs" and first.name[:4].isdigit()
    labelled = [new_run_dir(tmp_path / "runs", "small") for _ in range(2)]  # the preset, say
    assert all(d.name.endswith("_small") for d in labelled) and labelled[0] != labelled[1]


def test_a_run_folder_that_cannot_be_made_says_where_and_what_to_do(tmp_path):
    (tmp_path / "a-file").write_text("x")  # a "folder" that is a file: fails for root too
    with pytest.raises(RunLogError, match=r"cannot create the run folder .*: .*a-file is not a folder but a"):
        new_run_dir(tmp_path / "a-file" / "runs")


@pytest.mark.parametrize(
    ("code", "told"),
    [
        (errno.EROFS, "the disk is read-only; choose another folder"),
        (errno.ENOSPC, "the disk is full; free some space or save somewhere else"),
    ],
)
def test_the_default_run_folder_that_cannot_be_made_is_told_in_words(tmp_path, monkeypatch, code, told):
    """It gave the OS's words ("Read-only file system") and sent the person to check that
    runs/ is a folder they can write to, where --run-dir on the same disk said it plainly."""

    def refused(self: Path, *args: Any, **kwargs: Any) -> None:
        raise OSError(code, os.strerror(code), str(self))

    monkeypatch.setattr(Path, "mkdir", refused)
    with pytest.raises(RunLogError, match=rf"^cannot create the run folder .*runs.*: {told}$"):
        new_run_dir(tmp_path / "runs", "small")


def test_a_run_folder_given_as_a_file_names_that_file(tmp_path, monkeypatch):
    """It blamed the folder holding the file ("." for notes.txt, /dev for /dev/null)."""
    monkeypatch.chdir(tmp_path)
    Path("notes.txt").write_text("keep me")
    told = "notes.txt is not a folder but a file; choose another folder"
    with pytest.raises(RunLogError, match=rf"^cannot write the run folder notes.txt: {told}$"):
        RunLog(Path("notes.txt"))
    with pytest.raises(RunLogError, match=rf"^cannot write the run folder notes.txt/sub: {told}$"):
        RunLog(Path("notes.txt/sub"))
    assert Path("notes.txt").read_text() == "keep me"


def test_a_folder_that_takes_nothing_new_is_not_told_to_try_again(tmp_path, monkeypatch):
    """/proc says "No such file or directory" to a folder made in it, though it is there:
    "try again" could not help."""

    def procfs(path: Path, *args: Any, **kwargs: Any) -> None:
        if os.path.isdir(path):
            raise FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST), str(path))
        raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), str(path))

    monkeypatch.setattr(os, "mkdir", procfs)  # rd/checkpoints, then rd, as Path.mkdir(parents=True) asks
    told = f"{tmp_path} takes no new files or folders; choose another folder"
    with pytest.raises(RunLogError, match=rf"^cannot write the run folder .*rd: {re.escape(told)}$"):
        RunLog(tmp_path / "rd")


def test_a_written_run_reads_back(tmp_path):
    with RunLog(tmp_path / "run") as log:
        log.write_config({"model": {"d_model": 64}})
        for i in range(1, 4):
            log.append({"iter": i, "loss": 3.0 / i} | ({"val_loss": 2.5} if i == 2 else {}))
        log.add_sample(2, "To be")
    run = read_run(tmp_path / "run")
    assert run.config == {"model": {"d_model": 64}}
    assert [r["iter"] for r in run.records] == [1, 2, 3] and run.records[1]["val_loss"] == 2.5
    assert RunFollower(run.run_dir).poll_samples() == [(2, "To be")] and run.checkpoints == []


def test_a_value_that_is_not_a_number_is_written_as_null(tmp_path):
    def strict(constant: str) -> None:
        raise ValueError(f"{constant} is not JSON")

    with RunLog(tmp_path / "run") as log:
        log.append({"iter": 1, "loss": float("nan"), "grad_norm": float("inf"), "lr": 0.001})
    [line] = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    assert json.loads(line, parse_constant=strict) == {
        "iter": 1,
        "loss": None,
        "grad_norm": None,
        "lr": 0.001,
    }


TINY = {"vocab_size": 65, "d_model": 64, "n_heads": 2, "n_layers": 1, "d_ff": 128, "context": 32}


def write_run(run_dir: Path, iters: range, **config: Any) -> Path:
    with RunLog(run_dir) as log:
        log.write_config({"model": TINY, "start_iteration": iters.start - 1, **config})
        for i in iters:
            log.append({"iter": i, "loss": 1.0 / i})
    return run_dir


def test_history_goes_back_through_the_runs_a_run_continued_or_resumed(tmp_path):
    first = write_run(tmp_path / "first", range(1, 601))
    # resumed from first's checkpoint of iteration 200: first counts up to 200 only
    second = write_run(
        tmp_path / "second",
        range(201, 401),
        resumed_from=str(first / "checkpoints" / "iter_000200.safetensors"),
    )
    third = write_run(tmp_path / "third", range(401, 501), continued_from=str(second))
    assert [r["iter"] for r in history(read_run(third))] == list(range(1, 501))
    assert [r["iter"] for r in history(read_run(third), until=450)] == list(range(1, 451))
    assert [r["iter"] for r in history(read_run(second))] == list(range(1, 401))
    gone = write_run(tmp_path / "fourth", range(501, 511), continued_from=str(tmp_path / "deleted"))
    assert [r["iter"] for r in history(read_run(gone))] == list(range(501, 511))  # the chain ends quietly
    loop = write_run(tmp_path / "loop", range(1, 5), continued_from=str(tmp_path / "loop"))
    assert [r["iter"] for r in history(read_run(loop))] == [1, 2, 3, 4]


def test_history_leaves_out_a_run_whose_folder_a_checkpoint_was_only_copied_into(tmp_path):
    """A tiny model's checkpoint in a small run's folder drew the small run's curves as its past."""
    small = write_run(tmp_path / "small", range(1, 401), model={**TINY, "d_model": 128})
    copied = write_run(
        tmp_path / "copied", range(1501, 1801), resumed_from=str(small / "checkpoints" / "mine.safetensors")
    )
    assert [r["iter"] for r in history(read_run(copied))] == list(range(1501, 1801))
    assert not led_to(read_run(small), TINY, None, 1500)
    same_model = write_run(tmp_path / "same", range(1, 401))  # but it never reached 1500
    assert not led_to(read_run(same_model), TINY, None, 1500)
    assert led_to(read_run(same_model), TINY, None, 400)
    seeded = write_run(tmp_path / "seeded", range(1, 401), train={"seed": 7})
    assert led_to(read_run(seeded), TINY, 7, 400) and not led_to(read_run(seeded), TINY, 1337, 400)
    later = write_run(tmp_path / "later", range(1501, 1511), resumed_from=str(same_model / "x.safetensors"))
    assert [r["iter"] for r in history(read_run(later))] == list(range(1501, 1511))


def test_reading_a_folder_that_is_not_a_run_says_so(tmp_path):
    with pytest.raises(RunLogError, match="not a run folder"):
        read_run(tmp_path)
    with pytest.raises(RunLogError, match="run folder not found"):
        read_run(tmp_path / "nope")


WRITER = textwrap.dedent(
    """
    import json, sys, time
    from pathlib import Path
    run = Path(sys.argv[1])
    with (run / "metrics.jsonl").open("a") as f:
        for i in range(1, 6):
            f.write(json.dumps({"iter": i, "loss": 1.0 / i}) + "\\n")
            f.flush()
            time.sleep(0.02)
        line = json.dumps({"iter": 6, "loss": 0.125})
        f.write(line[:9])  # half a line, flushed, as a writer caught mid-write looks
        f.flush()
        (run / "half").touch()
        while not (run / "go").exists():
            time.sleep(0.01)
        f.write(line[9:] + "\\n")
    """
)


def test_the_follower_reads_while_another_process_appends(tmp_path):
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(tmp_path)])
    follower = RunFollower(tmp_path)
    seen: list[dict] = []
    polls = 0
    try:
        deadline = time.monotonic() + 30
        while not (tmp_path / "half").exists():
            assert time.monotonic() < deadline
            seen += follower.poll()
            polls += 1
            time.sleep(0.005)
        seen += follower.poll()
        assert [r["iter"] for r in seen] == [1, 2, 3, 4, 5]  # the half line is held back
        assert follower.poll() == []
        assert read_run_records(tmp_path) == seen
        (tmp_path / "go").touch()
        assert proc.wait(timeout=30) == 0
    finally:
        proc.kill()
    assert follower.poll() == [{"iter": 6, "loss": 0.125}]
    assert follower.poll() == [] and polls > 1


def read_run_records(run_dir: Path) -> list[dict]:
    (run_dir / "config.json").write_text("{}")
    return read_run(run_dir).records


def test_the_follower_starts_before_the_file_exists_and_skips_garbage(tmp_path):
    follower = RunFollower(tmp_path)
    assert follower.poll() == []
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"iter": 1}\nnot json\n{"iter": 2}\n{"it')
    assert follower.poll() == [{"iter": 1}, {"iter": 2}]
    with path.open("a") as f:
        f.write('er": 3}\n')
    assert follower.poll() == [{"iter": 3}]
    path.write_text(json.dumps({"iter": 1}) + "\n")  # replaced by a new, shorter file
    assert follower.poll() == [{"iter": 1}]


def test_rotation_keeps_the_newest_periodic_checkpoints(tmp_path):
    log = RunLog(tmp_path)
    for it in (200, 400, 600, 800, 1000):
        log.periodic_path(it).write_bytes(b"x")
    log.best_path.write_bytes(b"x")
    removed = log.rotate(2)
    assert [p.name for p in removed] == [f"iter_000{i}.safetensors" for i in (200, 400, 600)]
    assert sorted(p.name for p in log.checkpoints.iterdir()) == [
        "best.safetensors",
        "iter_000800.safetensors",
        "iter_001000.safetensors",
    ]
    assert log.rotate(0) == []
    log.close()


def test_the_follower_returns_samples_as_they_are_written(tmp_path):
    log = RunLog(tmp_path)
    follower = RunFollower(tmp_path)
    assert follower.poll_samples() == []  # none yet, and no file
    log.add_sample(500, "To be, or\n\nnot to be")
    assert follower.poll_samples() == [(500, "To be, or\n\nnot to be")]
    assert follower.poll_samples() == []
    with (tmp_path / "samples.txt").open("a", encoding="utf-8") as f:
        f.write("--- iter 1000 ---\nhalf writ")  # caught while another process writes it
    assert follower.poll_samples() == []
    with (tmp_path / "samples.txt").open("a", encoding="utf-8") as f:
        f.write("ten\n\n")
    log.add_sample(1500, "third")
    assert follower.poll_samples() == [(1000, "half written"), (1500, "third")]
    log.close()


def test_a_run_folder_named_dot_that_holds_a_run_gets_a_sibling(tmp_path, monkeypatch):
    here = tmp_path / "mine"
    here.mkdir()
    (here / "config.json").write_text("{}")
    monkeypatch.chdir(here)
    assert unused_run_dir(Path(".")) == tmp_path / "mine-2"  # not a ValueError: "." has no name
    assert unused_run_dir(Path("fresh")) == Path("fresh")


def test_the_root_folder_holding_a_run_is_refused_in_one_line(monkeypatch):
    exists = Path.exists
    monkeypatch.setattr(Path, "exists", lambda self: str(self) == "/config.json" or exists(self))
    with pytest.raises(RunLogError, match="holds a run already; choose a new folder"):
        unused_run_dir(Path("/"))  # no name to number, and no folder beside it


def fail_writing(monkeypatch, name: str, code: int) -> None:
    """Writing a file called ``name`` fails with ``code`` after a few bytes reached the disk."""
    real = Path.write_text

    def write_text(self: Path, text: str, *args: Any, **kwargs: Any) -> int:
        if self.name != name:
            return real(self, text, *args, **kwargs)
        real(self, text[:3], *args, **kwargs)
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(Path, "write_text", write_text)


@pytest.mark.parametrize(
    ("code", "told"),
    [
        (errno.ENOSPC, "the disk is full; free some space"),
        (errno.EROFS, "the disk is read-only; choose another folder"),
        (errno.EACCES, "no permission to write in that folder; choose a folder you can write to"),
    ],
)
def test_a_config_that_cannot_be_written_is_one_line_and_leaves_no_run_folder(
    tmp_path, monkeypatch, code, told
):
    fail_writing(monkeypatch, "config.json", code)
    with pytest.raises(RunLogError, match=rf"^cannot write the run folder .*new: {told}"):
        RunLog(tmp_path / "runs" / "new").write_config({"model": {}})
    assert list((tmp_path / "runs").iterdir()) == []  # runs/ was there before a run in it
    fresh = new_run_dir(tmp_path / "runs")  # the window's: made empty, then written
    with pytest.raises(RunLogError):
        RunLog(fresh).write_config({"model": {}})
    assert not fresh.exists()


def test_a_config_that_cannot_be_written_leaves_a_persons_folder_as_it_was(tmp_path, monkeypatch):
    mine = tmp_path / "mine"
    (mine / "checkpoints").mkdir(parents=True)
    (mine / "notes.txt").write_text("keep me")
    fail_writing(monkeypatch, "config.json", errno.ENOSPC)
    with pytest.raises(RunLogError, match="the disk is full"):
        RunLog(mine).write_config({"model": {}})
    assert sorted(p.name for p in mine.iterdir()) == ["checkpoints", "notes.txt"]


def test_a_run_folder_that_cannot_be_made_names_the_remedy(tmp_path, monkeypatch):
    def read_only(self: Path, *args: Any, **kwargs: Any) -> None:
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr(Path, "mkdir", read_only)
    with pytest.raises(RunLogError, match=r"cannot write the run folder .*r: the disk is read-only; choose"):
        RunLog(tmp_path / "r")


def test_samples_before_one_cut_short_are_all_returned(tmp_path):
    (tmp_path / "samples.txt").write_text(
        "--- iter 100 ---\nfirst\n\n--- iter 200 ---\nsecond\n\nthird line\n\n--- iter 300 ---\ncut mid-wr"
    )
    follower = RunFollower(tmp_path)
    assert follower.poll_samples() == [(100, "first"), (200, "second\n\nthird line")]
    assert follower.poll_samples() == []  # the cut one is held back
    with (tmp_path / "samples.txt").open("a") as f:
        f.write("itten\n\n")
    assert follower.poll_samples() == [(300, "cut mid-written")]


def fail_opening(monkeypatch, name: str, error: OSError) -> None:
    """Opening or reading a file called ``name`` raises ``error``, as for root it will not."""
    real_open, real_read = Path.open, Path.read_bytes

    def open_(self: Path, *args: Any, **kwargs: Any) -> Any:
        if self.name == name:
            raise error
        return real_open(self, *args, **kwargs)

    def read_bytes(self: Path) -> bytes:
        if self.name == name:
            raise error
        return real_read(self)

    monkeypatch.setattr(Path, "open", open_)
    monkeypatch.setattr(Path, "read_bytes", read_bytes)


@pytest.mark.parametrize("name", ["samples.txt", "metrics.jsonl"])
def test_run_files_that_cannot_be_read_are_told_in_words(tmp_path, monkeypatch, name):
    (tmp_path / "samples.txt").write_text("--- iter 1 ---\nx\n\n")
    (tmp_path / "metrics.jsonl").write_text('{"iter": 1}\n')
    follower = RunFollower(tmp_path)
    poll = follower.poll_samples if name == "samples.txt" else follower.poll
    fail_opening(monkeypatch, name, PermissionError(errno.EACCES, "Permission denied"))
    with pytest.raises(RunLogError, match=rf"^cannot read .*{name}: no permission to read it; check"):
        poll()
    monkeypatch.undo()
    (tmp_path / name).unlink()
    (tmp_path / name).mkdir()
    with pytest.raises(RunLogError, match=rf"^cannot read .*{name}: a folder stands where this file should"):
        poll()


def test_a_followed_run_whose_folder_is_moved_or_deleted_says_it_is_gone(tmp_path):
    with RunLog(tmp_path / "run") as log:
        follower = RunFollower(tmp_path / "run")
        assert follower.poll() == []  # begun, nothing logged yet: quiet, not gone
        log.append({"iter": 1, "loss": 3.0})
        assert [r["iter"] for r in follower.poll()] == [1]
    (tmp_path / "run").rename(tmp_path / "moved")
    with pytest.raises(RunFolderGone, match=r"^the run folder .*run is gone \(moved or deleted\); open"):
        follower.poll()
    assert follower.poll_samples() == []  # poll() is the one to say so


def test_damaged_metrics_lines_are_skipped_and_the_rest_of_the_run_opens(tmp_path):
    with RunLog(tmp_path) as log:
        log.write_config({"model": {}})
    lines = [
        {"iter": 1, "loss": 3.0},
        {"iter": None, "loss": 2.9},  # '<=' not supported between 'NoneType' and 'float'
        {"iter": "3", "loss": 2.8},
        {"iter": 10**30, "loss": 2.7},  # overflowed the plots
        {"iter": -4, "loss": 2.6},
        {"iter": True, "loss": 2.5},
        {"iter": 7, "loss": "low"},
        {"iter": 8, "loss": 2.4, "val_loss": [2.3]},
        {"iter": 9, "loss": None, "val_loss": 2.2},  # a loss that was not finite: kept
    ]
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
    run = read_run(tmp_path)
    assert [r["iter"] for r in run.records] == [1, 9]
    assert [r["iter"] for r in history(run)] == [1, 9]


@pytest.mark.parametrize(
    ("config", "told"),
    [
        ("[1, 2]", "a JSON list, not an object"),  # 'list' object has no attribute 'get'
        ('{"model": [64]}', "its model is [64], not an object"),
        ('{"start_iteration": "100"}', "its start_iteration is '100', not a count of 0 or more"),
        ("", "not JSON: Expecting value"),  # the 0-byte config.json of a full disk
    ],
)
def test_a_config_of_the_wrong_shape_is_refused_as_damaged(tmp_path, config, told):
    (tmp_path / "config.json").write_text(config)
    with pytest.raises(
        RunLogError, match=rf"^{tmp_path}/config.json is damaged \({re.escape(told)}.*; open another"
    ):
        read_run(tmp_path)


def test_a_config_that_is_a_folder_is_told_in_words(tmp_path):
    (tmp_path / "config.json").mkdir()
    with pytest.raises(
        RunLogError, match=r"^cannot read .*config.json: a folder stands where this file should"
    ):
        read_run(tmp_path)
