"""The entry point: the system libraries it checks before Qt starts, its arguments, and how
it ends at a signal."""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

import app.main as app_main


def test_a_missing_xcb_library_points_to_the_readme(monkeypatch, capsys):
    monkeypatch.setenv("QT_QPA_PLATFORM", "xcb")
    monkeypatch.setattr(app_main, "missing_xcb_libraries", lambda: ["libxcb-icccm.so.4"])
    assert app_main.main([]) == 2
    err = capsys.readouterr().err
    assert "libxcb-icccm.so.4" in err and "apt-get install libxcb-icccm4" in err and "README.md" in err


def test_every_library_checked_is_named_in_the_readme():
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")
    for package in app_main.XCB_LIBRARIES.values():
        assert package in readme


def test_offscreen_needs_no_x_libraries(monkeypatch):
    monkeypatch.setenv("QT_QPA_PLATFORM", "offscreen")
    assert app_main.check_display_libraries() is None


def test_version(capsys):
    from engine import __version__

    with pytest.raises(SystemExit) as exit_:
        app_main.main(["--version"])
    assert exit_.value.code == 0 and capsys.readouterr().out == f"chargpt-studio {__version__}\n"


def test_a_path_is_for_the_window_not_for_screenshots(capsys):
    with pytest.raises(SystemExit) as exit_:
        app_main.main(["--screenshot", "out.png", "notes.txt"])
    assert exit_.value.code == 2 and "--corpus" in capsys.readouterr().err


def test_an_unknown_preset_is_refused_with_the_names_there_are(capsys):
    with pytest.raises(SystemExit) as exit_:  # it used to train tiny, and exit 0
        app_main.main(["--screenshot", "out.png", "--preset", "bogus"])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and "'bogus'" in err and "'tiny', 'small'" in err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--iters", "-5"], "--iters must be between 1 and 10,000,000, got -5"),
        (["--threads", "99"], "--threads must be between 1 and"),
        (["--measure-latency", "--seconds", "0"], "--seconds must be a positive number"),
        (["--measure-latency", "--seconds", "inf"], "--seconds must be a positive number"),  # never ends
    ],
)
def test_a_value_the_window_cannot_take_is_refused_not_clamped(capsys, args, message):
    """The fields clamped them without a word: --iters -5 trained one iteration."""
    with pytest.raises(SystemExit) as exit_:
        app_main.main(["--screenshot", "out.png", *args])
    assert exit_.value.code == 2 and message in capsys.readouterr().err


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("nowhere/shot.png", "does not exist; create it or choose another"),
        ("shot.txt", "end the name with an image format's suffix: .png, or one of bmp"),
    ],
)
def test_a_screenshot_that_could_not_be_saved_is_refused_before_it_trains(capsys, tmp_path, name, message):
    """It trained the whole run, said "could not write" without a reason, and exited 0."""
    with pytest.raises(SystemExit) as exit_:
        app_main.main(["--screenshot", str(tmp_path / name)])
    assert exit_.value.code == 2 and message in capsys.readouterr().err


