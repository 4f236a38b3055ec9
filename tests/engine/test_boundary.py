import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_no_engine_module_loads_qt():
    code = (
        "import importlib, pkgutil, sys, engine\n"
        "for m in pkgutil.iter_modules(engine.__path__): importlib.import_module('engine.' + m.name)\n"
        "gui = ('PySide6', 'PyQt5', 'PyQt6', 'pyqtgraph', 'app')\n"
        "bad = [m for m in sys.modules if m.split('.')[0] in gui]\n"
        "print(bad); sys.exit(1 if bad else 0)\n"
    )
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=False)
    assert r.returncode == 0, r.stdout + r.stderr
