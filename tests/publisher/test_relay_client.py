"""The publisher's relay client against a real relay (uvicorn + moto): what it puts in
URLs, which reach access logs on the way."""

from __future__ import annotations

import asyncio

import httpx

from natrelay.wire import SESSION_HEADER
from natrelay_infra.moto_server import MotoProcess
from natrelay_publisher.relay import RelayClient
from tests.support.scripted import ScriptedPublisher
from tests.support.stack import running_stack


class _Recording(httpx.AsyncHTTPTransport):
    def __init__(self) -> None:
        super().__init__()
        self.sent: list[httpx.Request] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.sent.append(request)
        return await super().handle_async_request(request)


def test_the_request_fetch_names_its_session_in_a_header_not_the_url(
    moto_server: MotoProcess,
) -> None:
    with running_stack(moto_server.endpoint) as stack:
        pub = ScriptedPublisher(
            stack.url, stack.publish_token, [{"name": "big", "type": "echo", "model": "e"}]
        )
        sid = pub.register()
        queued = httpx.post(
            f"{stack.url}/api/v1/llms/big/infer",
            headers={"Authorization": f"Bearer {stack.client_token}", "Prefer": "respond-async"},
            json={"messages": [{"role": "user", "content": "fetch me"}]},
            timeout=30,
        )
        assert queued.status_code == 202, queued.text
        [task] = pub.poll_once(wait=5)
        transport = _Recording()

        async def fetch() -> dict[str, object]:
            client = RelayClient(stack.url, stack.publish_token, transport=transport)
            try:
                return await client.task_request(task["id"], sid)
            finally:
                await client.aclose()

        body = asyncio.run(fetch())
        pub.http.close()
    assert body["messages"] == [{"role": "user", "content": "fetch me"}]
    [sent] = transport.sent
    assert sid not in str(sent.url) and not sent.url.query
    assert sent.headers[SESSION_HEADER] == sid
