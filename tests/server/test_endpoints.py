"""The APIs beyond chat on a real relay (uvicorn + moto) with a scripted publisher:
who may call them, bad bodies, endpoints a pool does not serve, aliases and their
ownership, what reaches the publisher, usage, and how streams and errors are framed.

(The SDKs against a real publisher and backends: tests/e2e/test_endpoints.py.)
"""

from __future__ import annotations

import json
from typing import Any

import anthropic
import httpx
import openai
import pytest

from tests.support import api_backend
from tests.support.scripted import ScriptedPublisher, echo_answer
from tests.support.stack import Stack

MSG = [{"role": "user", "content": "the quick brown fox"}]
ALL = ["chat", "completions", "embeddings", "responses", "messages"]
EVERYTHING = [{"name": "m", "type": "echo", "model": "echo", "endpoints": ALL}]
# A body each endpoint takes.
BODIES: dict[str, dict[str, Any]] = {
    "/v1/chat/completions": {"messages": MSG},
    "/v1/completions": {"prompt": "say"},
    "/v1/embeddings": {"input": ["a", "b"]},
    "/v1/responses": {"input": "hi"},
    "/v1/messages": {"max_tokens": 8, "messages": MSG},
}
NEW = [p for p in BODIES if p != "/v1/chat/completions"]


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def post(stack: Stack, path: str, token: str | None, body: Any, **headers: str) -> httpx.Response:
    sent = {**(auth(token) if token else {}), **headers}
    return httpx.post(f"{stack.url}{path}", headers=sent, json=body, timeout=30)


def call(stack: Stack, path: str, model: str = "m", token: str | None = None) -> httpx.Response:
    return post(stack, path, token or stack.client_token, {"model": model, **BODIES[path]})


def error_of(resp: httpx.Response, status: int, code: str) -> dict[str, Any]:
    """The error of an answer, OpenAI-shaped (or Anthropic-shaped, on /v1/messages)."""
    assert resp.status_code == status, resp.text
    body = resp.json()
    if resp.request.url.path == "/v1/messages":
        assert body["type"] == "error", body
    error: dict[str, Any] = body["error"]
    assert error["code"] == code and error["message"], error
    return error


def create_key(stack: Stack, **spec: Any) -> dict[str, Any]:
    resp = httpx.post(f"{stack.url}/api/v1/keys", headers=auth(stack.admin_token), json=spec)
    assert resp.status_code == 201, resp.text
    key: dict[str, Any] = resp.json()
    return key


def answer_any(task: dict[str, Any], pub: ScriptedPublisher) -> None:
    """Answer as a backend of every endpoint would (tests/support/api_backend): plain,
    or streamed with the usage in the result (as the real publisher posts it)."""
    endpoint, request = task["endpoint"], task["request"]
    if endpoint == "chat":
        echo_answer(task, pub)
        return
    if endpoint == "embeddings":
        pub.result(task["id"], {"status": 200, "body": api_backend.embeddings(request)})
        return
    words = ["one", " two"]
    if task["stream"]:
        events = [data for _, data in api_backend.STREAMS[endpoint]("backend-model", words)]
        pub.chunk(task["id"], 0, events)
        usage = {"input_tokens": 5, "output_tokens": 2}
        pub.result(task["id"], {"status": 200, "body": {"usage": usage}, "chunkCount": 1})
        return
    shape = {
        "completions": lambda: api_backend.completion("backend-model", "one two", "stop"),
        "responses": lambda: api_backend.response("backend-model", "one two"),
        "messages": lambda: api_backend.message("backend-model", "one two"),
    }
    pub.result(task["id"], {"status": 200, "body": shape[endpoint]()})


# --- who may call them --------------------------------------------------------------------


