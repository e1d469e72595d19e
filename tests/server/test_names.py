"""Names publisher keys own, on a real relay (uvicorn + moto): look-alikes of another
key's name are refused, and each key owns at most so many."""

from __future__ import annotations

from typing import Any

import httpx

from natrelay_infra.moto_server import MotoProcess
from tests.server.test_keys import auth, create_key, error_of
from tests.support.scripted import ScriptedPublisher
from tests.support.stack import Stack, running_stack


def _register(stack: Stack, token: str, *names: str) -> httpx.Response:
    providers = [{"name": n, "type": "echo", "model": "echo"} for n in names]
    pub = ScriptedPublisher(stack.url, token, providers)
    try:
        return pub.post("_provider-register", {"providers": providers})
    finally:
        pub.http.close()


def test_a_look_alike_of_another_keys_name_is_refused(keyed: Stack) -> None:
    owner = create_key(keyed, role="publisher", label="owner")["secret"]
    other = create_key(keyed, role="publisher", label="other")["secret"]
    assert _register(keyed, owner, "a-echo").status_code == 200
    for look_alike in ("A-echo", "A-ECHO"):
        error = error_of(_register(keyed, other, look_alike), 409, "name_owned")
        assert look_alike in error["message"]
    # a trailing dot is no name (a-echo. is a-echo to a reader)
    refused = _register(keyed, other, "a-echo.")
    assert error_of(refused, 400, "invalid_request")["param"] == "providers.0.name"
    # as an alias too
    providers = [{"name": "mine", "type": "echo", "model": "echo", "aliases": ["A-Echo"]}]
    pub = ScriptedPublisher(keyed.url, other, providers)
    error_of(pub.post("_provider-register", {"providers": providers}), 409, "name_owned")
    pub.http.close()
    # the owner itself may publish its name in any case
    assert _register(keyed, owner, "A-Echo").status_code == 200


def test_a_key_owns_at_most_so_many_names(moto_server: MotoProcess) -> None:
    with running_stack(moto_server.endpoint, key_cache_seconds=0, max_names_per_key=3) as stack:
        pub = create_key(stack, role="publisher", label="hoarder")["secret"]
        assert _register(stack, pub, "n1", "n2", "n3").status_code == 200
        error = error_of(_register(stack, pub, "n4"), 409, "name_limit")
        assert "3 names" in error["message"] and "natrelay llm delete" in error["message"]
        # what it owns already may be registered again, in any case
        assert _register(stack, pub, "n1", "N2", "n3").status_code == 200
        # an admin's release makes room
        admin: dict[str, Any] = auth(stack.admin_token)
        assert httpx.delete(f"{stack.url}/api/v1/llms/n3", headers=admin).status_code == 204
        assert _register(stack, pub, "n4").status_code == 200
        error_of(_register(stack, pub, "n5"), 409, "name_limit")


def test_names_given_twice_in_any_case_are_refused(keyed: Stack) -> None:
    """One registration (or apply) naming `O` and `o`, or a name and an alias differing
    only in case, claims one name twice: 400 naming the field, not a 500 (found by the
    fuzz suite: DynamoDB refuses a transaction that writes one item twice)."""
    pub = create_key(keyed, role="publisher", label="twice")["secret"]
    error = error_of(_register(keyed, pub, "O", "o"), 400, "invalid_request")
    assert error["param"] == "providers" and "'O'" in error["message"]
    providers = [{"name": "M", "type": "echo", "model": "echo", "aliases": ["m"]}]
    p = ScriptedPublisher(keyed.url, pub, providers)
    error = error_of(p.post("_provider-register", {"providers": providers}), 400, "invalid_request")
    assert error["param"] == "providers"
    p.http.close()
    docs = [
        {"name": n, "kind": "public", "baseUrl": "http://127.0.0.1:9/v1", "model": "m"}
        for n in ("Up", "up")
    ]
    applied = httpx.post(
        f"{keyed.url}/api/v1/llms/_apply", headers=auth(keyed.admin_token), json={"documents": docs}
    )
    assert error_of(applied, 400, "invalid_request")["param"] == "documents"
