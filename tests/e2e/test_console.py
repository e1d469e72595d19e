"""The console in a real headless browser (Debian's chromium), against a live
`natrelay dev --demo`: a real login through the form, each view checked against the
API's own numbers, a key created and revoked through the forms, keyboard focus on the
charts, nothing fetched from elsewhere; a screenshot of each view (desktop and phone
width) is saved under the test's temporary directory (`screens/`)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

import httpx
import pytest

from natrelay.wire import Paths
from natrelay_infra.dev import DEV_ADMIN_TOKEN
from tests.infra.test_dev import _natrelay, natrelay_dev
from tests.support.browser import Browser, chromium

VIEWS = {
    "overview": Paths.CONSOLE,
    "usage": Paths.CONSOLE_USAGE,
    "latency": Paths.CONSOLE_LATENCY,
    "requests": Paths.CONSOLE_REQUESTS,
    "keys": Paths.CONSOLE_KEYS,
    "rows": Paths.CONSOLE_ROWS,
}


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
    browser.goto(f"{url}{Paths.CONSOLE_LOGIN}")
    browser.submit(
        f"document.getElementById('key').value = {key!r};document.getElementById('login').click();"
    )


def _cells(browser: Browser, selector: str) -> list[str]:
    script = f"Array.from(document.querySelectorAll({selector!r})).map(c => c.textContent)"
    return list(browser.evaluate(script))


def _admin(url: str, path: str) -> Any:
    got = httpx.get(
        f"{url}{path}", headers={"Authorization": f"Bearer {DEV_ADMIN_TOKEN}"}, timeout=30
    )
    got.raise_for_status()
    return got.json()


def _shots(browser: Browser, screens: Path, name: str) -> None:
    browser.screenshot(screens / f"{name}.png")
    browser.screenshot(screens / f"{name}-phone.png", width=390, height=844)
    # at phone width nothing is wider than the window but what scrolls in its own box
    wide = browser.evaluate("document.documentElement.scrollWidth <= window.innerWidth + 1")
    assert wide, f"{name}: the page is wider than a phone"
    browser.call("Emulation.clearDeviceMetricsOverride")


def test_the_console_in_a_browser(tmp_path: Path) -> None:
    _need_chromium()
    screens = tmp_path / "screens"
    screens.mkdir()
    with natrelay_dev(tmp_path, "--demo") as dev:
        dev.publisher_pid()
        dev.wait_for(r"^demo ready")
        url = dev.url
        bob = _client_key(url)
        bob_id = httpx.get(
            f"{url}{Paths.USAGE}", headers={"Authorization": f"Bearer {bob}"}, timeout=30
        ).json()["keyId"]
        for i in range(4):
            httpx.post(
                f"{url}{Paths.CHAT}",
                headers={"Authorization": f"Bearer {bob}"},
                json={"model": "echo", "stream": i % 2 == 1,
                      "messages": [{"role": "user", "content": f"hello {i}"}]},
                timeout=30,
            ).raise_for_status()  # fmt: skip
        with Browser.start(tmp_path) as browser:
            browser.goto(f"{url}{Paths.CONSOLE_USAGE}")  # not logged in: to the login form
            assert browser.evaluate("location.pathname") == Paths.CONSOLE_LOGIN
            _log_in(browser, url, bob)  # a client key is refused, and no cookie is set
            assert "the console is for admin keys" in browser.text()
            assert browser.cookies(f"{url}{Paths.CONSOLE}") == []

            _log_in(browser, url, DEV_ADMIN_TOKEN)
            assert browser.evaluate("location.pathname") == Paths.CONSOLE
            [cookie] = browser.cookies(f"{url}{Paths.CONSOLE}")
            assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"
            assert cookie["path"] == Paths.CONSOLE

            # the overview: the demo's rows, and bob's day as the API tells it
            today = _admin(url, Paths.KEY_USAGE.format(key_id=bob_id) + "?days=1")["days"][-1]
            echo = _cells(browser, "#row-echo td")
            assert echo[:3] == ["echo", "virtual", "active"]
            assert _cells(browser, "#row-echo-sleepy td")[2] == "hibernating"
            headers = _cells(browser, "#rows thead th")
            assert echo[headers.index("requests (1\xa0h)")] == "4"
            mine = _cells(browser, f"#key-{bob_id} td")
            key_headers = _cells(browser, "#keys-today thead th")
            assert mine[key_headers.index("requests")] == str(today["requests"]) == "4"
            assert mine[key_headers.index("prompt tokens")] == str(today["promptTokens"])
            assert (
                browser.evaluate("document.querySelector('meta[http-equiv=refresh]').content")
                == "10"
            )
            _shots(browser, screens, "overview")

            # usage: the table under the chart holds the API's numbers for today
            browser.goto(f"{url}{Paths.CONSOLE_USAGE}")
            columns = _cells(browser, "#keys-requests-table thead th")
            last = _cells(browser, "#keys-requests-table tbody tr:last-child td")
            assert last[columns.index(f"bob ({bob_id})") - 1] == "4"
            tokens = _cells(browser, "#keys-tokens-table tbody tr:last-child td")
            assert tokens[columns.index(f"bob ({bob_id})") - 1] == str(
                today["promptTokens"] + today["completionTokens"]
            )
            model = _cells(browser, "#models-requests-table tbody tr:last-child td")
            assert model == ["4"]  # echo, the one model asked
            # every chart column is reachable with the keyboard and names its numbers
            focused = browser.evaluate(
                "(() => { const g = document.querySelector("
                "'#keys-requests svg g.col:last-of-type'); g.focus();"
                " return document.activeElement === g && g.getAttribute('aria-label'); })()"
            )
            assert focused and focused.endswith(f"bob ({bob_id}) 4")
            _shots(browser, screens, "usage")

            # latency: echo's hour, with its legs
            browser.goto(f"{url}{Paths.CONSOLE_LATENCY}")
            assert browser.evaluate("!!document.getElementById('latency-echo')")
            _shots(browser, screens, "latency")

            # requests: bob's, each opening to its timeline
            browser.goto(f"{url}{Paths.CONSOLE_REQUESTS}?key={bob_id}")
            listed = browser.evaluate("document.querySelectorAll('#requests tbody tr').length")
            assert listed == 4
            _shots(browser, screens, "requests")
            browser.goto(browser.evaluate("document.querySelector('#requests a').href"))
            steps = _cells(browser, "ol.timeline li b")
            assert steps[0] == "received" and steps[-1] == "done"
            _shots(browser, screens, "request")

            # keys: create one through the form (its secret shown once), then revoke it
            browser.goto(f"{url}{Paths.CONSOLE_KEYS}")
            browser.submit(
                "document.getElementById('role').value = 'client';"
                "document.getElementById('label').value = 'carol';"
                "document.getElementById('rpm').value = '30';"
                "document.getElementById('create-key').click();"
            )
            secret = browser.evaluate("document.getElementById('secret').value")
            assert secret.startswith("nrk_")
            assert browser.evaluate("document.scripts.length") == 1  # the copy button's
            _shots(browser, screens, "key-created")
            listed_keys = _admin(url, Paths.KEYS)["data"]
            [carol] = [k for k in listed_keys if k["label"] == "carol"]
            assert carol["rpm"] == 30 and carol["status"] == "active"
            assert (
                httpx.get(
                    f"{url}{Paths.USAGE}", headers={"Authorization": f"Bearer {secret}"}
                ).status_code
                == 200
            )
            browser.submit(
                f"document.querySelector('#revoke-{carol['id']} input[name=sure]').checked = true;"
                f"document.querySelector('#revoke-{carol['id']} button').click();"
            )
            assert f"Key {carol['id']} (carol) revoked" in browser.text()
            assert _admin(url, Paths.KEY.format(key_id=carol["id"]))["status"] == "revoked"
            _shots(browser, screens, "keys")

            browser.goto(f"{url}{Paths.CONSOLE_ROWS}")
            assert _cells(browser, "#row-list #row-echo td")[0] == "echo"
            _shots(browser, screens, "rows")

            # nothing came from anywhere but the relay; no key in any URL
            browser.goto(f"{url}{Paths.CONSOLE_USAGE}")
            seen = browser.requests_seen()
            assert seen and all(u.startswith(url) for u in seen)
            assert DEV_ADMIN_TOKEN not in " ".join(seen)

            browser.submit("document.querySelector('form.logout button').click()")
            assert browser.evaluate("location.pathname") == Paths.CONSOLE_LOGIN
            browser.goto(f"{url}{Paths.CONSOLE}")
            assert browser.evaluate("location.pathname") == Paths.CONSOLE_LOGIN
    assert sorted(p.name for p in screens.iterdir()) == sorted(
        f"{name}{suffix}.png"
        for name in ("overview", "usage", "latency", "requests", "request", "key-created",
                     "keys", "rows")
        for suffix in ("", "-phone")
    )  # fmt: skip
