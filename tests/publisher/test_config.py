from __future__ import annotations

import os
import re
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from natrelay_publisher.config import default_session_file, load_config, parse_config
from natrelay_publisher.errors import ConfigError, SessionFileBusyError
from natrelay_publisher.session_file import SessionFile
from natrelay_publisher.slots import ProviderSlot

RELAY = {"url": "https://relay.example.com", "token": "t0ken"}


def config(*providers: dict[str, Any], **relay: Any) -> dict[str, Any]:
    return {"relay": {**RELAY, **relay}, "providers": list(providers)}


def echo(**fields: Any) -> dict[str, Any]:
    return {"name": "echo", "type": "echo", **fields}


def openai(**fields: Any) -> dict[str, Any]:
    return {
        "name": "llama3",
        "type": "openai",
        "baseUrl": "http://127.0.0.1:8000/v1",
        "model": "meta-llama/Llama-3-8B-Instruct",
        **fields,
    }


BAD = [
    (
        config(echo(maxConcurrency=0)),
        "providers[0].maxConcurrency: Input should be greater than or equal to 1",
    ),
    (config(echo(), heartbeatSeconds=0), "relay.heartbeatSeconds: Input should be greater than 0"),
    (
        config(echo(), pollWaitSeconds=30),
        "relay.pollWaitSeconds: Input should be less than or equal to 25",
    ),
    (
        config(echo(), colour="blue"),
        "relay.colour: unknown key (known: url, token, sessionFile, heartbeatSeconds, "
        "pollWaitSeconds, shutdownGraceSeconds, doorbell)",
    ),
    (
        config(echo(colour="blue")),
        "providers[0].colour: unknown key (known: name, type, baseUrl, model, apiKey, tier, "
        "description, publish, maxConcurrency, timeoutSeconds, healthTimeoutSeconds, options, "
        "wake, sleep, sleepAfterIdleSeconds, endpoints, aliases)",
    ),
    (
        config(openai(baseURL="http://x")),
        "providers[0].baseURL: unknown key; did you mean baseUrl?",
    ),
    (
        config(echo(maxconcurrency=2)),
        "providers[0].maxconcurrency: unknown key; did you mean maxConcurrency?",
    ),
    (
        config(echo(), sesionFile="s.json"),
        "relay.sesionFile: unknown key; did you mean sessionFile?",
    ),
    (config(echo(), heartbeat=5), "relay.heartbeat: unknown key; did you mean heartbeatSeconds?"),
    (
        config(echo(options={"tokenDelayMS": 5})),
        "providers[0].options.tokenDelayMS: unknown key; did you mean tokenDelayMs?",
    ),
    (
        config(echo(wake={"type": "http", "url": "http://x", "maxWait": 5})),
        "providers[0].wake.maxWait: unknown key; did you mean maxWaitSeconds?",
    ),
    (
        config(openai(wake={"type": "vllm-sleep", "baseURL": "http://x"})),
        "providers[0].wake.baseURL: unknown key; did you mean baseUrl?",
    ),
    (
        config(echo(), url="https://relay.example.com/v1"),
        "relay.url: ends in /v1, the OpenAI base URL clients use; the publisher wants the "
        "relay's own URL: drop /v1 (https://relay.example.com)",
    ),
    (
        config(echo(), url="http://127.0.0.1:8787/v1/"),
        "relay.url: ends in /v1, the OpenAI base URL clients use; the publisher wants the "
        "relay's own URL: drop /v1 (http://127.0.0.1:8787)",
    ),
    ({"providers": [echo()]}, "relay: Field required"),
    (config(), "providers: List should have at least 1 item after validation, not 0"),
    (config(echo(), url="ftp://relay"), "relay.url: should be an http:// or https:// URL"),
    (
        config(echo(), token=42),
        "relay.token: Input should be a string, {env: NAME} or {file: PATH}",
    ),
    (
        config(echo(), token={"env": "NATRELAY_TEST_UNSET_VARIABLE"}),
        "relay.token: environment variable NATRELAY_TEST_UNSET_VARIABLE is not set",
    ),
    (
        config(echo(), token={"file": "/nonexistent/token"}),
        "relay.token: cannot read /nonexistent/token: No such file or directory",
    ),
    (
        config({"name": "x", "type": "triton"}),
        "providers[0].type: unknown provider type 'triton' (known: openai, ollama, echo)",
    ),
    (config(openai(baseUrl=None)), "providers[0].baseUrl: Field required for type openai"),
    (
        config({"name": "x", "type": "ollama", "baseUrl": "http://127.0.0.1:11434"}),
        "providers[0].model: Field required for type ollama",
    ),
    (
        config(echo(name="has space")),
        "providers[0].name: String should match pattern "
        "'^[A-Za-z0-9](?:[A-Za-z0-9._:/@-]{0,126}[A-Za-z0-9_:/@-])?$'",
    ),
    (config(echo(), echo()), "providers[1].name: duplicate name 'echo'"),
    (config(echo(publish=False)), "providers: no provider has `publish: true`"),
    (
        config(echo(options={"tokenDelayMs": -5})),
        "providers[0].options.tokenDelayMs: Input should be greater than or equal to 0",
    ),
    (
        config(echo(options={"delay": 5})),
        "providers[0].options.delay: unknown key (known: tokenDelayMs, availabilityUrl)",
    ),
    (
        config(openai(options={"tokenDelayMs": 5})),
        "providers[0].options.tokenDelayMs: unknown key (known: none)",
    ),
    (config(echo(wake={"url": "http://x"})), "providers[0].wake.type: Field required"),
    (
        config(echo(wake={"type": "ipmi"})),
        "providers[0].wake.type: unknown recipe type 'ipmi' "
        "(known: http, command, wol, vllm-sleep)",
    ),
    (config(echo(wake={"type": "http"})), "providers[0].wake.url: Field required"),
    (
        config(echo(wake={"type": "http", "url": "http://x", "maxWaitSeconds": 0})),
        "providers[0].wake.maxWaitSeconds: Input should be greater than 0",
    ),
    (
        config(echo(wake={"type": "command", "command": "true", "shell": True})),
        "providers[0].wake.shell: unknown key (known: type, maxWaitSeconds, command, args)",
    ),
    (
        config(echo(wake={"type": "command", "command": "no-such-wake-program"})),
        "providers[0].wake.command: 'no-such-wake-program' is not on PATH",
    ),
    (
        config(echo(wake={"type": "command", "command": "/nonexistent/wake-gpu"})),
        "providers[0].wake.command: '/nonexistent/wake-gpu' is not an executable file",
    ),
    (
        config(echo(wake={"type": "wol", "mac": "not-a-mac"})),
        "providers[0].wake.mac: should be a MAC address like aa:bb:cc:dd:ee:ff",
    ),
    (
        config(echo(wake={"type": "wol", "mac": "aa:bb:cc:dd:ee:ff", "port": 70000})),
        "providers[0].wake.port: Input should be less than or equal to 65535",
    ),
    (
        config(echo(wake={"type": "vllm-sleep"})),
        "providers[0].wake.baseUrl: required when the provider has no baseUrl",
    ),
    (
        config(
            echo(
                wake={"type": "http", "url": "http://x"},
                sleep={"type": "wol", "mac": "aa:bb:cc:dd:ee:ff"},
            )
        ),
        "providers[0].sleep.type: wol cannot be a sleep recipe",
    ),
    (
        config(openai(sleepAfterIdleSeconds=60)),
        "providers[0].sleepAfterIdleSeconds: requires a `sleep` recipe",
    ),
    (
        config(openai(sleep={"type": "vllm-sleep"})),
        "providers[0].sleep: requires a `wake` recipe (who would wake it up?)",
    ),
    (
        config(echo(endpoints=["images"])),
        "providers[0].endpoints[0]: Input should be 'chat', 'completions', 'embeddings', "
        "'responses' or 'messages'",
    ),
    (
        config(echo(endpoints=[])),
        "providers[0].endpoints: List should have at least 1 item after validation, not 0",
    ),
    (
        config(echo(aliases=["echo"])),
        "providers[0].aliases[0]: 'echo' is already a name or an alias here",
    ),
    (
        config(echo(), echo(name="b", aliases=["x", "echo"])),
        "providers[1].aliases[1]: 'echo' is already a name or an alias here",
    ),
    (
        config(echo(aliases=["a b"])),
        "providers[0].aliases[0]: String should match pattern "
        "'^[A-Za-z0-9](?:[A-Za-z0-9._:/@-]{0,126}[A-Za-z0-9_:/@-])?$'",
    ),
    (
        config(echo(aliases=[f"a{i}" for i in range(9)])),
        "providers[0].aliases: List should have at most 8 items after validation, not 9",
    ),
    (
        config(echo(), doorbell={"url": "https://relay.example.com/relay"}),
        "relay.doorbell.url: should be a ws:// or wss:// URL",
    ),
    (
        config(echo(), doorbell={"keepaliveSeconds": 600}),
        "relay.doorbell.keepaliveSeconds: Input should be less than or equal to 540",
    ),
    (
        config(echo(), doorbell={"maxConnectionSeconds": 7200}),
        "relay.doorbell.maxConnectionSeconds: Input should be less than or equal to 7140",
    ),
]


