"""Admins' apply of rows: public rows, the admin settings of virtual rows, all or none."""

from __future__ import annotations

from typing import Any

import boto3
import pytest

from natrelay.errors import InvalidRequestError, NameOwnedError
from natrelay.service import Relay
from natrelay.service.sweep import Sweeper
from natrelay.wire import LlmApply, LlmDocument, LlmStatus
from tests.server.conftest import PUB, FakeClock, register, spec

pytestmark = pytest.mark.anyio

SECRET = "natrelay/upstream"
CLOUD = {
    "name": "cloud",
    "kind": "public",
    "baseUrl": "https://api.example.org/v1/",
    "model": "gpt-x",
    "apiKey": {"secretsManager": SECRET},
}


@pytest.fixture
def secret(aws: None) -> str:
    boto3.client("secretsmanager", region_name="us-east-1").create_secret(
        Name=SECRET, SecretString='{"apiKey": "sk-very-secret"}'
    )
    return SECRET


def docs(*items: dict[str, Any]) -> list[LlmDocument]:
    return list(LlmApply.model_validate({"documents": list(items)}).documents)


async def test_a_public_row_is_created_then_left_alone(relay: Relay, secret: str) -> None:
    [made] = await relay.rows.apply(docs(CLOUD))
    assert (made.action, made.kind) == ("created", "public")
    row = await relay.stores.llms.get("cloud")
    assert row is not None and row.public and row.status is LlmStatus.ACTIVE
    assert row.base_url == "https://api.example.org/v1"  # the trailing slash dropped
    assert row.api_key_ref == {"secretsManager": SECRET}
    assert await relay.upstreams.read_key(row.api_key_ref) == "sk-very-secret"
    [again] = await relay.rows.apply(docs(CLOUD))
    assert again.action == "unchanged"
    [changed] = await relay.rows.apply(docs({**CLOUD, "timeoutSeconds": 30, "tier": "paid"}))
    assert (changed.action, changed.changed) == ("updated", ["tier", "timeoutSeconds"])
    [cleared] = await relay.rows.apply(docs({"name": "cloud", "tier": None}))
    assert cleared.changed == ["tier"]
    row = await relay.stores.llms.get("cloud")
    assert row is not None and row.tier is None and row.timeout_seconds == 30


async def test_lifecycle_fields_are_ignored(relay: Relay, secret: str) -> None:
    await relay.rows.apply(docs(CLOUD))
    lifecycle = {
        "status": "inactive",
        "lastHeartbeatAt": "2020-01-01T00:00:00Z",
        "inactiveSince": "2020-01-01T00:00:00Z",
        "createdAt": "2020-01-01T00:00:00Z",
        "waking": True,
        "members": [{"member": "abc", "status": "active"}],
        "queueDepth": 3,
        "sessionId": "s" * 20,
    }
    [same] = await relay.rows.apply(docs({**CLOUD, **lifecycle}))
    assert same.action == "unchanged"
    row = await relay.stores.llms.get("cloud")
    assert row is not None and row.status is LlmStatus.ACTIVE and row.session_id is None


async def test_virtual_rows_take_admin_settings_only(relay: Relay, secret: str) -> None:
    await register(relay, spec("home"))
    [done] = await relay.rows.apply(
        docs(
            {
                "name": "home",
                "description": "the box under the desk",
                "fallbacks": ["cloud"],
                "maxQueueDepth": 5,
                "type": "echo",  # as it is: fine
                "model": "echo",
            }
        )
    )
    assert done.changed == ["description", "fallbacks", "maxQueueDepth"]
    row = await relay.stores.llms.get("home")
    assert row is not None
    assert (row.description, row.fallbacks, row.max_queue_depth) == (
        "the box under the desk",
        ("cloud",),
        5,
    )
    # the publisher registers again: the admin's description stays
    await register(relay, spec("home"))
    row = await relay.stores.llms.get("home")
    assert row is not None and row.description == "the box under the desk"
    with pytest.raises(InvalidRequestError) as refused:
        await relay.rows.apply(docs({"name": "home", "model": "llama"}))
    assert refused.value.param == "documents[0].model"
    assert "its publisher sets it" in refused.value.message
    with pytest.raises(InvalidRequestError) as refused:
        await relay.rows.apply(docs({"name": "home", "baseUrl": "https://x.example/v1"}))
    assert refused.value.param == "documents[0].baseUrl"
    with pytest.raises(InvalidRequestError) as refused:
        await relay.rows.apply(docs({"name": "home", "kind": "public"}))
    assert refused.value.param == "documents[0].kind"


async def test_one_bad_document_applies_nothing(relay: Relay, secret: str) -> None:
    await register(relay, spec("home"))
    with pytest.raises(InvalidRequestError) as refused:
        await relay.rows.apply(
            docs(CLOUD, {"name": "home", "fallbacks": ["cloud"]}, {"name": "ghost"})
        )
    assert refused.value.param == "documents[2].kind"
    assert await relay.stores.llms.get("cloud") is None
    home = await relay.stores.llms.get("home")
    assert home is not None and home.fallbacks == ()


