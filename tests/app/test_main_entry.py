"""The entry point: a missing system library for the xcb platform gives a clear message."""

import pytest

import app.main as app_main


def test_a_missing_xcb_library_points_to_the_readme(monkeypatch, capsys):
    monkeypatch.setenv("QT_QPA_PLATFORM", "xcb")
    monkeypatch.setattr(app_main, "missing_xcb_libraries", lambda: ["libxcb-icccm.so.4"])
    assert app_main.main([]) == 2
    err = capsys.readouterr().err
    assert "libxcb-icccm.so.4" in err and "apt-get install libxcb-icccm4" in err and "README.md" in err


def test_every_library_checked_is_named_in_the_readme():
    from pathlib import Path

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
