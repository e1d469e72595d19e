"""The second hour's first stumble, end to end: `natrelay dev` restarts without its keys
(`--ephemeral`), so the publisher's stored key is refused. The publisher does not exit (a
service manager would restart it into the same refusal forever): it says what probably
happened and retries with backoff, and serves again once the relay is back with its state.
"""

from __future__ import annotations

from pathlib import Path

import openai
import pytest

from natrelay_infra.dev import DEV_CLIENT_TOKEN
from tests.infra.test_dev import Dev, admin_cli, natrelay_dev
from tests.publisher.running import start_publisher
from tests.support.net import free_port, wait_until

pytestmark = pytest.mark.slow

HELLO = [{"role": "user", "content": "hello again"}]


def _publisher_key(dev: Dev) -> str:
    made = admin_cli(dev, "keys", "create", "--role", "publisher", "--label", "box", "-q")
    assert made.returncode == 0, made.stderr
    return made.stdout.strip()


def _answers(dev: Dev) -> bool:
    client = openai.OpenAI(base_url=f"{dev.url}/v1", api_key=DEV_CLIENT_TOKEN, max_retries=0)
    try:
        reply = client.chat.completions.create(model="boxed", messages=HELLO)  # type: ignore[arg-type]
    except openai.APIStatusError:
        return False
    return reply.choices[0].message.content == "hello again"


def test_a_refused_key_that_had_worked_is_retried_until_the_relay_has_it_again(
    tmp_path: Path,
) -> None:
    port = str(free_port())
    state = tmp_path / "state"
    runs = [tmp_path / name for name in ("first", "amnesiac", "restored")]
    for run in runs:
        run.mkdir()
    with natrelay_dev(runs[0], "--port", port, "--state-dir", str(state)) as dev:
        dev.wait_for(r"^Ctrl-C stops everything")
        config = {
            "relay": {
                "url": dev.url,
                "token": _publisher_key(dev),
                "sessionFile": str(tmp_path / "session.json"),
                "heartbeatSeconds": 1,
                "pollWaitSeconds": 2,
            },
            "providers": [{"name": "boxed", "type": "echo"}],
        }
        publisher = start_publisher(config, tmp_path, "box")
        try:
            wait_until(lambda: _answers(dev), 30, publisher.log)
            assert dev.stop() == 0
            with natrelay_dev(runs[1], "--port", port, "--ephemeral") as amnesiac:
                amnesiac.wait_for(r"^Ctrl-C stops everything")
                publisher.wait_log("the relay refused the publish token it had accepted", 30)
                assert "the relay lost its keys" in publisher.log()
                assert publisher.process.poll() is None  # retrying, not exited
                assert amnesiac.stop() == 0
            with natrelay_dev(runs[2], "--port", port, "--state-dir", str(state)) as restored:
                restored.wait_for(r"^Ctrl-C stops everything")
                publisher.wait_log("the relay accepts the publish token again", 60)
                wait_until(lambda: _answers(restored), 30, publisher.log)
        finally:
            assert publisher.stop() == 0, publisher.log()
    assert publisher.log().count("the relay refused the publish token it had accepted") == 1
