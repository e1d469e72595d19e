"""The status page in a real headless browser (Debian's chromium), against a live
`natrelay dev --demo`: a real login through the form, the demo's rows, a refused key."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import httpx
import pytest

from natrelay.wire import Paths
from natrelay_infra.dev import DEV_ADMIN_TOKEN, DEV_CLIENT_TOKEN
from tests.infra.test_dev import _natrelay, natrelay_dev
from tests.support.browser import Browser, chromium


def _need_chromium() -> None:
    if chromium() is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is missing: .ci/run installs it (apt-get install chromium)")
        pytest.skip("chromium is not installed here (apt-get install chromium); CI has it")


def _client_key(url: str) -> str:
    made = subprocess.run(
        [*_natrelay(), "keys", "create", "--role", "client", "--label", "bob", "-q"],
        capture_output=True,
        text=True,
        timeout=60,
        env={"NATRELAY_URL": url, "NATRELAY_ADMIN_TOKEN": DEV_ADMIN_TOKEN},
        check=True,
    )
    return made.stdout.strip()


def _log_in(browser: Browser, url: str, key: str) -> None:
    browser.goto(f"{url}{Paths.STATUS_LOGIN}")
    browser.submit(
        f"document.getElementById('key').value = {key!r};document.getElementById('login').click();"
    )


def test_the_status_page_in_a_browser(tmp_path: Path) -> None:
    _need_chromium()
    with natrelay_dev(tmp_path, "--demo") as dev:
        dev.publisher_pid()
        dev.wait_for(r"^demo ready")
        url = dev.url
        bob = _client_key(url)
        httpx.post(
            f"{url}{Paths.CHAT}",
            headers={"Authorization": f"Bearer {DEV_CLIENT_TOKEN}"},
            json={"model": "echo", "messages": [{"role": "user", "content": "hi"}]},
            timeout=30,
        ).raise_for_status()
        with Browser.start(tmp_path) as browser:
            # not logged in: the page sends the browser to the login form
            browser.goto(f"{url}{Paths.STATUS}")
            assert browser.evaluate("location.pathname") == Paths.STATUS_LOGIN

            # a client key is refused, and no cookie is set
            _log_in(browser, url, bob)
            assert "the status page is for admin keys" in browser.text()
            assert browser.cookies(f"{url}{Paths.STATUS}") == []
            browser.goto(f"{url}{Paths.STATUS}")
            assert browser.evaluate("location.pathname") == Paths.STATUS_LOGIN

            # the admin logs in through the form: the page shows the demo's rows
            _log_in(browser, url, DEV_ADMIN_TOKEN)
            assert browser.evaluate("location.pathname") == Paths.STATUS
            text = browser.text()
            echo = browser.evaluate("document.getElementById('row-echo').innerText")
            sleepy = browser.evaluate("document.getElementById('row-echo-sleepy').innerText")
            assert echo.split("\t")[:3] == ["echo", "virtual", "active"]
            assert sleepy.split("\t")[:3] == ["echo-sleepy", "virtual", "hibernating"]
            assert echo.split("\t")[-2:] == ["1", "0"]  # one request, no error, last hour
            assert "static-client" in text  # per-key usage today
            assert (
                browser.evaluate("document.querySelector('meta[http-equiv=refresh]').content")
                == "10"
            )
            assert browser.evaluate("document.scripts.length") == 0
            [cookie] = browser.cookies(f"{url}{Paths.STATUS}")
            assert cookie["httpOnly"] is True
            assert cookie["sameSite"] == "Strict"
            assert cookie["secure"] is False  # plain http on 127.0.0.1 only
            assert cookie["path"] == Paths.STATUS
            # no token in any URL the browser asked for
            assert DEV_ADMIN_TOKEN not in " ".join(browser.requests_seen())

            # log out: the cookie is gone and the page asks for a key again
            browser.submit("document.querySelector('form.inline button').click()")
            assert browser.evaluate("location.pathname") == Paths.STATUS_LOGIN
            assert browser.cookies(f"{url}{Paths.STATUS}") == []
