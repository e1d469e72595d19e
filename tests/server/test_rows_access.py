"""Who may call what issue 16 added, on a real relay (uvicorn + moto): rows' apply,
get and delete, and the console, with a wrong role, another publisher's key and a
revoked key; no secret in any answer or log line."""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from natrelay.wire import Paths
from natrelay_infra.moto_server import MotoProcess
from tests.support.scripted import ScriptedPublisher
from tests.support.stack import Stack, dynamodb_client, put_secret, running_stack

UPSTREAM_KEY = f"sk-access-{uuid.uuid4().hex}"


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def relay(moto_server: MotoProcess, tmp_path: Path) -> Iterator[tuple[Stack, str, Path]]:
    """A relay whose stored keys are re-read at once, a secret holding an upstream key,
    and the relay's log (INFO)."""
    secret = put_secret(
        moto_server.endpoint,
        f"natrelay/access-{uuid.uuid4().hex[:8]}",
        json.dumps({"apiKey": UPSTREAM_KEY}),
    )
    log = tmp_path / "relay.log"
    with running_stack(
        moto_server.endpoint,
        log_file=log,
        secrets_endpoint=moto_server.endpoint,
        key_cache_seconds=0,
        log_level="INFO",
    ) as stack:
        yield stack, secret, log


def key(stack: Stack, role: str, **spec: Any) -> dict[str, Any]:
    made = httpx.post(
        f"{stack.url}{Paths.KEYS}",
        headers=auth(stack.admin_token),
        json={"role": role, "label": f"{role} key", **spec},
        timeout=10,
    )
    assert made.status_code == 201, made.text
    return dict(made.json())


def revoke(stack: Stack, key_id: str) -> None:
    httpx.delete(
        f"{stack.url}{Paths.KEYS}/{key_id}", headers=auth(stack.admin_token), timeout=10
    ).raise_for_status()


def cloud_doc(secret: str, **extra: Any) -> dict[str, Any]:
    return {
        "name": "cloud",
        "kind": "public",
        "baseUrl": "http://127.0.0.1:9/v1",
        "model": "m",
        "apiKey": {"secretsManager": secret},
        **extra,
    }


def apply(stack: Stack, token: str | None, *docs: dict[str, Any]) -> httpx.Response:
    return httpx.post(
        f"{stack.url}{Paths.LLMS_APPLY}",
        headers=auth(token) if token else {},
        json={"documents": list(docs)},
        timeout=30,
    )


def code(resp: httpx.Response) -> tuple[int, str]:
    return resp.status_code, str(resp.json()["error"]["code"])


def test_only_admin_keys_apply_and_delete_rows(relay: tuple[Stack, str, Path]) -> None:
    stack, secret, log = relay
    client = key(stack, "client")
    publisher = key(stack, "publisher")
    admin = key(stack, "admin")
    doc = cloud_doc(secret)
    assert code(apply(stack, None, doc)) == (401, "invalid_api_key")
    assert code(apply(stack, "nrk_nope_nope", doc)) == (401, "invalid_api_key")
    assert code(apply(stack, client["secret"], doc)) == (403, "forbidden")
    assert code(apply(stack, publisher["secret"], doc)) == (403, "forbidden")
    assert code(apply(stack, stack.publish_token, doc)) == (403, "forbidden")
    listed = httpx.get(f"{stack.url}{Paths.LLMS}", headers=auth(stack.admin_token)).json()
    assert listed["data"] == []  # none of them made the row
    made = apply(stack, admin["secret"], doc)
    assert made.status_code == 200, made.text

    # a revoked admin key can apply nothing more
    revoke(stack, admin["id"])
    revoked = apply(stack, admin["secret"], cloud_doc(secret, tier="paid"))
    assert code(revoked) == (401, "invalid_api_key")
    assert "revoked" in revoked.json()["error"]["message"]

    # reading: clients see the row but not its upstream; publishers do not read rows
    one = Paths.LLM.format(name="cloud")
    seen = httpx.get(f"{stack.url}{one}", headers=auth(client["secret"])).json()
    assert seen["kind"] == "public" and seen.get("tier") is None
    assert not {"apiKey", "baseUrl", "fallbacks", "timeoutSeconds"} & set(seen)
    for token in (publisher["secret"], stack.publish_token):
        assert code(httpx.get(f"{stack.url}{one}", headers=auth(token))) == (403, "forbidden")
        assert code(httpx.get(f"{stack.url}{Paths.LLMS}", headers=auth(token)))[0] == 403

    # deleting: admins only
    for token in (client["secret"], publisher["secret"]):
        assert code(httpx.delete(f"{stack.url}{one}", headers=auth(token))) == (403, "forbidden")
    assert code(httpx.delete(f"{stack.url}{one}", headers=auth(admin["secret"])))[0] == 401
    assert httpx.get(f"{stack.url}{one}", headers=auth(stack.admin_token)).status_code == 200
    assert httpx.delete(f"{stack.url}{one}", headers=auth(stack.admin_token)).status_code == 204

    every = log.read_text()
    assert UPSTREAM_KEY not in every
    for secret_key in (client, publisher, admin):
        assert secret_key["secret"] not in every


