"""A URL the relay does not serve gets an OpenAI-style 404 naming the path that was
meant: the mistakes users make with base URLs, through the SDKs that make them."""

from __future__ import annotations

import subprocess
import sys

import anthropic
import httpx
import openai
import pytest

from tests.server.test_web import assert_openai_error, auth
from tests.support.stack import Stack

MSG = [{"role": "user", "content": "hi"}]


@pytest.mark.parametrize(
    ("method", "path", "hint"),
    [
        ("POST", "/chat/completions", "did you mean /v1/chat/completions? OpenAI clients take "),
        ("GET", "/models", "did you mean /v1/models?"),
        ("POST", "/v1/v1/messages", "/v1 is in it twice; did you mean /v1/messages?"),
        ("GET", "/v1/api/v1/keys", "did you mean /api/v1/keys? The relay's own API"),
        ("POST", "/v1/chat/completion", "did you mean /v1/chat/completions?"),
        ("GET", "/", "this is a natrelay relay. OpenAI clients take http://127.0.0.1:"),
        ("GET", "/nothing/here", "GET /openapi.json lists every path"),
    ],
)
def test_a_url_mistake_names_the_path_meant(
    stack: Stack, method: str, path: str, hint: str
) -> None:
    resp = httpx.request(
        method, f"{stack.url}{path}", headers=auth(stack.client_token), json={"model": "m"}
    )
    error = assert_openai_error(resp, 404, "not_found")
    assert error["message"].startswith(f"Invalid URL ({method} {path})"), error["message"]
    assert hint in error["message"], error["message"]
    assert error["type"] == "invalid_request_error"


def test_a_wrong_method_names_the_right_one(stack: Stack) -> None:
    resp = httpx.get(f"{stack.url}/v1/chat/completions", headers=auth(stack.client_token))
    error = assert_openai_error(resp, 405, "method_not_allowed")
    assert error["message"] == "GET is not allowed on /v1/chat/completions: use POST"


def test_the_sdks_with_the_wrong_base_url_say_what_to_fix(stack: Stack) -> None:
    without_v1 = openai.OpenAI(base_url=stack.url, api_key=stack.client_token, max_retries=0)
    with pytest.raises(openai.NotFoundError) as info:
        without_v1.chat.completions.create(model="m", messages=MSG)  # type: ignore[arg-type]
    assert f"OpenAI clients take {stack.url}/v1 as their base URL" in str(info.value)
    with_v1 = anthropic.Anthropic(
        base_url=f"{stack.url}/v1", api_key=stack.client_token, max_retries=0
    )
    with pytest.raises(anthropic.NotFoundError) as found:
        with_v1.messages.create(model="m", max_tokens=8, messages=MSG)  # type: ignore[list-item]
    assert f"the anthropic SDK takes {stack.url}, without /v1" in str(found.value)


def test_the_admin_cli_refuses_the_openai_base_url(stack: Stack) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "natrelay_publisher", "keys", "list"],
        env={"NATRELAY_URL": f"{stack.url}/v1", "NATRELAY_ADMIN_TOKEN": stack.admin_token},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2
    assert done.stderr.strip() == (
        f"natrelay: {stack.url}/v1 ends in /v1, the OpenAI base URL clients use; NATRELAY_URL "
        f"(--relay) is the relay's own URL: drop /v1 ({stack.url})"
    )