def test_who_may_call_each_endpoint(keyed: Stack) -> None:
    """Clients and admins; not publishers, not without a key, not with a revoked one;
    `x-api-key` (the anthropic SDK's header) counts on /v1/messages alone."""
    client = create_key(keyed, role="client", label="c")
    pub = create_key(keyed, role="publisher", label="p")["secret"]
    with ScriptedPublisher(keyed.url, pub, EVERYTHING, answer=answer_any):
        for path in NEW:
            assert call(keyed, path, token=client["secret"]).status_code == 200, path
            assert call(keyed, path, token=keyed.admin_token).status_code == 200, path
            error_of(call(keyed, path, token=pub), 403, "forbidden")
            error_of(
                post(keyed, path, None, {"model": "m", **BODIES[path]}), 401, "invalid_api_key"
            )
            by_header = post(keyed, path, None, {"model": "m", **BODIES[path]}, **{
                "x-api-key": client["secret"]
            })  # fmt: skip
            if path == "/v1/messages":
                assert by_header.status_code == 200, by_header.text
            else:
                error_of(by_header, 401, "invalid_api_key")
        # the anthropic SDK's own error classes, by status
        refused = post(keyed, "/v1/messages", None, BODIES["/v1/messages"], **{"x-api-key": pub})
        assert error_of(refused, 403, "forbidden")["type"] == "permission_error"
        httpx.delete(
            f"{keyed.url}/api/v1/keys/{client['id']}", headers=auth(keyed.admin_token)
        ).raise_for_status()
        for path in NEW:
            error = error_of(call(keyed, path, token=client["secret"]), 401, "invalid_api_key")
            assert "revoked" in error["message"]
            assert client["secret"] not in json.dumps(error)


def test_bad_bodies_name_the_field(stack: Stack) -> None:
    cases: list[tuple[str, dict[str, Any], str]] = [
        ("/v1/completions", {"model": "m"}, "prompt"),
        ("/v1/completions", {"model": "m", "prompt": 5}, "prompt"),
        ("/v1/completions", {"model": "m", "prompt": "x", "stream": "often"}, "stream"),
        ("/v1/embeddings", {"model": "m"}, "input"),
        ("/v1/embeddings", {"input": "x"}, "model"),
        ("/v1/embeddings", {"model": "", "input": "x"}, "model"),
        ("/v1/responses", {"input": "x"}, "model"),
        ("/v1/responses", {"model": "m", "stream": [1]}, "stream"),
        ("/v1/messages", {"model": "m", "max_tokens": 5}, "messages"),
        ("/v1/messages", {"model": "m", "messages": []}, "messages"),
        ("/v1/messages", {"messages": MSG}, "model"),
    ]
    for path, body, param in cases:
        error = error_of(post(stack, path, stack.client_token, body), 400, "invalid_request")
        assert error["param"] == param, (path, body, error)
        assert error["type"] == "invalid_request_error"
    for path in NEW:
        raw = httpx.post(f"{stack.url}{path}", headers=auth(stack.client_token), content=b"[1, 2]")
        assert raw.status_code == 400, (path, raw.text)
    # the anthropic SDK reads its errors from the Anthropic shape
    claude = anthropic.Anthropic(base_url=stack.url, api_key=stack.client_token, max_retries=0)
    with pytest.raises(anthropic.BadRequestError) as info:
        claude.messages.create(model="m", max_tokens=5, messages=[])
    assert info.value.body["error"]["param"] == "messages"  # type: ignore[index]


# --- endpoints a pool serves ---------------------------------------------------------------


def test_an_endpoint_the_pool_does_not_serve_is_refused_before_the_publisher(
    stack: Stack,
) -> None:
    providers = [
        {"name": "chatty", "type": "echo", "model": "echo"},  # an older publisher: chat only
        {"name": "embedder", "type": "echo", "model": "echo", "endpoints": ["embeddings"]},
    ]
    pub = ScriptedPublisher(stack.url, stack.publish_token, providers)
    pub.register()
    models = httpx.get(f"{stack.url}/v1/models", headers=auth(stack.client_token)).json()
    assert {m["id"]: m["endpoints"] for m in models["data"]} == {
        "chatty": ["chat"],
        "embedder": ["embeddings"],
    }
    for path, model in [
        ("/v1/embeddings", "chatty"),
        ("/v1/messages", "chatty"),
        ("/v1/chat/completions", "embedder"),
        ("/v1/completions", "embedder"),
    ]:
        error = error_of(call(stack, path, model), 404, "endpoint_not_served")
        assert error["param"] == "model"
        assert error["message"] == f"the model {model!r} does not serve {path}"
    assert pub.poll_once(wait=0) == []  # nothing was queued
    # the openai SDK raises it as a NotFoundError with the code
    oai = openai.OpenAI(base_url=f"{stack.url}/v1", api_key=stack.client_token, max_retries=0)
    with pytest.raises(openai.NotFoundError) as info:
        oai.embeddings.create(model="chatty", input="x")
    assert info.value.code == "endpoint_not_served"
    pub.http.close()