@pytest.mark.parametrize(
    ("data", "message"), BAD, ids=[m.split(":")[0] + "|" + m[-20:] for _, m in BAD]
)
def test_bad_config_names_file_field_and_reason(tmp_path: Path, data: Any, message: str) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert f"{path}: {message}" in str(caught.value).splitlines()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("relay: [unclosed\n", "invalid YAML: "),
        ("relay:\n  url: a\n url: b\n", "invalid YAML: "),
        ("- a list\n", "should be a mapping with `relay` and `providers`"),
        ("", "should be a mapping with `relay` and `providers`"),
    ],
)
def test_yaml_errors_name_the_file(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match="^" + str(path) + ": " + message.replace("(", r"\(")):
        load_config(path)


def test_yaml_syntax_error_says_where(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("relay:\n  url: [a\n")
    with pytest.raises(ConfigError, match=r"\(line \d+, column \d+\)"):
        load_config(path)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=f"^{tmp_path}/nope.yaml: file not found$"):
        load_config(tmp_path / "nope.yaml")


def test_defaults_and_the_documented_example(tmp_path: Path) -> None:
    example = """
relay:
  url: https://relay.example.com/
  token: "literal"
providers:
  - name: llama3
    type: openai
    baseUrl: http://127.0.0.1:8000/v1/
    model: meta-llama/Llama-3-8B-Instruct
    tier: gpu
    description: "Llama 3 on the lab box"
    wake:
      type: http
      url: http://127.0.0.1:9000/wake
      method: POST
      headers: {X-Token: abc}
      body: null
      maxWaitSeconds: 120
    sleep:
      type: vllm-sleep
    sleepAfterIdleSeconds: 600
  - name: echo
    type: echo
    publish: false
"""
    path = tmp_path / "config.yaml"
    path.write_text(example)
    loaded = load_config(path)
    relay = loaded.relay
    assert relay.url == "https://relay.example.com"
    assert relay.token.get_secret_value() == "literal"
    assert relay.session_file == default_session_file(path)
    assert (relay.heartbeat_seconds, relay.poll_wait_seconds, relay.shutdown_grace_seconds) == (
        30,
        25,
        30,
    )
    llama = loaded.providers[0]
    assert llama.base_url == "http://127.0.0.1:8000/v1"
    assert llama.max_concurrency == 4 and llama.publish
    assert llama.wake is not None and llama.wake.max_wait_seconds == 120
    assert llama.sleep is not None and getattr(llama.sleep, "base_url") == "http://127.0.0.1:8000"
    assert [p.name for p in loaded.published] == ["llama3"]
    # A secret never shows in a repr or a log line.
    assert "literal" not in repr(loaded)


