"""The application menu's entry: a valid desktop entry that runs this program, and its icon."""

import configparser
import sys
from pathlib import Path

import pytest
from PySide6.QtGui import QImage

import app.main as app_main
from app.icon import SIZES, app_icon
from app.launcher import data_home, exec_line, install_launcher, launch_command, remove_launcher


def read_entry(path: Path) -> dict[str, str]:
    parser = configparser.ConfigParser(interpolation=None)
    parser.optionxform = str  # keys are case-sensitive
    parser.read(path, encoding="utf-8")
    return dict(parser["Desktop Entry"])


def test_install_writes_an_entry_that_runs_the_installed_script_and_its_icon(qapp, tmp_path, monkeypatch):
    script = tmp_path / "venv" / "bin" / "chargpt-studio"
    monkeypatch.setattr(sys, "argv", [str(script)])
    entry, icon = install_launcher(tmp_path / "data")
    fields = read_entry(entry)
    assert fields["Type"] == "Application" and fields["Name"] == "CharGPT Studio"
    assert fields["Exec"] == f"{script} %f" and "Path" not in fields  # %f: a file to open, if any
    assert fields["Icon"] == "chargpt-studio" == icon.stem
    assert icon.parent == tmp_path / "data" / "icons" / "hicolor" / "256x256" / "apps"
    image = QImage(str(icon))
    assert image.width() == image.height() == 256
    assert image.pixelColor(128, 200).alpha() == 255 and image.pixelColor(0, 0).alpha() == 0  # a tile

    assert remove_launcher(tmp_path / "data") == [entry, icon]
    assert not entry.exists() and not icon.exists()
    assert remove_launcher(tmp_path / "data") == []


def test_run_as_a_module_the_entry_runs_python_in_the_clone_through_its_link(tmp_path):
    """A virtual environment's python is a symbolic link: resolved, it would lose the
    environment's packages."""
    link = tmp_path / "venv" / "bin" / "python"
    link.parent.mkdir(parents=True)
    link.symlink_to(sys.executable)
    command, folder = launch_command("/somewhere/app/__main__.py", str(link))
    assert command == [str(link), "-m", "app"]
    assert folder is not None and (folder / "app" / "__init__.py").is_file()


@pytest.mark.parametrize(
    ("command", "line"),
    [
        (["/usr/bin/python3", "-m", "app"], "/usr/bin/python3 -m app"),
        (["/home/a b/bin/chargpt-studio"], '"/home/a b/bin/chargpt-studio"'),
        # quoted, then escaped as a string value: "\\" in the file is one backslash in the quote
        (['/x/we"ird$/a\\b'], '"/x/we\\\\"ird\\\\$/a\\\\\\\\b"'),
        (["/p%/x"], "/p%%/x"),
    ],
)
def test_the_exec_line_quotes_and_escapes_as_the_specification_asks(command, line):
    assert exec_line(command) == line


def test_the_command_line_flags_install_and_remove(qapp, monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", ["/opt/env/bin/chargpt-studio"])
    assert app_main.main(["--install-launcher"]) == 0
    out = capsys.readouterr().out
    entry = data_home() / "applications" / "chargpt-studio.desktop"
    assert f"wrote {entry}" in out and "application menu" in out
    assert read_entry(entry)["Exec"] == "/opt/env/bin/chargpt-studio %f"
    assert app_main.main(["--remove-launcher"]) == 0
    assert f"removed {entry}" in capsys.readouterr().out and not entry.exists()


def test_an_unwritable_data_folder_is_a_message(qapp, monkeypatch, capsys, tmp_path):
    blocked = tmp_path / "a-file"
    blocked.write_text("")
    monkeypatch.setenv("XDG_DATA_HOME", str(blocked))  # a file, not a folder: unwritable even for root
    assert app_main.main(["--install-launcher"]) == 1
    err = capsys.readouterr().err
    assert "could not add the launcher" in err and "Traceback" not in err


def test_the_icon_has_every_size_a_desktop_asks_for(qapp):
    icon = app_icon()
    assert sorted(s.width() for s in icon.availableSizes()) == sorted(SIZES)