def test_publishers_cannot_take_or_change_rows_they_do_not_own(
    relay: tuple[Stack, str, Path],
) -> None:
    stack, secret, _ = relay
    alice = key(stack, "publisher")["secret"]
    bob = key(stack, "publisher")["secret"]
    assert apply(stack, stack.admin_token, cloud_doc(secret)).status_code == 200
    home = [{"name": "home", "type": "echo", "model": "e"}]
    with ScriptedPublisher(stack.url, alice, home):
        # another publisher key cannot take alice's name, nor the public row's
        for name in ("home", "cloud"):
            taken = httpx.post(
                f"{stack.url}{Paths.REGISTER}",
                headers=auth(bob),
                json={"providers": [{"name": name, "type": "echo", "model": "e"}]},
                timeout=10,
            )
            assert code(taken) == (409, "name_owned"), taken.text
        # nor can alice take the public row's name
        hers = httpx.post(
            f"{stack.url}{Paths.REGISTER}",
            headers=auth(alice),
            json={"providers": [{"name": "cloud", "type": "echo", "model": "e"}]},
            timeout=10,
        )
        assert code(hers) == (409, "name_owned")
        assert "public row" in hers.json()["error"]["message"]
        # the admin settings of alice's row are the admin's, not a publisher's
        assert code(apply(stack, alice, {"name": "home", "fallbacks": ["cloud"]}))[0] == 403
        got = httpx.get(
            f"{stack.url}{Paths.LLM.format(name='home')}", headers=auth(stack.admin_token)
        ).json()
        assert got.get("fallbacks") is None
    cloud = httpx.get(
        f"{stack.url}{Paths.LLM.format(name='cloud')}", headers=auth(stack.admin_token)
    ).json()
    assert cloud["kind"] == "public" and cloud["status"] == "active"


def _login(stack: Stack, token: str) -> httpx.Response:
    return httpx.post(
        f"{stack.url}{Paths.CONSOLE_LOGIN}",
        data={"key": token},
        follow_redirects=False,
        timeout=10,
    )


def _page(stack: Stack, cookie: str | None) -> httpx.Response:
    return httpx.get(
        f"{stack.url}{Paths.CONSOLE}",
        headers={"Cookie": f"natrelay_console={cookie}"} if cookie else {},
        follow_redirects=False,
        timeout=10,
    )


def test_the_console_is_for_live_admin_keys_only(relay: tuple[Stack, str, Path]) -> None:
    stack, secret, log = relay
    assert apply(stack, stack.admin_token, cloud_doc(secret)).status_code == 200
    client = key(stack, "client")
    publisher = key(stack, "publisher")
    admin = key(stack, "admin")

    away = _page(stack, None)
    assert away.status_code == 303 and away.headers["location"] == Paths.CONSOLE_LOGIN
    for token, status, needle in [
        ("", 401, "log in with an admin key"),
        ("nrk_nope_nope", 401, ""),
        (client["secret"], 403, "this is a client key"),
        (publisher["secret"], 403, "this is a publisher key"),
        (stack.client_token, 403, "this is a client key"),
    ]:
        refused = _login(stack, token)
        assert refused.status_code == status, (token, refused.text)
        assert needle in refused.text
        assert "set-cookie" not in refused.headers
        if token:
            assert token not in refused.text  # the form is not filled in again
        # a key that is not an admin's, sent as the cookie itself, gets no page either
        assert _page(stack, token or None).status_code == 303

    logged = _login(stack, admin["secret"])
    assert logged.status_code == 303 and logged.headers["location"] == Paths.CONSOLE
    cookie = logged.headers["set-cookie"]
    assert re.search(r"(?i)\bhttponly\b", cookie) and re.search(r"(?i)samesite=strict", cookie)
    assert "Path=/console" in cookie
    value = logged.cookies["natrelay_console"]
    page = _page(stack, value)
    assert page.status_code == 200 and 'id="row-cloud"' in page.text
    assert page.headers["cache-control"] == "no-store"
    assert "frame-ancestors 'none'" in page.headers["content-security-policy"]
    for hidden in (UPSTREAM_KEY, admin["secret"], "127.0.0.1:9", secret):
        assert hidden not in page.text

    # the key is revoked: its cookie shows nothing more
    revoke(stack, admin["id"])
    gone = _page(stack, value)
    assert gone.status_code == 303 and gone.headers["location"] == Paths.CONSOLE_LOGIN
    assert _login(stack, admin["secret"]).status_code == 401

    every = log.read_text()
    assert '"route": "/console"' in every  # the page's requests are in the log...
    for hidden in (UPSTREAM_KEY, admin["secret"], client["secret"], publisher["secret"]):
        assert hidden not in every  # ...without a key


