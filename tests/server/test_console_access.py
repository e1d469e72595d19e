"""Who gets into the console, on a real relay (uvicorn + moto): every route of the one
route table refuses a browser without a live admin session (no cookie, a key as the
cookie, a revoked key's session, a closed session), every form refuses a missing or
wrong CSRF token (403, nothing changed), and the forms do what the API does."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from natrelay.web import PAGES
from natrelay.wire import Paths
from natrelay_infra.moto_server import MotoProcess
from tests.support.stack import Stack, running_stack

COOKIE = "natrelay_console"


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def stack(moto_server: MotoProcess) -> Iterator[Stack]:
    # plain http on 127.0.0.1: the cookie without Secure, as `natrelay dev` sets it
    with running_stack(moto_server.endpoint, key_cache_seconds=0, cookie_secure=False) as running:
        yield running


def _key(stack: Stack, role: str) -> dict[str, Any]:
    made = httpx.post(
        f"{stack.url}{Paths.KEYS}",
        headers=auth(stack.admin_token),
        json={"role": role, "label": f"{role} key"},
        timeout=10,
    )
    assert made.status_code == 201, made.text
    return dict(made.json())


def _login(stack: Stack, token: str) -> httpx.Client:
    browser = httpx.Client(base_url=stack.url, timeout=10, follow_redirects=False)
    logged = browser.post(Paths.CONSOLE_LOGIN, data={"key": token})
    assert logged.status_code == 303 and logged.headers["location"] == Paths.CONSOLE
    return browser


def _csrf(page: httpx.Response) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', page.text)
    assert found, page.text[:500]
    return found[1]


def _path(template: str) -> str:
    return template.format(task_id="01nosuchtask")


def _refused_everywhere(stack: Stack, cookie: str | None) -> None:
    """Every console route refuses this cookie: a page sends to the login form, a form
    is 403; nothing shows a page's content."""
    headers = {"Cookie": f"{COOKIE}={cookie}"} if cookie else {}
    for page in PAGES:
        got = httpx.request(
            page.method,
            f"{stack.url}{_path(page.path)}",
            headers=headers,
            data={"csrf": "x", "key_id": "nope", "name": "nope", "yaml": "name: x"},
            follow_redirects=False,
            timeout=10,
        )
        if page.method == "GET":
            assert got.status_code == 303, (page.path, got.status_code)
            assert got.headers["location"] == Paths.CONSOLE_LOGIN
        else:
            assert got.status_code == 403, (page.path, got.status_code)
            assert "session has ended" in got.text
        assert "<h2" not in got.text  # no section of any page


def test_every_console_route_is_for_a_live_admin_session_only(stack: Stack) -> None:
    client, publisher, admin = _key(stack, "client"), _key(stack, "publisher"), _key(stack, "admin")
    _refused_everywhere(stack, None)
    for token in (client["secret"], publisher["secret"], admin["secret"], stack.client_token):
        _refused_everywhere(stack, token)  # a key as the cookie is no session
    for token in (client["secret"], publisher["secret"], stack.client_token):
        refused = httpx.post(f"{stack.url}{Paths.CONSOLE_LOGIN}", data={"key": token})
        assert refused.status_code == 403 and "set-cookie" not in refused.headers
        assert "the console is for admin keys" in refused.text

    browser = _login(stack, admin["secret"])
    for page in (p for p in PAGES if p.method == "GET"):
        shown = browser.get(_path(page.path))
        assert shown.status_code == (404 if "{" in page.path else 200), page.path
        assert shown.headers["cache-control"] == "no-store"
        assert "frame-ancestors 'none'" in shown.headers["content-security-policy"]
        assert admin["secret"] not in shown.text
    session = browser.cookies[COOKIE]

    # the key is revoked: its session is refused on every route
    httpx.delete(
        f"{stack.url}{Paths.KEY.format(key_id=admin['id'])}", headers=auth(stack.admin_token)
    ).raise_for_status()
    _refused_everywhere(stack, session)

    # logging out closes the session on the server
    browser = _login(stack, stack.admin_token)
    page = browser.get(Paths.CONSOLE)
    out = browser.post(Paths.CONSOLE_LOGOUT, data={"csrf": _csrf(page)})
    assert out.status_code == 303 and out.headers["location"] == Paths.CONSOLE_LOGIN
    _refused_everywhere(stack, page.request.headers["cookie"].partition("=")[2])

    # the status page's old address sends browsers to the console
    moved = httpx.get(f"{stack.url}{Paths.STATUS}", follow_redirects=False)
    assert moved.status_code == 301 and moved.headers["location"] == Paths.CONSOLE


def test_a_form_without_the_pages_csrf_token_changes_nothing(stack: Stack) -> None:
    victim = _key(stack, "client")
    browser = _login(stack, stack.admin_token)
    page = browser.get(Paths.CONSOLE_KEYS)
    forms = [
        (Paths.CONSOLE_KEY_REVOKE, {"key_id": victim["id"], "sure": "on"}),
        (Paths.CONSOLE_KEY_LIMITS, {"key_id": victim["id"], "rpm": "1"}),
        (Paths.CONSOLE_KEYS, {"role": "admin", "label": "minted"}),
        (Paths.CONSOLE_ROWS, {"yaml": "name: planted\nfallbacks: []\n"}),
        (Paths.CONSOLE_ROW_DELETE, {"name": "planted"}),
        (Paths.CONSOLE_LOGOUT, {}),
    ]
    for path, fields in forms:
        for csrf in (None, "", "not-the-token", _csrf(page)[:-1] + "x"):
            sent = fields if csrf is None else {**fields, "csrf": csrf}
            refused = browser.post(path, data=sent)
            assert refused.status_code == 403, (path, csrf, refused.status_code)
            assert "nothing was changed" in refused.text
    key = httpx.get(
        f"{stack.url}{Paths.KEY.format(key_id=victim['id'])}", headers=auth(stack.admin_token)
    ).json()
    assert key["status"] == "active" and "rpm" not in key
    keys = httpx.get(f"{stack.url}{Paths.KEYS}", headers=auth(stack.admin_token)).json()["data"]
    assert "minted" not in {k["label"] for k in keys}
    rows = httpx.get(f"{stack.url}{Paths.LLMS}", headers=auth(stack.admin_token)).json()["data"]
    assert rows == []
    assert browser.get(Paths.CONSOLE).status_code == 200  # still logged in


