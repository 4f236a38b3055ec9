"""An entry in the desktop's application menu, with the icon (the freedesktop.org desktop
entry and icon theme specifications, which Linux desktops follow).

``pip install`` puts ``chargpt-studio`` in a virtual environment that no menu knows of; a
student should find the app where they find every other, not in a terminal's history.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from pathlib import Path

from PySide6.QtGui import QImage

from app.icon import icon_pixmap

APP_ID = "chargpt-studio"  # the desktop file's name, the icon's, and the window's class
ICON_SIZE = 256


def data_home() -> Path:
    """$XDG_DATA_HOME, or its default."""
    return Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share")


def launcher_files(data: Path) -> tuple[Path, Path]:
    """Where the desktop entry and the icon go under the data folder ``data``."""
    icon = data / "icons" / "hicolor" / f"{ICON_SIZE}x{ICON_SIZE}" / "apps" / f"{APP_ID}.png"
    return data / "applications" / f"{APP_ID}.desktop", icon


def launch_command(argv0: str | None = None, python: str | None = None) -> tuple[list[str], Path | None]:
    """The command that started this program, for a menu to run it again, and the folder to
    run it in: the installed script, or the interpreter with ``-m app`` in the folder that
    holds the package (a clone run without installing). Paths are absolute but keep their
    symbolic links: a virtual environment's python is a link, and only through it does the
    interpreter find the environment's packages."""
    script = Path(argv0 if argv0 is not None else sys.argv[0])
    if script.name == APP_ID:
        return [str(script.absolute())], None
    return [str(Path(python or sys.executable).absolute()), "-m", "app"], Path(__file__).parent.parent


def exec_line(command: Sequence[str]) -> str:
    """``command`` as a desktop entry's Exec value: arguments with reserved characters quoted,
    and their quotes, backquotes, dollars and backslashes escaped; % doubled."""
    reserved = set(" \t\n\"'\\><~|&;$*?#()`")

    def arg(a: str) -> str:
        a = a.replace("%", "%%")
        if not reserved & set(a):
            return a
        return '"' + "".join("\\" + c if c in '"`$\\' else c for c in a) + '"'

    # The desktop entry format escapes backslashes once more, as in every string value.
    return " ".join(arg(a) for a in command).replace("\\", "\\\\")


def desktop_entry(command: Sequence[str], folder: Path | None = None) -> str:
    where = [] if folder is None else [f"Path={str(folder).replace(chr(92), chr(92) * 2)}"]
    return "\n".join(
        [
            "[Desktop Entry]",
            "Type=Application",
            "Name=CharGPT Studio",
            "GenericName=Language model trainer",
            "Comment=Train small character-level GPT models and watch them learn",
            f"Exec={exec_line(command)} %f",  # a file dropped on the icon, or "Open With", opens as PATH
            *where,
            f"Icon={APP_ID}",
            "Terminal=false",
            "Categories=Science;ArtificialIntelligence;",
            "Keywords=GPT;transformer;language model;neural network;training;",
            f"StartupWMClass={APP_ID}",
            "",
        ]
    )


def install_launcher(data: Path | None = None) -> list[Path]:
    """Write the desktop entry and its icon, for the command that started this program;
    return their paths. Needs a QGuiApplication (the icon is painted). Raises OSError when
    they cannot be written."""
    entry, icon = launcher_files(data or data_home())
    for folder in (entry.parent, icon.parent):
        folder.mkdir(parents=True, exist_ok=True)
    image: QImage = icon_pixmap(ICON_SIZE).toImage()
    if not image.save(str(icon)):  # PNG, by the name
        raise OSError(f"could not write {icon}")
    entry.write_text(desktop_entry(*launch_command()), encoding="utf-8")
    return [entry, icon]


def remove_launcher(data: Path | None = None) -> list[Path]:
    """Delete what ``install_launcher`` wrote; return the paths that were there."""
    removed = []
    for path in launcher_files(data or data_home()):
        if path.exists():
            path.unlink()
            removed.append(path)
    return removed
