"""Auth against a real authorization server as slow as real ones are: its token endpoint answers after 2 s
(real ones hash client secrets), so a callback is being exchanged for a noticeable while."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from runner.auth import Authenticator
from runner.pocket import Pocket
from tests.auth_helpers import SPEC, make_tool, pocket_auth_login, url_from, write_settings
from tests.fixtures_oauth import idp_entry


@pytest.fixture
def slow_server(own_oidc_server):
    return own_oidc_server(TOKEN_DELAY_MS="2000")


def test_the_cli_login_waits_for_a_slow_code_exchange_and_the_browser_gets_its_page(
    tmp_path, callback_port, slow_server, person
):
    files = write_settings(tmp_path, callback_port, slow_server.issuer)
    child = pocket_auth_login(files, "--scope", "api:read")
    try:
        url = child.stdout.readline().strip()
        assert url.startswith(slow_server.issuer), child.stderr.read()
        page = person.visit(person.authorize(url))  # the browser waits the 2 s exchange out
        _, err = child.communicate(timeout=60)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    assert page.status_code == 200 and "testidp is connected" in page.text
    assert child.returncode == 0, err
    assert "testidp is authorized for user 'default'" in err
    status = subprocess.run(
        [sys.executable, "-m", "runner.cli", *files, "auth", "status", "--json"],
        capture_output=True, text=True, timeout=60, env=os.environ, check=True,
    )  # fmt: skip
    [row] = json.loads(status.stdout)
    assert row["kind"] == "oauth2" and "api:read" in row["scopes"] and row["refreshable"] is True


def test_wait_tool_auth_reports_the_grant_of_a_slow_code_exchange(tmp_path, make_settings, slow_server, person):
    settings = make_settings({"testidp": idp_entry(slow_server.issuer)})
    with Pocket([str(make_tool(tmp_path, "reader", "testidp", ["api:read"]))], settings=settings) as pocket:
        url = pocket.initialize_tool_auth()["testidp"]
        worker = threading.Thread(target=lambda: person.visit(person.authorize(url)))
        worker.start()
        assert pocket.wait_tool_auth(timeout=60) is True
        worker.join()
        assert pocket.initialize_tool_auth() == {}  # the grant was stored, nothing more to ask


def test_a_callback_whose_handling_raises_ends_as_a_failure_not_unknown(make_settings, slow_server, person):
    auth = Authenticator(make_settings({"testidp": idp_entry(slow_server.issuer)}))
    try:
        callback = person.authorize(url_from(auth))

        def broken_save(credential):
            raise RuntimeError("the disk is full")

        auth._context.save = broken_save  # a failure after the exchange, where nothing catches it
        results = {}
        worker = threading.Thread(target=lambda: results.setdefault("page", person.visit(callback)))
        worker.start()
        outcome = auth.wait(timeout=60)
        worker.join()
        assert outcome == {"testidp": "failed: pocket could not finish the authorization (an internal error)"}
        page = results["page"]
        assert page.status_code == 500 and "pocket could not finish: RuntimeError" in page.text
    finally:
        auth.close()


def test_one_callback_arriving_twice_at_once_is_exchanged_once(make_settings, slow_server, person):
    """Two deliveries of one callback (a double click, a browser retry) while the first is being exchanged:
    one connects, the other is told the link was used, and the code goes to the token endpoint once."""
    auth = Authenticator(make_settings({"testidp": idp_entry(slow_server.issuer)}))
    try:
        callback = person.authorize(url_from(auth))
        mark = slow_server.mark()
        with ThreadPoolExecutor(2) as pool:
            pages = list(pool.map(lambda _: person.visit(callback), range(2)))
        assert sorted(page.status_code for page in pages) == [200, 400]
        used = next(page for page in pages if page.status_code == 400)
        assert "Authorization link not recognised" in used.text and "already used" in used.text
        assert auth.wait(timeout=10) == {"testidp": "authorized"}
        assert slow_server.events(mark) == ["grant.success authorization_code"]
        assert auth.environment(SPEC)["TESTIDP_TOKEN"]
    finally:
        auth.close()
