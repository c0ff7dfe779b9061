"""The pages a person sees, checked in a real headless browser (Debian's chromium)."""

from __future__ import annotations

import pytest

from runner.errors import AuthRequiredError
from runner.manifest import AuthSpec

SPEC = AuthSpec(auth_provider="testidp", scopes=["api:read"])


def authorization_url(auth, spec=SPEC) -> str:
    with pytest.raises(AuthRequiredError) as caught:
        auth.environment(spec, "default")
    return caught.value.url


def sign_in(browser) -> None:
    """The person types a login at the authorization server and presses the buttons."""
    browser.wait_for("document.querySelector('input[name=login]')")
    browser.js(
        "document.querySelector('input[name=login]').value = 'alice';"
        "document.querySelector('input[name=password]').value = 'secret';"
        "document.querySelector('button[type=submit]').click()"
    )
    browser.wait_for("document.querySelector('input[name=prompt][value=consent]')")


def test_consent_in_the_browser_ends_on_the_success_page(authenticator, browser, oidc_server):
    browser.open(authorization_url(authenticator))
    sign_in(browser)
    browser.js("document.querySelector('button[type=submit]').click()")
    title = browser.wait_for("document.body && document.body.className === 'success' && document.title")
    assert title == "testidp is connected - pocket"
    assert "You can close this tab" in browser.js("document.getElementById('message').textContent")
    assert browser.js("location.pathname") == "/auth/testidp/callback"
    token = authenticator.environment(SPEC, "default")["TESTIDP_TOKEN"]
    assert oidc_server.introspect(token)["active"] is True
    assert token not in browser.js("document.documentElement.outerHTML")


def test_cancel_in_the_browser_ends_on_the_failure_page(authenticator, browser):
    browser.open(authorization_url(authenticator))
    sign_in(browser)
    browser.js("document.querySelector('a[href$=\"/abort\"]').click()")
    browser.wait_for("document.body && document.body.className === 'failure'")
    assert browser.js("document.getElementById('title').textContent") == "testidp was not connected"
    assert "You declined access" in browser.js("document.getElementById('message').textContent")
    with pytest.raises(AuthRequiredError):
        authenticator.environment(SPEC, "default")


def test_token_form_in_the_browser(authenticator, browser):
    spec = AuthSpec(auth_provider="notion", auth_handler="notion-token")
    browser.open(authorization_url(authenticator, spec))
    browser.wait_for("document.getElementById('credential-form')")
    assert browser.js("document.getElementById('token').type") == "password"
    assert "notion.so/my-integrations" in browser.js("document.getElementById('help').textContent")
    browser.js("document.getElementById('token').value = 'ntn_typed_in_browser_1234'")
    browser.js("document.getElementById('save').click()")
    browser.wait_for("document.body && document.body.className === 'success'")
    assert browser.js("document.getElementById('title').textContent") == "Notion is connected"
    assert authenticator.environment(spec, "default") == {"NOTION_TOKEN": "ntn_typed_in_browser_1234"}
    # Back, and submit again: the form's state was single use.
    browser.js("history.back()")
    browser.wait_for("document.getElementById('credential-form')")
    browser.js(
        "document.getElementById('token').value = 'ntn_second_try_0000'; document.getElementById('save').click()"
    )
    browser.wait_for("document.body && document.body.className === 'failure'")
    assert authenticator.environment(spec, "default") == {"NOTION_TOKEN": "ntn_typed_in_browser_1234"}


def test_unknown_link_page(authenticator, browser, callback_port):
    authorization_url(authenticator)  # starts the callback server
    browser.open(f"http://127.0.0.1:{callback_port}/auth/testidp/callback?code=x&state=forged")
    browser.wait_for("document.body && document.body.className === 'failure'")
    assert browser.js("document.getElementById('title').textContent") == "Authorization link not recognised"