async def test_a_public_row_needs_its_upstream_and_a_readable_key(
    relay: Relay, secret: str
) -> None:
    cases = [
        ({**CLOUD, "model": None}, "documents[0].model"),
        ({k: v for k, v in CLOUD.items() if k != "baseUrl"}, "documents[0].baseUrl"),
        ({**CLOUD, "type": "anthropic"}, "documents[0].type"),
        ({**CLOUD, "apiKey": {"secretsManager": "natrelay/nope"}}, "documents[0].apiKey"),
        ({**CLOUD, "maxQueueDepth": 3}, "documents[0].maxQueueDepth"),
    ]
    for doc, param in cases:
        with pytest.raises(InvalidRequestError) as refused:
            await relay.rows.apply(docs(doc))
        assert refused.value.param == param, doc
        assert "sk-very-secret" not in refused.value.message
    assert await relay.stores.llms.get("cloud") is None


@pytest.mark.parametrize(
    ("doc", "needle"),
    [
        ({**CLOUD, "baseUrl": "https://user:pw@api.example.org/v1"}, "credentials"),
        ({**CLOUD, "baseUrl": "https://api.example.org/v1?key=x"}, "credentials"),
        ({**CLOUD, "apiKey": {"secretsManager": "prod/openai"}}, "natrelay/"),
        ({**CLOUD, "apiKey": {"ssm": "/other/key"}}, "/natrelay/"),
        ({**CLOUD, "apiKey": {"ssm": "/natrelay/a", "secretsManager": SECRET}}, "exactly one"),
        ({**CLOUD, "fallbacks": ["cloud"]}, "own fallback"),
        ({**CLOUD, "fallbacks": ["a", "a"]}, "once"),
        ({**CLOUD, "colour": "red"}, "Extra inputs"),
    ],
)
def test_documents_are_checked_field_by_field(doc: dict[str, Any], needle: str) -> None:
    with pytest.raises(ValueError, match=needle):
        LlmDocument.model_validate(doc)


async def test_names_are_owned_both_ways(relay: Relay, secret: str) -> None:
    await register(relay, spec("home"))
    with pytest.raises(InvalidRequestError, match="it is a virtual row"):
        await relay.rows.apply(docs({**CLOUD, "name": "home"}))
    # the row retired and deleted by the sweep: its publisher key still owns the name
    await relay.stores.llms.delete("home")
    with pytest.raises(NameOwnedError) as owned:
        await relay.rows.apply(docs({**CLOUD, "name": "home"}))
    assert owned.value.param == "documents[0].name"
    await relay.rows.apply(docs(CLOUD))
    with pytest.raises(NameOwnedError) as refused:
        await register(relay, spec("cloud"))
    assert "public row" in refused.value.message
    # an admin deletes the row: its name is free again
    await relay.catalog.delete("cloud")
    await register(relay, spec("cloud"))


async def test_the_sweep_never_touches_public_rows(
    relay: Relay, secret: str, clock: FakeClock
) -> None:
    await relay.rows.apply(docs(CLOUD))
    await register(relay, spec("home"))
    sweeper = relay.sweeper
    assert isinstance(sweeper, Sweeper)
    clock.advance(relay.settings.heartbeat_timeout_seconds + 1)
    await sweeper.run()
    clock.advance(relay.settings.inactive_retention_seconds + 1)
    await sweeper.run()
    assert await relay.stores.llms.get("home") is None  # retired, then deleted
    cloud = await relay.stores.llms.get("cloud")
    assert cloud is not None and relay.catalog.status(cloud) is LlmStatus.ACTIVE
    assert PUB.key_id != cloud.owner


async def test_an_api_key_in_an_ssm_secure_string(relay: Relay, aws: None) -> None:
    boto3.client("ssm", region_name="us-east-1").put_parameter(
        Name="/natrelay/upstream", Value="sk-from-ssm", Type="SecureString"
    )
    doc = {**CLOUD, "apiKey": {"ssm": "/natrelay/upstream"}}
    [made] = await relay.rows.apply(docs(doc))
    assert made.action == "created"
    row = await relay.stores.llms.get("cloud")
    assert row is not None and row.api_key_ref == {"ssm": "/natrelay/upstream"}
    assert await relay.upstreams.read_key(row.api_key_ref) == "sk-from-ssm"
    with pytest.raises(InvalidRequestError) as refused:
        await relay.rows.apply(docs({**doc, "apiKey": {"ssm": "/natrelay/missing"}}))
    assert refused.value.param == "documents[0].apiKey"
    assert "ParameterNotFound" in refused.value.message
