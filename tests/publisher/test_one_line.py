"""`natrelay publish --detect / --backend` as a user runs it: the config it stands for
(`--print-config`, read back by `--config`), its errors, and `--print-systemd`."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from natrelay_cli.main import _parser
from natrelay_cli.main import main as natrelay_main
from natrelay_cli.one_line import one_line
from natrelay_publisher.config import ProviderConfig, load_config
from tests.publisher.fakes import ollama_app
from tests.publisher.test_detect import not_an_llm
from tests.support.backend import FakeBackend
from tests.support.net import closed_port, serve

RELAY = "https://relay.example.com"
TOKEN = "nrk_test_0123456789abcdef"


@dataclass
class Backends:
    ollama: str
    openai: str
    web: str


@pytest.fixture(scope="module")
def backends() -> Iterator[Backends]:
    # Both serve qwen2:7b: the first named wins it.
    apps = (
        ollama_app(FakeBackend(), ["llama3:latest", "qwen2:7b"]),
        FakeBackend(models=("qwen2:7b", "/models/Mistral-7B.Q4.gguf")).app(),
        not_an_llm(),
    )
    with ExitStack() as stack:
        yield Backends(*(stack.enter_context(serve(app)) for app in apps))


def publish(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """`natrelay publish ARGS` in a process of its own, with only `env` of ours."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("NATRELAY_")}
    return subprocess.run(
        [sys.executable, "-m", "natrelay_cli", "publish", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**clean, **(env or {})},
        check=False,
    )


