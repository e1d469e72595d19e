"""Every OpenAI-shaped answer of the relay and of the demo's backend (`echo`), validated
against OpenAI's published OpenAPI document (tests/schemas/openai, JSON Schema 2020-12),
and every Anthropic-shaped one against the official `anthropic` SDK's types: models,
plain answers and every stream chunk or event of each endpoint, and error bodies."""

from __future__ import annotations

import json
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import pytest
from anthropic.types import ErrorResponse, Message, RawMessageStreamEvent
from pydantic import TypeAdapter

from natrelay_infra.dev import DEV_CLIENT_TOKEN
from tests.infra.test_dev import Dev, natrelay_dev

pytestmark = pytest.mark.slow

SCHEMAS = Path(__file__).parent.parent / "schemas" / "openai" / "openapi-schemas.json"
AUTH = {"Authorization": f"Bearer {DEV_CLIENT_TOKEN}"}
USER = [{"role": "user", "content": "hello there, relay"}]


def _nullable(schema: Any) -> Any:
    """The document marks some fields OpenAPI 3.0's way (`nullable: true`), which JSON
    Schema ignores: read it as "or null", as the API sends them (`finish_reason: null`
    in stream chunks)."""
    if isinstance(schema, list):
        return [_nullable(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: _nullable(v) for k, v in schema.items() if k != "nullable"}
    if schema.get("nullable") is True:
        return {"anyOf": [out, {"type": "null"}]}
    return out


@cache
def _document() -> dict[str, Any]:
    document: dict[str, Any] = json.loads(SCHEMAS.read_text(encoding="utf-8"))
    return _nullable(document)  # type: ignore[no-any-return]


def _leaf(error: jsonschema.ValidationError) -> str:
    """Where and why, down to the branch of a oneOf/anyOf that came closest."""
    best = jsonschema.exceptions.best_match([error])
    while best.context:
        best = jsonschema.exceptions.best_match(best.context)
    return f"{'/'.join(str(p) for p in best.absolute_path)}: {best.message}"


def assert_openai(name: str, answer: Any, *, stream_chunk: bool = False) -> None:
    """`answer` is a valid `name` of OpenAI's document (every error listed). A legacy
    completions stream chunk may say `finish_reason: null`, as the API sends it (the
    document does not allow it)."""
    document = _document()
    if stream_chunk:
        document = _null_finish(document, name)
    schema = {**document, "$ref": f"#/components/schemas/{name}"}
    validator = jsonschema.Draft202012Validator(schema)
    errors = [_leaf(e) for e in validator.iter_errors(answer)]
    assert not errors, f"not a valid {name}: {errors}\n{json.dumps(answer)[:2000]}"


def _null_finish(document: dict[str, Any], name: str) -> dict[str, Any]:
    schemas = json.loads(json.dumps(document["components"]["schemas"]))
    choice = schemas[name]["properties"]["choices"]["items"]["properties"]
    choice["finish_reason"] = {"anyOf": [choice["finish_reason"], {"type": "null"}]}
    return {**document, "components": {"schemas": schemas}}


def _events(response: httpx.Response) -> Iterator[Any]:
    """The JSON `data:` of each server-sent event ([DONE] ends it)."""
    for line in response.iter_lines():
        if line.startswith("data: ") and line != "data: [DONE]":
            yield json.loads(line.removeprefix("data: "))


@pytest.fixture(scope="module")
def dev(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Dev]:
    with natrelay_dev(tmp_path_factory.mktemp("shapes"), "--demo") as running:
        running.wait_for(r"^demo ready")
        yield running


def _post(dev: Dev, path: str, body: dict[str, Any]) -> Any:
    answer = httpx.post(f"{dev.url}{path}", headers=AUTH, json=body, timeout=30)
    assert answer.status_code == 200, answer.text
    return answer.json()


def _stream(dev: Dev, path: str, body: dict[str, Any]) -> list[Any]:
    with httpx.stream(
        "POST", f"{dev.url}{path}", headers=AUTH, json={**body, "stream": True}, timeout=30
    ) as answer:
        assert answer.status_code == 200, answer.read()
        events = list(_events(answer))
    assert events
    return events


def test_models(dev: Dev) -> None:
    models = httpx.get(f"{dev.url}/v1/models", headers=AUTH).json()
    assert_openai("ListModelsResponse", models)
    assert {m["owned_by"] for m in models["data"]} == {"natrelay"}
    assert_openai("Model", httpx.get(f"{dev.url}/v1/models/echo", headers=AUTH).json())


def test_chat_plain_and_every_stream_chunk(dev: Dev) -> None:
    body = {"model": "echo", "messages": USER}
    assert_openai("CreateChatCompletionResponse", _post(dev, "/v1/chat/completions", body))
    with_usage = {**body, "stream_options": {"include_usage": True}}
    for chunk in _stream(dev, "/v1/chat/completions", with_usage):
        assert_openai("CreateChatCompletionStreamResponse", chunk)


def test_completions_plain_and_streamed(dev: Dev) -> None:
    body = {"model": "echo", "prompt": "once upon a time"}
    assert_openai("CreateCompletionResponse", _post(dev, "/v1/completions", body))
    for chunk in _stream(dev, "/v1/completions", body):
        assert_openai("CreateCompletionResponse", chunk, stream_chunk=True)


def test_embeddings(dev: Dev) -> None:
    body = {"model": "echo", "input": ["one text", "another"]}
    assert_openai("CreateEmbeddingResponse", _post(dev, "/v1/embeddings", body))


def test_responses_plain_and_every_stream_event(dev: Dev) -> None:
    body = {"model": "echo", "input": "hello there, relay"}
    assert_openai("Response", _post(dev, "/v1/responses", body))
    for event in _stream(dev, "/v1/responses", body):
        assert_openai("ResponseStreamEvent", event)


def test_anthropic_messages_against_the_sdk_types(dev: Dev) -> None:
    body = {"model": "echo", "max_tokens": 64, "messages": USER}
    Message.model_validate(_post(dev, "/v1/messages", body), strict=True)
    adapter: TypeAdapter[Any] = TypeAdapter(RawMessageStreamEvent)
    for event in _stream(dev, "/v1/messages", body):
        if event != {"type": "ping"}:  # documented, and skipped by the SDK's stream reader
            adapter.validate_python(event, strict=True)
    refused = httpx.post(f"{dev.url}/v1/messages", headers=AUTH, json={**body, "model": "nope"})
    assert refused.status_code == 404
    ErrorResponse.model_validate(refused.json(), strict=True)


@pytest.mark.parametrize(
    ("method", "path", "headers", "body", "status"),
    [
        ("GET", "/v1/models", {}, None, 401),
        ("GET", "/v1/models", {"Authorization": "Bearer wrong"}, None, 401),
        ("POST", "/v1/chat/completions", AUTH, {"model": "nope", "messages": USER}, 404),
        ("POST", "/v1/chat/completions", AUTH, {"model": "echo"}, 400),
        ("POST", "/v1/chat/completions", AUTH, {"model": "echo", "messages": []}, 400),
        ("POST", "/chat/completions", AUTH, {"model": "echo", "messages": USER}, 404),
        ("GET", "/v1/chat/completions", AUTH, None, 405),
        ("POST", "/v1/embeddings", AUTH, {"model": "echo", "input": []}, 400),
        ("GET", "/api/v1/keys", AUTH, None, 403),
    ],
)
def test_error_bodies(
    dev: Dev,
    method: str,
    path: str,
    headers: dict[str, str],
    body: dict[str, Any] | None,
    status: int,
) -> None:
    answer = httpx.request(method, f"{dev.url}{path}", headers=headers, json=body)
    assert answer.status_code == status, answer.text
    assert_openai("ErrorResponse", answer.json())
