"""The publisher installs and starts with only its base dependencies (no server extras)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_publisher_installs_without_extras(tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    python, natrelay = venv / "bin" / "python", venv / "bin" / "natrelay"
    subprocess.run(
        [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", str(REPO)],
        check=True,
        timeout=600,
    )
    done = subprocess.run(
        [str(natrelay), "publish", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "--config FILE" in done.stdout
    for module in ("boto3", "starlette", "moto", "uvicorn"):
        probe = subprocess.run(
            [str(python), "-c", f"import {module}"], capture_output=True, timeout=60, check=False
        )
        assert probe.returncode != 0, f"{module} should not be installed by the base package"
    dev = subprocess.run(
        [str(natrelay), "dev"], capture_output=True, text=True, timeout=60, check=False
    )
    assert dev.returncode == 2
    assert "pip install '.[local]'" in dev.stderr
