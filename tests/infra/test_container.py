"""The publisher's image and its compose example agree with the `natrelay` command.

CI lints the Dockerfile (scripts/lint-docker: hadolint); no container engine runs here,
so these read the files: the command the image runs parses, it runs as a non-root user,
and its session lives in the volume.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import yaml

from natrelay_cli.main import _parser
from natrelay_cli.one_line import one_line
from natrelay_publisher.detect import BackendSpec, BackendType

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "publisher" / "Dockerfile"


def instructions(name: str) -> list[str]:
    """The arguments of every `NAME` instruction of the final stage."""
    text = DOCKERFILE.read_text(encoding="utf-8").replace("\\\n", " ")
    final = text.rsplit("\nFROM ", 1)[1]
    return [m.group(1).strip() for m in re.finditer(rf"^{name} (.+)$", final, re.MULTILINE)]


def test_the_image_runs_natrelay_publish_as_a_user_with_its_session_in_a_volume() -> None:
    (entrypoint,) = instructions("ENTRYPOINT")
    (cmd,) = instructions("CMD")
    command = json.loads(entrypoint) + json.loads(cmd)
    assert command[:2] == ["natrelay", "publish"]
    args = _parser().parse_args(command[1:])
    assert args.config == "/etc/natrelay/publisher.yaml"
    (volume,) = instructions("VOLUME")
    assert str(Path(args.session_file).parent) in json.loads(volume)
    (user,) = instructions("USER")
    assert user.split(":")[0] not in ("0", "root")


def test_the_compose_example_publishes_its_ollama() -> None:
    compose = yaml.safe_load((ROOT / "publisher" / "compose.yaml").read_text(encoding="utf-8"))
    publisher = compose["services"]["publisher"]
    assert publisher["build"]["dockerfile"] == "publisher/Dockerfile"
    env = {"NATRELAY_URL": "https://relay.example.com", "NATRELAY_PUBLISH_TOKEN": "t"}
    line = one_line(_parser().parse_args(["publish", *publisher["command"]]), env)
    assert line.specs == [BackendSpec("http://ollama:11434", BackendType.OLLAMA)]
    assert "ollama" in compose["services"] and "ollama" in publisher["depends_on"]
    assert any(v.endswith(":/var/lib/natrelay") for v in publisher["volumes"])
