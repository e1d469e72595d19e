"""What error text keeps of a URL before it leaves the machine."""

from __future__ import annotations

from natrelay_publisher.redact import describe, origin, public_url, redact


def test_urls_lose_userinfo_query_and_fragment() -> None:
    assert public_url("https://u:p@host:8443/a/b?key=s#frag") == "https://host:8443/a/b"
    assert origin("https://u:p@host:8443/hook/SECRET?x=1") == "https://host:8443"
    text = "GET http://a:b@x/y?k=1 then ws://z/q?t=2, not ftp-ish text; none"
    assert redact(text) == "GET http://x/y then ws://z/q not ftp-ish text; none"
    assert redact("no URL here: a@b c?d") == "no URL here: a@b c?d"
    assert describe(ValueError("bad http://h/p?token=1")) == "ValueError: bad http://h/p"
    assert describe(TimeoutError()) == "TimeoutError"
