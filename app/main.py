"""``chargpt-studio`` / ``python -m app``: open the window, or render it to a PNG, or measure it.

chargpt-studio                                   # the window
python -m app --screenshot shot.png --preset small --iters 300
python -m app --measure-latency --preset large --seconds 20
chargpt-studio --install-launcher                 # an entry in the desktop's application menu
"""

from __future__ import annotations

import argparse
import ctypes
import os
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from engine import __version__
from engine.blas import cpu_count
from engine.config import MAX_ITERS, PRESETS
from engine.console import printable_stdout

if TYPE_CHECKING:  # Qt is imported only once the display libraries are known to be there
    from app.main_window import MainWindow

# Every system library Qt's xcb platform plugin (and Qt GUI under it) loads from the system,
# with the Debian/Ubuntu package that ships it. README.md lists the same packages in one
# apt-get line beside the Quick start; keep the two in step.
XCB_LIBRARIES = {
    "libxcb.so.1": "libxcb1",
    "libX11.so.6": "libx11-6",
    "libX11-xcb.so.1": "libx11-xcb1",
    "libxcb-cursor.so.0": "libxcb-cursor0",
    "libxcb-icccm.so.4": "libxcb-icccm4",
    "libxcb-image.so.0": "libxcb-image0",
    "libxcb-keysyms.so.1": "libxcb-keysyms1",
    "libxcb-randr.so.0": "libxcb-randr0",
    "libxcb-render.so.0": "libxcb-render0",
    "libxcb-render-util.so.0": "libxcb-render-util0",
    "libxcb-shape.so.0": "libxcb-shape0",
    "libxcb-shm.so.0": "libxcb-shm0",
    "libxcb-sync.so.1": "libxcb-sync1",
    "libxcb-util.so.1": "libxcb-util1",
    "libxcb-xfixes.so.0": "libxcb-xfixes0",
    "libxcb-xkb.so.1": "libxcb-xkb1",
    "libxkbcommon.so.0": "libxkbcommon0",
    "libxkbcommon-x11.so.0": "libxkbcommon-x11-0",
    "libEGL.so.1": "libegl1",
    "libGL.so.1": "libgl1",
    "libfontconfig.so.1": "libfontconfig1",
    "libfreetype.so.6": "libfreetype6",
    "libglib-2.0.so.0": "libglib2.0-0",
    "libdbus-1.so.3": "libdbus-1-3",
}
README_HINT = "README.md, “Quick start”, the line “On a Linux desktop …”"


def missing_xcb_libraries() -> list[str]:
    """The sonames of XCB_LIBRARIES this system cannot load."""
    missing = []
    for soname in XCB_LIBRARIES:
        try:
            ctypes.CDLL(soname)
        except OSError:
            missing.append(soname)
    return missing


def qt_platform() -> str:
    """The Qt platform plugin that QApplication will try first."""
    chosen = os.environ.get("QT_QPA_PLATFORM", "").split(";")[0].split(":")[0]
    if chosen:
        return chosen
    if not sys.platform.startswith("linux"):
        return "native"
    wayland = os.environ.get("WAYLAND_DISPLAY") or os.environ.get("XDG_SESSION_TYPE") == "wayland"
    return "wayland" if wayland else "xcb"


def check_display_libraries() -> str | None:
    """A message naming what is missing when the xcb platform cannot load, else None."""
    if qt_platform() != "xcb":
        return None
    missing = missing_xcb_libraries()
    if not missing:
        return None
    packages = " ".join(XCB_LIBRARIES[m] for m in missing)
    return (
        f"chargpt-studio: Qt's X11 (xcb) platform needs system libraries that are missing: "
        f"{', '.join(missing)}.\n"
        f"Install them with:  sudo apt-get install {packages}\n"
        f"(the full list is in {README_HINT}).\n"
        "Or run without a display: QT_QPA_PLATFORM=offscreen."
    )


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="chargpt-studio", description="Train a character-level GPT and watch it."
    )
    p.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    p.add_argument(
        "path",
        nargs="?",
        metavar="PATH",
        help="a text file to train on, a run folder to view or a checkpoint to load, "
        "as when dropped on the window",
    )
    p.add_argument("--screenshot", metavar="PNG", help="train, render the window to PNG and exit")
    p.add_argument(
        "--measure-latency",
        action="store_true",
        help="train and report how late a 50 ms GUI timer fires (median and 99th percentile)",
    )
    p.add_argument("--preset", choices=list(PRESETS), help="preset to select (screenshot and measure modes)")
    p.add_argument("--iters", type=int, help="iterations to train (screenshot mode)")
    p.add_argument(
        "--corpus",
        help="a text file to train on (default: the one opened last; in screenshot and measure "
        "modes, the built-in corpus)",
    )
    p.add_argument("--seconds", type=float, default=20.0, help="how long to measure (default 20)")
    p.add_argument("--threads", type=int, help="BLAS threads (screenshot and measure modes)")
    launcher = p.add_mutually_exclusive_group()
    launcher.add_argument(
        "--install-launcher",
        action="store_true",
        help="add CharGPT Studio, with its icon, to the desktop's application menu (Linux) and exit",
    )
    launcher.add_argument(
        "--remove-launcher", action="store_true", help="take it out of the application menu again and exit"
    )
    return p