def test_a_pool_serves_what_every_live_member_serves(stack: Stack) -> None:
    both = [{"name": "m", "type": "echo", "model": "echo", "endpoints": ["chat", "embeddings"]}]
    older = [{"name": "m", "type": "echo", "model": "echo"}]
    with ScriptedPublisher(stack.url, stack.publish_token, both, answer=answer_any):
        assert call(stack, "/v1/embeddings").status_code == 200
        row = httpx.get(f"{stack.url}/api/v1/llms/m", headers=auth(stack.client_token)).json()
        assert row["endpoints"] == ["chat", "embeddings"]
        # a publisher that says nothing of endpoints joins: either may claim a request
        with ScriptedPublisher(stack.url, stack.publish_token, older, answer=answer_any):
            error_of(call(stack, "/v1/embeddings"), 404, "endpoint_not_served")
            assert call(stack, "/v1/chat/completions").status_code == 200
            card = httpx.get(f"{stack.url}/v1/models/m", headers=auth(stack.client_token))
            assert card.json()["endpoints"] == ["chat"]


# --- aliases ------------------------------------------------------------------------------


def test_aliases_call_their_model_and_obey_ownership(keyed: Stack) -> None:
    key_a = create_key(keyed, role="publisher", label="a")["secret"]
    key_b = create_key(keyed, role="publisher", label="b")["secret"]
    aliased = [{**EVERYTHING[0], "aliases": ["m-alias", "org/M-8B-Instruct"]}]
    a = ScriptedPublisher(keyed.url, key_a, aliased, answer=answer_any)
    b = ScriptedPublisher(keyed.url, key_b, [])
    with a:
        # an alias is a field of its model, not a model of its own
        models = httpx.get(f"{keyed.url}/v1/models", headers=auth(keyed.client_token)).json()
        assert [(m["id"], m["aliases"]) for m in models["data"]] == [
            ("m", ["m-alias", "org/M-8B-Instruct"])
        ]
        card = httpx.get(
            f"{keyed.url}/v1/models/org/M-8B-Instruct", headers=auth(keyed.client_token)
        )
        assert card.json()["id"] == "m"
        for path in BODIES:
            resp = call(keyed, path, model="org/M-8B-Instruct")
            assert resp.status_code == 200, (path, resp.text)
            if path != "/v1/embeddings":  # (the fake's embeddings keep the request's name)
                assert resp.json()["model"] == "m"
        assert {t["llm"] for t in a.seen} == {"m"}  # the publisher hears its own name
        # another key can take neither an alias as a name, nor a name or alias as an alias
        for providers, taken in [
            ([{"name": "m-alias", "type": "echo", "model": "echo"}], "m-alias"),
            ([{"name": "b", "type": "echo", "model": "echo", "aliases": ["m"]}], "m"),
            ([{"name": "b", "type": "echo", "model": "echo", "aliases": ["m-alias"]}], "m-alias"),
        ]:
            error = error_of(
                b.post("_provider-register", {"providers": providers}), 409, "name_owned"
            )
            assert repr(taken) in error["message"] or taken in error["message"]
            assert a.session_id is not None and a.session_id not in error["message"]
        # a registration that drops an alias: it no longer resolves, and stays A's
        a.providers = EVERYTHING
        a.register()
        error_of(call(keyed, "/v1/embeddings", model="m-alias"), 404, "model_not_found")
        b_alias = [{"name": "b", "type": "echo", "model": "echo", "aliases": ["m-alias"]}]
        error_of(b.post("_provider-register", {"providers": b_alias}), 409, "name_owned")
        # until an admin releases it
        released = httpx.delete(f"{keyed.url}/api/v1/llms/m-alias", headers=auth(keyed.admin_token))
        assert released.status_code == 204
        assert b.post("_provider-register", {"providers": b_alias}).status_code == 200
        card = httpx.get(f"{keyed.url}/v1/models/m-alias", headers=auth(keyed.client_token))
        assert card.json()["id"] == "b"
        # an admin's delete of a row releases its name and the aliases it declares
        a.providers = aliased
        error_of(a.post("_provider-register", {"providers": aliased}), 409, "name_owned")
        a.providers = [{**EVERYTHING[0], "aliases": ["org/M-8B-Instruct"]}]
        a.register()
    gone = httpx.delete(f"{keyed.url}/api/v1/llms/m", headers=auth(keyed.admin_token))
    assert gone.status_code == 204
    taken = [{"name": "m", "type": "echo", "model": "echo", "aliases": ["org/M-8B-Instruct"]}]
    assert b.post("_provider-register", {"providers": taken}).status_code == 200
    b_row = httpx.get(f"{keyed.url}/api/v1/llms/org/M-8B-Instruct", headers=auth(keyed.admin_token))
    assert b_row.json()["aliases"] == ["org/M-8B-Instruct"]
    a.http.close()
    b.http.close()


