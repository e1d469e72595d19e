"""What a Lambda cold start loads: the api handler, imported in a fresh interpreter with
the template's environment, leaves out what a cold request does not need (the public
rows' HTTP client, the Prometheus exporter) and makes no AWS client it may not use (the
doorbell's management API client, made on the first ring). The features behind them are
tested where they are used (test_public_rows, test_observe, test_doorbell)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
LAMBDA_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    "NATRELAY_ADMIN_TOKEN": "cold-import-admin-token-0123456789",
    "NATRELAY_IN_PROCESS_SIGNALS": "false",
    "NATRELAY_LOG_FORMAT": "json",
    "NATRELAY_METRICS": "emf",
    "NATRELAY_DOORBELL_URL": "wss://abc123.execute-api.us-east-1.amazonaws.com/relay",
    "NATRELAY_DOORBELL_ENDPOINT": "https://abc123.execute-api.us-east-1.amazonaws.com/relay",
}
PROBE = """
import json, sys
sys.path.insert(0, "functions/api")
import app
relay = app.app.state.relay
print(json.dumps({
    "modules": sorted({name.split(".")[0] for name in sys.modules}),
    "ringClientMade": relay.stores.connections._client is not None,
}))
"""


def cold_start() -> dict[str, object]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("NATRELAY_", "AWS_"))}
    done = subprocess.run(
        [sys.executable, "-c", PROBE],
        cwd=ROOT,
        env={**env, **LAMBDA_ENV},
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    loaded: dict[str, object] = json.loads(done.stdout.splitlines()[-1])
    return loaded


def test_a_cold_start_loads_only_what_a_request_needs() -> None:
    loaded = cold_start()
    modules = loaded["modules"]
    assert isinstance(modules, list)
    # what it does need, as a check that the probe saw the handler's imports
    assert {"natrelay", "starlette", "mangum", "boto3", "pydantic"} <= set(modules)
    for lazy in ("httpx", "prometheus_client", "click", "rich", "opentelemetry", "yaml"):
        assert lazy not in modules, lazy
    assert loaded["ringClientMade"] is False