def _cannot_write_image(path: Path) -> str:
    """Why a picture could not be saved at ``path`` (no folder, no permission, a suffix that
    names no image format Qt writes), or ""."""
    from app.plots import image_formats

    folder = path.parent
    if not folder.is_dir():
        return f"the folder {folder} does not exist; create it or choose another"
    if not os.access(folder, os.W_OK | os.X_OK):
        return f"you cannot write in {folder}; choose another folder"
    formats = image_formats()
    if path.suffix.lower().lstrip(".") not in formats:
        return f"end the name with an image format's suffix: .png, or one of {', '.join(formats)}"
    return ""


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.install_launcher or args.remove_launcher:
        return _launcher(install=args.install_launcher)
    batch_mode = bool(args.screenshot or args.measure_latency)
    if batch_mode and args.path:
        parser.error("a PATH opens in the window; --screenshot and --measure-latency take --corpus")
    # what the window's fields would otherwise clamp without a word
    if args.iters is not None and not 1 <= args.iters <= MAX_ITERS:
        parser.error(f"--iters must be between 1 and {MAX_ITERS:,}, got {args.iters}")
    if args.threads is not None and not 0 <= args.threads <= cpu_count():
        parser.error(f"--threads must be between 1 and {cpu_count()} (0: Auto), got {args.threads}")
    if not 0 < args.seconds < float("inf"):  # (nan fails this too)
        parser.error(f"--seconds must be a positive number, got {args.seconds}")
    if args.screenshot:  # before a run that would train for nothing
        unwritable = _cannot_write_image(Path(args.screenshot))
        if unwritable:
            parser.error(f"--screenshot {args.screenshot}: {unwritable}")
    if batch_mode and not os.environ.get("QT_QPA_PLATFORM") and not os.environ.get("DISPLAY"):
        os.environ["QT_QPA_PLATFORM"] = "offscreen"  # a screenshot needs no screen
    problem = check_display_libraries()
    if problem:
        sys.stderr.write(problem + "\n")
        return 2

    from PySide6.QtCore import QCoreApplication, QSettings
    from PySide6.QtGui import QGuiApplication
    from PySide6.QtWidgets import QApplication

    from app.icon import app_icon
    from app.launcher import APP_ID
    from app.main_window import DEFAULT_SIZE, MainWindow
    from app.worker import GuiThreadCollector

    QCoreApplication.setOrganizationName("chargpt-studio")
    QCoreApplication.setApplicationName("chargpt-studio")
    QCoreApplication.setApplicationVersion(__version__)
    app = QApplication.instance() or QApplication(sys.argv[:1])
    QGuiApplication.setDesktopFileName(APP_ID)  # Wayland matches the window to its menu entry by it
    QGuiApplication.setWindowIcon(app_icon())
    _collector = GuiThreadCollector(parent=app)  # for as long as the app runs
    if batch_mode:  # never touch the person's remembered window state
        tmp = tempfile.TemporaryDirectory(prefix="chargpt-studio-")
        settings = QSettings(str(Path(tmp.name) / "settings.ini"), QSettings.Format.IniFormat)
        if args.corpus:
            settings.setValue("corpus", str(Path(args.corpus).resolve()))
        window = MainWindow(settings)
        window.resize(DEFAULT_SIZE)  # the same picture on any screen, or none
        window.confirm_close = False
    else:
        window = MainWindow()
    if not batch_mode:
        from app.signals import SignalClose

        closer = SignalClose(window)  # as the first launch gathers the built-in corpus, for seconds
        window.show()
        open_given(window, args)
        code = int(app.exec())
        closer.restore()
        return 128 + closer.signum if closer.signum is not None else code  # as a shell reports it
    window.show()
    from app.batch import LatencyProbe, Screenshot

    job = (Screenshot if args.screenshot else LatencyProbe)(window, args)
    job.start()
    app.exec()
    tmp.cleanup()
    return job.exit_code


def open_given(window: MainWindow, args: argparse.Namespace) -> None:
    """Open what the command line names in the window: --corpus, then PATH."""
    if args.corpus:
        window.load_corpus(str(Path(args.corpus).resolve()))
    if args.path:
        window.open_path(str(Path(args.path).resolve()))


def _launcher(*, install: bool) -> int:
    """--install-launcher, --remove-launcher: say what was written or removed."""
    from app.launcher import install_launcher, remove_launcher

    if not sys.platform.startswith("linux"):
        sys.stderr.write("chargpt-studio: the application menu entry is for Linux desktops only\n")
        return 2
    if not install:
        removed = remove_launcher()
        sys.stdout.write("".join(f"removed {p}\n" for p in removed) or "no launcher was installed\n")
        return 0
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")  # painting the icon needs no screen
    from PySide6.QtGui import QGuiApplication

    _app = QGuiApplication.instance() or QGuiApplication(sys.argv[:1])
    try:
        written = install_launcher()
    except OSError as e:
        sys.stderr.write(f"chargpt-studio: could not add the launcher: {e}\n")
        return 1
    sys.stdout.write("".join(f"wrote {p}\n" for p in written))
    sys.stdout.write("CharGPT Studio is in the application menu now (--remove-launcher takes it out).\n")
    return 0


def entry() -> None:
    """The ``chargpt-studio`` command and ``python -m app``."""
    printable_stdout()  # it prints paths, which a code page may lack
    sys.exit(main())


if __name__ == "__main__":
    entry()
