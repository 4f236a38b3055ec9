"""The jobs that drive the window without a person (app.batch)."""

import argparse

from app.batch import Screenshot
from app.worker import TrainingWorker


def test_a_screenshot_whose_sample_fails_ends_with_the_reason(
    make_window, qtbot, tmp_path, monkeypatch, capsys
):
    real = TrainingWorker.request_sample

    def unreadable(self, prompt, *args):  # the refusal a person meets: a character it never saw
        real(self, "☃", *args)

    monkeypatch.setattr(TrainingWorker, "request_sample", unreadable)
    out = tmp_path / "shot.png"
    args = argparse.Namespace(screenshot=str(out), preset="tiny", threads=1, iters=3)
    job = Screenshot(make_window(), args)
    job.start()
    qtbot.waitUntil(lambda: not job.timer.isActive(), timeout=30_000)  # it waited forever
    assert job.exit_code == 1 and "'☃'" in capsys.readouterr().err
    assert out.stat().st_size > 10_000  # the window as it was, for whoever looks into it


def test_a_screenshot_that_cannot_be_written_at_the_end_fails(make_window, qtbot, tmp_path, capsys):
    """Its folder went while it trained: it said "could not write" and exited 0."""
    out = tmp_path / "gone" / "shot.png"
    out.parent.mkdir()
    args = argparse.Namespace(screenshot=str(out), preset="tiny", threads=1, iters=3)
    job = Screenshot(make_window(), args)
    job.start()
    out.parent.rmdir()
    qtbot.waitUntil(lambda: not job.timer.isActive(), timeout=30_000)
    assert job.exit_code == 1 and f"could not write {out}; check its folder" in capsys.readouterr().err
