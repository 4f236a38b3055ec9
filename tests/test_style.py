import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.skipif(not (ROOT / "pyproject.toml").exists(), reason="runs only in a source checkout")
def test_the_code_is_ruff_clean_and_formatted():
    if (
        shutil.which("ruff") is None
        and subprocess.run(
            [sys.executable, "-m", "ruff", "--version"], capture_output=True, check=False
        ).returncode
    ):
        pytest.skip("ruff is not installed")
    for command in (["check", "--output-format", "concise", "."], ["format", "--check", "."]):
        r = subprocess.run(
            [sys.executable, "-m", "ruff", *command], cwd=ROOT, capture_output=True, text=True, check=False
        )
        assert r.returncode == 0, r.stdout + r.stderr