def test_token_and_api_key_from_env_and_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NATRELAY_TEST_TOKEN", "from-env")
    key_file = tmp_path / "key"
    key_file.write_text("from-file\n")
    loaded = parse_config(
        config(openai(apiKey={"file": str(key_file)}), token={"env": "NATRELAY_TEST_TOKEN"})
    )
    assert loaded.relay.token.get_secret_value() == "from-env"
    api_key = loaded.providers[0].api_key
    assert api_key is not None and api_key.get_secret_value() == "from-file"


def test_empty_secret_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"relay\.token: the secret is empty"):
        parse_config(config(echo(), token=""), "c.yaml")


def test_session_file_is_private_and_keyed_by_relay(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "dir" / "session.json"
    sessions = SessionFile(path)
    assert sessions.load("https://a") is None
    sessions.save("https://a", "sess-0123456789")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert sessions.load("https://a") == "sess-0123456789"
    assert sessions.load("https://b") is None
    path.chmod(0o644)
    sessions.save("https://a", "sess-abcdefghij")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert sessions.load("https://a") == "sess-abcdefghij"
    path.write_text("{not json")
    assert sessions.load("https://a") is None


def test_default_session_file_is_per_config_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two publishers on one host with the default must not share one session."""
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    paths = [tmp_path / "a" / "natrelay.yaml", tmp_path / "b" / "natrelay.yaml"]
    for path in paths:
        path.write_text(yaml.safe_dump(config(echo())))
    first, second = (load_config(path).relay.session_file for path in paths)
    assert first != second
    assert first.parent == second.parent == tmp_path / "home" / ".config" / "natrelay"
    assert re.fullmatch(r"session-[0-9a-f]{12}\.json", first.name)
    # The same file, however it is named, is the same session.
    monkeypatch.chdir(tmp_path / "a")
    assert load_config("natrelay.yaml").relay.session_file == first
    assert load_config(tmp_path / "b" / ".." / "a" / "natrelay.yaml").relay.session_file == first
    # Given explicitly, it is used as it is.
    paths[0].write_text(yaml.safe_dump(config(echo(), sessionFile="~/here.json")))
    assert load_config(paths[0]).relay.session_file == tmp_path / "home" / "here.json"


def test_session_file_is_never_written_through_a_planted_link(tmp_path: Path) -> None:
    path = tmp_path / "session.json"
    victim = tmp_path / "victim"
    victim.write_text("precious")
    # The temporary name the publisher used to write first: predictable from the pid.
    (tmp_path / f".session.json.{os.getpid()}.tmp").symlink_to(victim)
    SessionFile(path).save("https://a", "sess-0123456789")
    assert victim.read_text() == "precious"
    assert not path.is_symlink() and stat.S_IMODE(path.stat().st_mode) == 0o600
    assert SessionFile(path).load("https://a") == "sess-0123456789"
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        f".session.json.{os.getpid()}.tmp",
        "session.json",
        "victim",
    ]


def test_session_lock_refuses_a_second_holder(tmp_path: Path) -> None:
    path = tmp_path / "state" / "session.json"
    first = SessionFile(path)
    first.lock()
    with pytest.raises(SessionFileBusyError) as caught:
        SessionFile(path).lock()
    message = str(caught.value)
    assert f"another publisher (pid {os.getpid()}) is using the session file {path}" in message
    assert "relay.sessionFile" in message
    first.unlock()
    assert not first.lock_path.exists()  # nothing left behind
    second = SessionFile(path)
    second.lock()  # free again
    second.unlock()
    # a lock file a killed process left behind is taken over
    first.lock_path.write_text("12345\n")
    third = SessionFile(path)
    third.lock()
    assert first.lock_path.read_text() == f"{os.getpid()}\n"
    third.unlock()
    assert not first.lock_path.exists()


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "natrelay_publisher", *args],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
        env={**os.environ, **(env or {})},
    )


def test_cli_invalid_config_exits_2_before_any_network(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    # The relay URL points at a port nobody listens on: we must fail on the config alone.
    path.write_text(yaml.safe_dump(config(echo(maxConcurrency=0), url="http://127.0.0.1:9")))
    done = run_cli("publish", "--config", str(path))
    assert done.returncode == 2
    assert done.stderr.strip() == (
        f"{path}: providers[0].maxConcurrency: Input should be greater than or equal to 1"
    )


def test_cli_missing_config(tmp_path: Path) -> None:
    done = run_cli("publish", "--config", str(tmp_path / "none.yaml"))
    assert done.returncode == 2
    assert done.stderr.strip() == f"{tmp_path / 'none.yaml'}: file not found"


def test_cli_help() -> None:
    done = run_cli("publish", "--help")
    assert done.returncode == 0
    assert "--config FILE" in done.stdout


def test_cli_dev_without_the_local_extras(tmp_path: Path) -> None:
    # A sitecustomize that hides natrelay_infra.dev, as on a box with only the publisher.
    (tmp_path / "sitecustomize.py").write_text(
        "import sys\nsys.modules['natrelay_infra.dev'] = None\n"
    )
    done = run_cli("dev", "--help", env={"PYTHONPATH": str(tmp_path)})
    assert done.returncode == 2
    assert len(done.stderr.strip().splitlines()) == 1
    assert "from a clone of the natrelay repository, pip install '.[local]'" in done.stderr
    assert "natrelay[local]" not in done.stderr  # not a package any index has


def test_the_examples_in_the_docs_are_valid(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("NATRELAY_TOKEN", "VLLM_API_KEY"):
        monkeypatch.setenv(name, "x")
    docs = Path(__file__).resolve().parents[2] / "docs" / "publisher.md"
    blocks = re.findall(r"```yaml\n(.*?)```", docs.read_text(), re.DOTALL)
    checked = 0
    for block in blocks:
        data = yaml.safe_load(block.replace("{file: /etc/natrelay/token}", "{env: NATRELAY_TOKEN}"))
        if isinstance(data, dict) and "providers" in data:
            data.setdefault("relay", RELAY)
            parse_config(data, str(docs))
            checked += 1
    assert checked >= 5


def test_the_doorbell_is_on_by_default_and_can_be_pinned_or_switched_off() -> None:
    default = parse_config(config(echo())).relay.doorbell
    assert default.enabled and default.url is None  # the relay's, when it offers one
    assert (default.safety_poll_seconds, default.keepalive_seconds) == (60, 300)
    pinned = parse_config(config(echo(), doorbell={"url": "wss://x.example.com/relay"}))
    assert pinned.relay.doorbell.url == "wss://x.example.com/relay"
    assert not parse_config(config(echo(), doorbell={"enabled": False})).relay.doorbell.enabled


def test_endpoints_default_to_what_the_type_serves_and_aliases_are_published() -> None:
    ollama = {"name": "l", "type": "ollama", "baseUrl": "http://127.0.0.1:11434", "model": "m"}
    loaded = parse_config(
        config(
            openai(aliases=["meta-llama/Llama-3-8B-Instruct", "l3"]),
            ollama,
            {**ollama, "name": "l-all", "endpoints": ["messages", "chat", "responses"]},
            echo(),
        )
    )
    specs = [ProviderSlot.build(p).spec() for p in loaded.providers]
    assert [[e.value for e in s.endpoints or []] for s in specs] == [
        ["chat", "completions", "embeddings", "responses", "messages"],  # openai: all
        ["chat", "completions", "embeddings"],  # ollama: responses and messages are newer
        ["chat", "responses", "messages"],  # as configured (in a stable order)
        ["chat", "completions", "embeddings", "responses", "messages"],  # echo: all
    ]
    assert specs[0].aliases == ["meta-llama/Llama-3-8B-Instruct", "l3"]
    assert specs[1].aliases == []