def test_a_client_scope_is_of_the_model_not_the_alias(keyed: Stack) -> None:
    pub = create_key(keyed, role="publisher", label="p")["secret"]
    of_model = create_key(keyed, role="client", label="m", models=["m"])["secret"]
    of_alias = create_key(keyed, role="client", label="a", models=["m-alias"])["secret"]
    aliased = [{**EVERYTHING[0], "aliases": ["m-alias"]}]
    with ScriptedPublisher(keyed.url, pub, aliased, answer=answer_any):
        assert call(keyed, "/v1/embeddings", "m-alias", token=of_model).status_code == 200
        hidden = error_of(
            call(keyed, "/v1/embeddings", "m-alias", of_alias), 404, "model_not_found"
        )
        unknown = error_of(call(keyed, "/v1/embeddings", "nope", of_alias), 404, "model_not_found")
        assert hidden["message"].replace("m-alias", "nope") == unknown["message"]


def test_registrations_with_bad_aliases_name_the_field(stack: Stack) -> None:
    pub = ScriptedPublisher(stack.url, stack.publish_token, [])
    echo = {"name": "m", "type": "echo", "model": "echo"}
    for providers, param, words in [
        ([{**echo, "aliases": ["m"]}], "providers", "may not be a name or another alias"),
        (
            [{**echo, "aliases": ["x"]}, {**echo, "name": "n", "aliases": ["x"]}],
            "providers",
            "may not be a name or another alias",
        ),
        ([{**echo, "aliases": ["bad alias"]}], "providers.0.aliases.0", "pattern"),
        ([{**echo, "aliases": [f"a{i}" for i in range(9)]}], "providers.0.aliases", "at most 8"),
        ([{**echo, "endpoints": ["images"]}], "providers.0.endpoints.0", "'chat'"),
        ([{**echo, "endpoints": ["chat", "chat"]}], "providers.0.endpoints", "once"),
    ]:
        error = error_of(
            pub.post("_provider-register", {"providers": providers}), 400, "invalid_request"
        )
        assert error["param"] == param, error
        assert words in error["message"], error
    many = [
        {**echo, "name": f"m{i}", "aliases": [f"m{i}-{j}" for j in range(8)]} for i in range(10)
    ]
    error = error_of(pub.post("_provider-register", {"providers": many}), 400, "invalid_request")
    assert "at most 100" in error["message"]
    pub.http.close()


# --- what reaches the publisher, what comes back --------------------------------------------