def _csrf(page: httpx.Response) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', page.text)
    return found[1] if found else ""


def _logout(stack: Stack, cookie: str, csrf: str) -> httpx.Response:
    return httpx.post(
        f"{stack.url}{Paths.CONSOLE_LOGOUT}",
        headers={"Cookie": f"natrelay_console={cookie}"},
        data={"csrf": csrf},
        follow_redirects=False,
        timeout=10,
    )


def _page_sessions(stack: Stack) -> list[dict[str, Any]]:
    items = dynamodb_client(stack.moto_endpoint).scan(TableName=stack.tables.keys)["Items"]
    return [i for i in items if not i["pk"]["S"].startswith(("keys", "usage#", "name#"))]


def test_the_console_cookie_is_a_server_side_session_not_the_key(
    relay: tuple[Stack, str, Path],
) -> None:
    stack, _, _ = relay
    admin = key(stack, "admin")
    logged = _login(stack, admin["secret"])
    assert logged.status_code == 303
    # Secure from configuration (on unless configured off), not from the Host header:
    # a proxy that forwards `Host: 127.0.0.1` must not strip it
    assert re.search(r"(?i);\s*secure\b", logged.headers["set-cookie"])
    cookie = logged.cookies["natrelay_console"]
    assert admin["secret"] not in cookie and len(cookie) >= 40

    # the cookie is worth nothing on the API: not a bearer token, no new admin keys
    as_bearer = httpx.get(f"{stack.url}{Paths.KEYS}", headers=auth(cookie), timeout=10)
    assert as_bearer.status_code == 401
    minted = httpx.post(
        f"{stack.url}{Paths.KEYS}",
        headers=auth(cookie),
        json={"role": "admin", "label": "stolen"},
        timeout=10,
    )
    assert minted.status_code == 401
    # stored hashed, with an expiry: the cookie's value is in no item
    [stored] = _page_sessions(stack)
    assert cookie not in json.dumps(stored) and "expiresAt" in stored

    page = _page(stack, cookie)
    assert page.status_code == 200
    # logging out ends the session on the server: the old cookie shows nothing more
    assert _logout(stack, cookie, "not-the-token").status_code == 403  # CSRF-checked
    assert _page(stack, cookie).status_code == 200
    out = _logout(stack, cookie, _csrf(page))
    assert out.status_code == 303 and out.headers["location"] == Paths.CONSOLE_LOGIN
    assert _page(stack, cookie).status_code == 303
    assert _page_sessions(stack) == []

    # revoking the admin key ends its sessions (within the key cache time: 0 here)
    again = _login(stack, admin["secret"]).cookies["natrelay_console"]
    assert _page(stack, again).status_code == 200
    revoke(stack, admin["id"])
    assert _page(stack, again).status_code == 303


def test_a_publishers_failure_text_stays_out_of_info_logs(
    relay: tuple[Stack, str, Path],
) -> None:
    """What a publisher says of a failed wake reaches the waiting client (its cause), but
    the relay's INFO log keeps only that it failed: a publisher's text may quote what it
    should not (a webhook's answer), and logs are read by more people than answers."""
    stack, _, log = relay
    cause = "wake of sleepy failed: the webhook answered 500 (password=hunter2)"

    def fail(task: dict[str, Any], pub: ScriptedPublisher) -> None:
        pub.result(task["id"], {"status": 503, "error": {"message": cause, "code": "wake_failed"}})

    sleepy = [
        {
            "name": "sleepy",
            "type": "echo",
            "model": "e",
            "initialStatus": "hibernating",
            "wakeMaxWaitSeconds": 30,
        }
    ]
    with ScriptedPublisher(stack.url, stack.publish_token, sleepy, answer=fail):
        resp = httpx.post(
            f"{stack.url}{Paths.CHAT}",
            headers=auth(stack.client_token),
            json={"model": "sleepy", "messages": [{"role": "user", "content": "hi"}]},
            timeout=30,
        )
    assert resp.status_code == 503 and resp.json()["error"]["code"] == "wake_failed"
    text = log.read_text()
    assert '"route": "/v1/chat/completions"' in text
    assert "wake" in text and "hunter2" not in text