def test_a_screenshot_of_a_text_that_cannot_be_read_fails_with_the_reason(tmp_path):
    # not a picture of the built-in corpus, which the window opens instead
    env = {**os.environ, "QT_QPA_PLATFORM": "offscreen", "HOME": str(tmp_path)}
    env["XDG_DATA_HOME"] = str(tmp_path)
    out, missing = tmp_path / "out.png", tmp_path / "missing.txt"
    cmd = [sys.executable, "-m", "app", "--screenshot", str(out), "--corpus", str(missing)]
    repo = Path(__file__).resolve().parents[2]
    done = subprocess.run(cmd, cwd=repo, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert f"corpus file not found: {missing}" in done.stderr and not out.exists()


def test_a_screenshot_of_a_text_without_the_sample_prompts_letters_is_taken_all_the_same(tmp_path):
    """Its sample asked for "The ", refused for a text without a T: the command never ended."""
    env = {
        **os.environ,
        "QT_QPA_PLATFORM": "offscreen",
        "HOME": str(tmp_path),
        "XDG_DATA_HOME": str(tmp_path),
    }
    text, out = tmp_path / "lower.txt", tmp_path / "out.png"
    text.write_text("the quick brown fox jumps over the lazy dog\n" * 60, encoding="utf-8")
    cmd = [sys.executable, "-m", "app", "--screenshot", str(out), "--corpus", str(text), "--iters", "5"]
    cmd += ["--preset", "tiny", "--threads", "1"]
    repo = Path(__file__).resolve().parents[2]
    done = subprocess.run(cmd, cwd=repo, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert out.stat().st_size > 10_000


def test_paths_the_code_page_lacks_are_printed_not_a_traceback(tmp_path):
    """On Windows, output to a file or a pipe takes the ANSI code page (cp1252 here)."""
    data = tmp_path / "数据"
    repo = Path(__file__).resolve().parents[2]
    env = {
        **os.environ,
        "XDG_DATA_HOME": str(data),
        "PYTHONIOENCODING": "cp1252",
        "QT_QPA_PLATFORM": "offscreen",
    }
    done = subprocess.run(
        [sys.executable, "-m", "app", "--install-launcher"],
        cwd=repo,
        env=env,
        capture_output=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr.decode(errors="replace")
    assert f"wrote {data}".encode() in done.stdout  # UTF-8, to a pipe


SIGNALLED = r"""
import json, os, signal, sys
from pathlib import Path
from PySide6.QtCore import QTimer
from PySide6.QtWidgets import QApplication
import app.main as app_main
from app.main_window import MainWindow

app = QApplication([])
corpus = Path(sys.argv[1])

def start():
    [window] = [w for w in QApplication.topLevelWidgets() if isinstance(w, MainWindow)]
    if window.corpus is None or window.corpus.name != corpus.name:
        QTimer.singleShot(50, start)
        return
    p = window.panel
    p.preset.setCurrentIndex(p.preset.findData("tiny"))
    p.batch.setValue(4)
    p.iters.setValue(100_000)
    p.threads.setValue(1)
    p.start.click()
    QTimer.singleShot(100, lambda: wait(window))

def wait(window):
    if window.store.last_iteration < 5:
        QTimer.singleShot(100, lambda: wait(window))
    else:
        os.kill(os.getpid(), getattr(signal, sys.argv[2]))  # as from another process

QTimer.singleShot(0, start)
code = app_main.main(["--corpus", str(corpus)])
restored = signal.getsignal(signal.SIGINT) is signal.default_int_handler
print(json.dumps({"code": code, "restored": restored and signal.getsignal(signal.SIGTERM) == signal.SIG_DFL}))
"""


@pytest.mark.parametrize("name", ["SIGTERM", "SIGINT"])
def test_a_signal_closes_the_window_as_closing_does_keeping_the_final_checkpoint(tmp_path, name):
    """SIGTERM (a logout, kill) ended the window at once, and the run lost its last iterations."""
    corpus = tmp_path / "verse.txt"
    corpus.write_text("the quick brown fox jumps over the lazy dog\n" * 200, encoding="utf-8")
    env = {
        **os.environ,
        "QT_QPA_PLATFORM": "offscreen",
        "HOME": str(tmp_path),
        "XDG_CONFIG_HOME": str(tmp_path / "config"),
        "XDG_DATA_HOME": str(tmp_path / "data"),
    }
    root = Path(__file__).resolve().parents[2]
    done = subprocess.run(
        [sys.executable, "-c", SIGNALLED, str(corpus), name],
        cwd=root, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.splitlines()[-1])
    assert result == {"code": 128 + getattr(signal, name), "restored": True}  # the handlers of before
    [run] = (tmp_path / "data" / "chargpt-studio" / "runs").iterdir()
    assert (run / "checkpoints" / "final.safetensors").is_file()
    settings = next((tmp_path / "config").rglob("*.conf")).read_text()
    assert run.name in settings  # among Recent runs


def test_a_second_signal_ends_the_process_at_once_should_closing_hang(qtbot):
    from PySide6.QtWidgets import QWidget

    from app.signals import SIGNALS, SignalClose

    window = QWidget()
    qtbot.addWidget(window)
    ignored = getattr(signal, "SIGHUP", signal.SIGINT)
    previous = signal.signal(ignored, signal.SIG_IGN)  # as under nohup
    before = {s: signal.getsignal(s) for s in SIGNALS}
    closer = SignalClose(window)  # type: ignore[arg-type]  # any widget closes alike
    try:
        assert signal.getsignal(ignored) == signal.SIG_IGN  # left ignored: it outlives its terminal
        closer._on_signal(signal.SIGTERM, None)
        assert closer.signum == signal.SIGTERM and window.confirm_close is False
        assert all(signal.getsignal(s) == signal.SIG_DFL for s in SIGNALS if s != ignored)  # the system's
    finally:
        closer.restore()
        after = {s: signal.getsignal(s) for s in SIGNALS}
        signal.signal(ignored, previous)
    assert after == before