def test_the_publisher_hears_the_endpoint_and_usage_is_counted(keyed: Stack) -> None:
    pub = create_key(keyed, role="publisher", label="p")["secret"]
    key = create_key(keyed, role="client", label="counted")
    with ScriptedPublisher(keyed.url, pub, EVERYTHING, answer=answer_any) as publisher:
        sent = {"model": "m", "input": ["a", "b"], "dimensions": 3, "encoding_format": "float"}
        embedded = post(keyed, "/v1/embeddings", key["secret"], sent)
        assert embedded.status_code == 200, embedded.text
        assert [d["embedding"] for d in embedded.json()["data"]] == [
            api_backend.embeddings(sent)["data"][i]["embedding"] for i in (0, 1)
        ]
        task = publisher.seen[-1]
        assert (task["endpoint"], task["request"], task["stream"]) == ("embeddings", sent, False)
        claude = anthropic.Anthropic(base_url=keyed.url, api_key=key["secret"], max_retries=0)
        reply = claude.messages.create(model="m", max_tokens=8, messages=MSG)  # type: ignore[arg-type]
        assert reply.model == "m" and reply.usage.output_tokens == 2
        with claude.messages.stream(model="m", max_tokens=8, messages=MSG) as stream:  # type: ignore[arg-type]
            assert "".join(stream.text_stream) == "one two"
        assert publisher.seen[-1]["endpoint"] == "messages" and publisher.seen[-1]["stream"]
    usage = httpx.get(f"{keyed.url}/api/v1/usage", headers=auth(key["secret"])).json()
    [today] = usage["days"]
    # embeddings: 6 prompt tokens; messages: 5 in, 2 out, plain and streamed
    assert (today["requests"], today["promptTokens"], today["completionTokens"]) == (3, 16, 4)


def test_named_event_streams_are_framed_as_their_apis_frame_them(stack: Stack) -> None:
    with ScriptedPublisher(stack.url, stack.publish_token, EVERYTHING, answer=answer_any):
        for path, first in [
            ("/v1/messages", "message_start"),
            ("/v1/responses", "response.created"),
        ]:
            body = {"model": "m", **BODIES[path], "stream": True}
            text = post(stack, path, stack.client_token, body).text
            frames = [f for f in text.split("\n\n") if f.strip() and not f.startswith(":")]
            assert frames[0].startswith(f"event: {first}\ndata: "), frames[0]
            assert all(f.startswith("event: ") for f in frames), frames
            assert "[DONE]" not in text and "backend-model" not in text
        body = {"model": "m", "prompt": "x", "stream": True}
        text = post(stack, "/v1/completions", stack.client_token, body).text
        assert text.rstrip().endswith("data: [DONE]") and "event:" not in text


def test_a_stream_that_fails_midway_ends_with_each_apis_error_event(stack: Stack) -> None:
    def fail_late(task: dict[str, Any], pub: ScriptedPublisher) -> None:
        events = [data for _, data in api_backend.STREAMS[task["endpoint"]]("x", ["par"])][:2]
        pub.chunk(task["id"], 0, events)
        error = {"message": "CUDA out of memory", "code": "backend_error"}
        pub.result(task["id"], {"status": 502, "chunkCount": 1, "error": error})

    with ScriptedPublisher(stack.url, stack.publish_token, EVERYTHING, answer=fail_late):
        claude = anthropic.Anthropic(base_url=stack.url, api_key=stack.client_token, max_retries=0)
        with pytest.raises(anthropic.APIStatusError, match="CUDA out of memory"):
            list(claude.messages.create(model="m", max_tokens=8, messages=MSG, stream=True))  # type: ignore[arg-type]
        oai = openai.OpenAI(base_url=f"{stack.url}/v1", api_key=stack.client_token, max_retries=0)
        with pytest.raises(openai.APIError, match="CUDA out of memory"):
            list(oai.responses.create(model="m", input="hi", stream=True))
        with pytest.raises(openai.APIError, match="CUDA out of memory"):
            list(oai.completions.create(model="m", prompt="hi", stream=True))


def test_an_idempotency_key_is_of_one_endpoint(stack: Stack) -> None:
    body = {"model": "m", "prompt": "x", "input": "x"}  # a body both endpoints take
    once = {"Idempotency-Key": "k-1"}
    with ScriptedPublisher(stack.url, stack.publish_token, EVERYTHING, answer=answer_any) as pub:
        first = post(stack, "/v1/embeddings", stack.client_token, body, **once)
        again = post(stack, "/v1/embeddings", stack.client_token, body, **once)
        assert first.status_code == again.status_code == 200
        assert first.json() == again.json() and len(pub.seen) == 1  # it ran once
        other = post(stack, "/v1/completions", stack.client_token, body, **once)
        assert error_of(other, 400, "invalid_request")["param"] == "Idempotency-Key"
        assert len(pub.seen) == 1