def test_print_config_is_read_back_as_it_was(
    backends: Backends, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    args = ["--backend", backends.ollama, "--backend", backends.openai, "--backend", backends.web]
    printed = publish(*args, "--print-config", "--relay", RELAY, "--token", TOKEN)
    assert printed.returncode == 0, printed.stderr
    assert TOKEN not in printed.stdout  # never written out: read from the environment
    said = printed.stderr.splitlines()
    assert [line.split(": ", 1)[1] for line in said if " WARNING " in line] == [
        f"--backend {backends.web} answers HTTP but is not an LLM server (GET /api/version: "
        "404, GET /v1/models: 404)",
        f"qwen2:7b of {backends.openai}/v1 is not published: qwen2:7b is already published "
        f"from {backends.ollama}",
    ]
    file = tmp_path / "publisher.yaml"
    file.write_text(printed.stdout)
    monkeypatch.setenv("NATRELAY_PUBLISH_TOKEN", TOKEN)
    read_back = load_config(file)

    # What the same command line runs with, built here.
    line = one_line(_parser().parse_args(["publish", *args, "--relay", RELAY, "--token", TOKEN]))
    providers = asyncio.run(line.catalog().providers())
    assert read_back == line.config(providers)
    assert [(p.name, p.type, p.model, p.aliases) for p in read_back.providers] == [
        ("llama3", "ollama", "llama3:latest", ["llama3:latest"]),
        ("qwen2:7b", "ollama", "qwen2:7b", []),
        ("Mistral-7B.Q4", "openai", "/models/Mistral-7B.Q4.gguf", []),
    ]
    assert read_back.relay.token.get_secret_value() == TOKEN
    # Printed again from what was read, it is the same file.
    assert line.config_yaml(read_back.providers) == printed.stdout


def test_detect_probes_the_ports_it_is_told(backends: Backends) -> None:
    with closed_port() as closed:
        ports = [backends.ollama, backends.web, closed]
        env = {
            "NATRELAY_DETECT_PORTS": ",".join(url.rsplit(":", 1)[1] for url in ports),
            "NATRELAY_URL": RELAY,
        }
        printed = publish("--detect", "--print-config", env=env)
    assert printed.returncode == 0, printed.stderr
    config = yaml.safe_load(printed.stdout)
    assert [p["name"] for p in config["providers"]] == ["llama3", "qwen2:7b"]
    assert config["relay"]["url"] == RELAY
    assert config["relay"]["token"] == {"env": "NATRELAY_PUBLISH_TOKEN"}
    # The web server on a probed port is said once, at INFO; the closed port not at all.
    lines = printed.stderr.splitlines()
    assert [line.split(": ", 1)[1] for line in lines if "not an LLM server" in line] == [
        f"{backends.web} answers HTTP but is not an LLM server (GET /api/version: 404, "
        "GET /v1/models: 404)"
    ]
    assert not any(closed in line for line in lines)


def test_nothing_found_is_said_and_fails(backends: Backends) -> None:
    with closed_port() as closed:
        env = {"NATRELAY_DETECT_PORTS": closed.rsplit(":", 1)[1], "NATRELAY_URL": RELAY}
        found = publish("--detect", "--backend", backends.web, "--print-config", env=env)
    assert found.returncode == 1
    assert found.stdout == ""
    assert "nothing to publish" in found.stderr


def test_the_environment_names_relay_and_token() -> None:
    env = {"NATRELAY_URL": RELAY, "NATRELAY_PUBLISH_TOKEN": TOKEN}
    provider = ProviderConfig(name="m", type="openai", base_url="http://127.0.0.1:1/v1", model="m")
    from_env = one_line(_parser().parse_args(["publish", "--detect"]), env).config([provider])
    assert from_env.relay.url == RELAY
    assert from_env.relay.token.get_secret_value() == TOKEN
    flags = ["publish", "--detect", "--relay", "https://other.example.com", "--token", "given"]
    from_flags = one_line(_parser().parse_args(flags), env).config([provider])
    assert from_flags.relay.url == "https://other.example.com"
    assert from_flags.relay.token.get_secret_value() == "given"
    # One session file per command line and relay, the same at every start.
    again = one_line(_parser().parse_args(["publish", "--detect"]), env).config([provider])
    assert again.session_file == from_env.session_file != from_flags.session_file


@pytest.mark.parametrize(
    ("args", "env", "says"),
    [
        ([], {}, "say what to publish: --detect, --backend URL, or --config FILE"),
        (["--config", "x.yaml", "--detect"], {}, "give --config FILE, or --detect/--backend"),
        (["--config", "x.yaml", "--relay", RELAY], {}, "--relay and --token go with --detect"),
        (["--config", "x.yaml", "--print-config"], {}, "--print-config prints what"),
        (["--detect"], {"NATRELAY_PUBLISH_TOKEN": TOKEN}, "no relay: give --relay URL, or set"),
        (["--detect"], {"NATRELAY_URL": RELAY}, "no publish token: give --token KEY, or set"),
        (["--backend", "vllm:http://127.0.0.1:1", "--relay", RELAY], {}, "unknown backend type"),
        (["--detect", "--refresh-seconds", "-1", "--relay", RELAY], {}, "--refresh-seconds:"),
        (["--detect", "--relay", RELAY], {"NATRELAY_DETECT_PORTS": "x"}, "NATRELAY_DETECT_PORTS"),
        (["--detect", "--relay", f"{RELAY}/v1", "--token", TOKEN], {}, "relay.url: ends in /v1"),
    ],
)
def test_a_bad_command_line_says_what_is_wrong(
    args: list[str], env: dict[str, str], says: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    if "--relay" in args and "/v1" in args[args.index("--relay") + 1]:
        # The URL is checked with the config: the backends must serve something first.
        with serve(FakeBackend(models=("m",)).app()) as url:
            failed = publish("--backend", url, *args[1:], env=env)
    else:
        failed = publish(*args, env=env)
    assert failed.returncode == 2, failed.stderr
    assert says in failed.stderr


def test_print_systemd_writes_a_unit_without_the_token(tmp_path: Path) -> None:
    env = {"NATRELAY_URL": RELAY, "NATRELAY_DETECT_PORTS": "11434,8080"}
    unit = publish("--detect", "--backend", "8080", "--token", TOKEN, "--print-systemd", env=env)
    assert unit.returncode == 0, unit.stderr
    text = unit.stdout
    assert TOKEN not in text
    natrelay = Path(sys.executable).parent / "natrelay"
    assert (
        f"ExecStart={natrelay} publish --backend 8080 --detect --relay {RELAY} "
        "--session-file %S/natrelay/session.json"
    ) in text.splitlines()
    for line in (
        "Restart=on-failure",
        "RestartPreventExitStatus=2",
        "StateDirectory=natrelay",
        "EnvironmentFile=%h/.config/natrelay/publish.env",
        "WantedBy=default.target",
        "Environment=NATRELAY_DETECT_PORTS=11434,8080",
    ):
        assert line in text.splitlines()
    verify(tmp_path, text)

    config = tmp_path / "my dir" / "100% publisher.yaml"
    system = publish("--config", str(config), "--print-systemd", "system")
    assert system.returncode == 0, system.stderr
    assert (
        f'ExecStart={natrelay} publish --config "{tmp_path}/my dir/100%% publisher.yaml" '
        "--session-file %S/natrelay/session.json"
    ) in system.stdout.splitlines()
    for line in (
        "EnvironmentFile=-/etc/natrelay/publish.env",
        "After=network-online.target ollama.service",
        "WantedBy=multi-user.target",
    ):
        assert line in system.stdout.splitlines()
    verify(tmp_path, system.stdout)


def verify(tmp_path: Path, unit: str) -> None:
    """`systemd-analyze verify` the unit, where systemd is installed."""
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        return
    path = tmp_path / "natrelay-publish.service"
    path.write_text(unit)
    checked = subprocess.run(
        [analyze, "verify", "--man=no", str(path)], capture_output=True, text=True, check=False
    )
    assert checked.returncode == 0, checked.stderr


def test_in_process_usage_error_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert natrelay_main(["publish"]) == 2
    assert "say what to publish" in capsys.readouterr().err