def test_the_forms_do_what_the_api_does(stack: Stack) -> None:
    browser = _login(stack, stack.admin_token)
    csrf = _csrf(browser.get(Paths.CONSOLE_KEYS))

    made = browser.post(
        Paths.CONSOLE_KEYS,
        data={"csrf": csrf, "role": "client", "label": "carol", "models": "echo, llama-*",
              "rpm": "30", "concurrency": "", "tokens_per_day": "1000", "priority": "batch"},
    )  # fmt: skip
    assert made.status_code == 201
    secret = re.search(r'id="secret" class="secret" readonly value="([^"]+)"', made.text)
    assert secret, made.text[:2000]
    assert "script-src 'sha256-" in made.headers["content-security-policy"]  # the copy button
    mine = httpx.get(f"{stack.url}{Paths.USAGE}", headers=auth(secret[1]))
    assert mine.status_code == 200  # the secret shown is the key's
    key_id = mine.json()["keyId"]
    assert secret[1] not in browser.get(Paths.CONSOLE_KEYS).text  # shown that once only

    def api_key() -> dict[str, Any]:
        url = f"{stack.url}{Paths.KEY.format(key_id=key_id)}"
        return dict(httpx.get(url, headers=auth(stack.admin_token)).json())

    assert api_key() | {"createdAt": ""} == {
        "id": key_id, "label": "carol", "role": "client", "models": ["echo", "llama-*"],
        "rpm": 30, "tokensPerDay": 1000, "priority": "batch", "createdAt": "",
        "status": "active",
    }  # fmt: skip
    bad = browser.post(
        Paths.CONSOLE_KEYS, data={"csrf": csrf, "role": "client", "label": "x", "rpm": "-3"}
    )
    assert bad.status_code == 400 and "rpm" in bad.text  # the field at fault is named

    changed = browser.post(
        Paths.CONSOLE_KEY_LIMITS,
        data={"csrf": csrf, "key_id": key_id, "rpm": "", "concurrency": "2", "tokens_per_day": ""},
    )
    assert changed.status_code == 200 and f"Limits of key {key_id} saved" in changed.text
    limits = api_key()
    assert limits.get("concurrency") == 2 and "rpm" not in limits and "tokensPerDay" not in limits

    gone = browser.post(Paths.CONSOLE_KEY_REVOKE, data={"csrf": csrf, "key_id": key_id})
    assert gone.status_code == 200 and api_key()["status"] == "revoked"
    assert httpx.get(f"{stack.url}{Paths.USAGE}", headers=auth(secret[1])).status_code == 401
    missing = browser.post(Paths.CONSOLE_KEY_REVOKE, data={"csrf": csrf, "key_id": "nope"})
    assert missing.status_code == 404 and "there is no key" in missing.text

    house = "name: house\nkind: public\nbaseUrl: http://127.0.0.1:9/v1\nmodel: m\n"
    wrong = browser.post(Paths.CONSOLE_ROWS, data={"csrf": csrf, "yaml": "name: [x"})
    assert wrong.status_code == 400 and "not valid YAML" in wrong.text
    wrong = browser.post(Paths.CONSOLE_ROWS, data={"csrf": csrf, "yaml": "name: a\nbogus: 1\n"})
    assert wrong.status_code == 400 and "document 1 (a): bogus" in wrong.text
    assert "bogus: 1" in wrong.text  # the text is kept in the form
    both = house + "---\nname: ghost\nfallbacks: [house]\n"
    wrong = browser.post(Paths.CONSOLE_ROWS, data={"csrf": csrf, "yaml": both})
    assert (
        wrong.status_code == 400
        and "the form: document 2 (ghost): kind: there is no such row" in wrong.text
    )
    row_url = f"{stack.url}{Paths.LLM.format(name='house')}"
    assert httpx.get(row_url, headers=auth(stack.admin_token)).status_code == 404  # all or none
    applied = browser.post(Paths.CONSOLE_ROWS, data={"csrf": csrf, "yaml": house})
    assert applied.status_code == 200 and "house: created" in applied.text
    row = httpx.get(row_url, headers=auth(stack.admin_token)).json()
    assert row["kind"] == "public" and row["model"] == "m"
    deleted = browser.post(Paths.CONSOLE_ROW_DELETE, data={"csrf": csrf, "name": "house"})
    assert deleted.status_code == 200 and "house deleted" in deleted.text
    # the release form names any name (an alias too); a name nobody holds is a 404
    unknown = browser.post(Paths.CONSOLE_ROW_DELETE, data={"csrf": csrf, "name": "nobody-x"})
    assert unknown.status_code == 404 and "nobody-x" in unknown.text
    assert httpx.get(row_url, headers=auth(stack.admin_token)).status_code == 404
