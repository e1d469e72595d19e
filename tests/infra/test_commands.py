"""The commands the README gives, the ones CI runs, and the fixtures they rely on agree."""

from __future__ import annotations

import json
import re
import stat
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPTS = [
    "scripts/test",
    "scripts/demo",
    "scripts/lint-template",
    "scripts/lint-docker",
    "scripts/gen-events",
    ".ci/run",
]


def _commands(path: str) -> list[str]:
    text = (ROOT / path).read_text(encoding="utf-8")
    return [line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#")]


def test_ci_runs_the_test_script_and_the_template_checks() -> None:
    commands = _commands(".ci/run")
    assert any(re.match(r"bash scripts/test\b", c) for c in commands)
    assert any(re.match(r"bash scripts/lint-template\b", c) for c in commands)
    assert any(re.match(r"bash scripts/lint-docker\b", c) for c in commands)


@pytest.mark.parametrize("path", SCRIPTS)
def test_scripts_are_executable_bash(path: str) -> None:
    file = ROOT / path
    assert file.stat().st_mode & stat.S_IXUSR
    assert file.read_text(encoding="utf-8").startswith("#!/usr/bin/env bash\n")
    subprocess.run(["bash", "-n", str(file)], check=True)


@pytest.mark.parametrize("path", SCRIPTS)
def test_scripts_are_executable_in_git(path: str) -> None:
    listed = subprocess.run(
        ["git", "ls-files", "--stage", "--", path],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    if listed.returncode != 0 or not listed.stdout:
        pytest.skip("not a git checkout, or the file is not committed yet")
    assert listed.stdout.split()[0] == "100755"


def test_readme_gives_the_two_commands() -> None:
    readme = ROOT / "README.md"
    if not readme.exists() or not readme.read_text(encoding="utf-8").strip():
        pytest.skip("README.md is still empty")
    text = readme.read_text(encoding="utf-8")
    assert "scripts/demo" in text
    assert "scripts/test" in text


def test_event_fixtures_have_the_lambda_shapes() -> None:
    http = json.loads((ROOT / "tests/events/http-api-v2.json").read_text(encoding="utf-8"))
    assert http["version"] == "2.0"
    assert {"rawPath", "headers", "body", "isBase64Encoded"} <= set(http)
    assert {"method", "path", "sourceIp"} <= set(http["requestContext"]["http"])
    scheduled = json.loads((ROOT / "tests/events/scheduled.json").read_text(encoding="utf-8"))
    assert scheduled["detail-type"] == "Scheduled Event"
    assert scheduled["source"] == "aws.events"
