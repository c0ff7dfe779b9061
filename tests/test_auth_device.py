"""The device authorization grant (RFC 8628): authorize a headless agent from another device."""

from __future__ import annotations

import time

import pytest

from runner.auth import Authenticator
from runner.errors import OAuthError
from runner.manifest import AuthSpec

SPEC = AuthSpec(auth_provider="testidp", scopes=["api:read"])


def test_device_grant_against_the_real_server(authenticator, person, oidc_server):
    device = authenticator.start_device("testidp", scopes=["api:read"])
    assert device.user_code and device.verification_uri.startswith(oidc_server.issuer)
    assert device.device_code.get_secret_value() not in repr(device)
    waits: list[float] = []

    def sleep(seconds: float) -> None:
        waits.append(seconds)
        if len(waits) == 2:  # the person approves on their phone while the agent polls
            page = person.approve_device(device.verification_uri_complete)
            assert "Sign-in Success" in page or "success" in page.lower()

    credential = authenticator.finish_device(device, sleep=sleep)
    assert waits[0] == 5  # the default interval when the server names none
    assert "api:read" in credential.scopes
    token = authenticator.environment(SPEC, "default")["TESTIDP_TOKEN"]
    assert oidc_server.introspect(token)["active"] is True


def test_device_grant_denied(authenticator, person):
    device = authenticator.start_device("testidp", scopes=["api:read"])
    person.approve_device(device.verification_uri_complete, deny=True)
    with pytest.raises(OAuthError, match="access_denied"):
        authenticator.finish_device(device, sleep=lambda _s: None)
    assert authenticator.store.get("default", "testidp") is None


def test_slow_down_adds_five_seconds(make_settings, stand_in):
    answers = iter(
        [
            {"error": "authorization_pending"},
            {"error": "slow_down"},
            {"error": "authorization_pending"},
            {"access_token": "device-token-123456", "expires_in": 3600, "scope": "read"},
        ]
    )
    stand_in.json(
        "POST /device",
        {"device_code": "dc-1", "user_code": "ABCD-EFGH", "verification_uri": "https://x/device", "interval": 2},
    )

    def token(_request):
        import json

        answer = next(answers)
        return (400 if "error" in answer else 200), {"Content-Type": "application/json"}, json.dumps(answer).encode()

    stand_in.routes["POST /token"] = token
    entry = {
        "authorization_url": f"{stand_in.url}/authorize",
        "token_url": f"{stand_in.url}/token",
        "device_authorization_url": f"{stand_in.url}/device",
        "client_id": "c",
    }
    auth = Authenticator(make_settings({"acme": entry}))
    waits: list[float] = []
    device = auth.start_device("acme", user_id="phone-user")
    auth.finish_device(device, sleep=waits.append)
    assert waits == [2, 2, 7, 7]
    assert auth.environment(AuthSpec(auth_provider="acme"), "phone-user") == {"ACME_TOKEN": "device-token-123456"}
    sent = [r.form() for r in stand_in.requests if r.path == "/token"]
    assert sent[0] == {
        "grant_type": "urn:ietf:params:oauth:grant-type:device_code",
        "device_code": "dc-1",
        "client_id": "c",
    }
    auth.close()


def test_provider_without_device_endpoint_says_so(make_settings, oidc_server):
    auth = Authenticator(make_settings({"slack": {"client_id": "c"}}))
    with pytest.raises(Exception, match="does not offer the device authorization grant"):
        auth.start_device("slack")
    auth.close()


def test_agent_on_a_headless_machine_is_authorized_from_a_phone(make_settings, oidc_server, person, callback_port):
    """With `device_flow`, an invocation's authorization URL is the device page plus a code, and the
    runner polls in the background: no callback to this machine is needed."""
    import socket
    import threading

    from runner.errors import AuthRequiredError
    from tests.fixtures_oauth import idp_entry

    auth = Authenticator(make_settings({"testidp": idp_entry(oidc_server.issuer)}, device_flow=True))
    try:
        with pytest.raises(AuthRequiredError) as caught:
            auth.environment(SPEC, "phone-user")
        url = caught.value.url
        assert url.startswith(f"{oidc_server.issuer}/device?user_code=")
        code = url.split("user_code=")[1]
        assert f"enter the code {code}" in str(caught.value)
        with pytest.raises(ConnectionRefusedError):  # nothing listens on this machine
            socket.create_connection(("127.0.0.1", callback_port), timeout=5).close()
        with pytest.raises(AuthRequiredError) as again:
            auth.environment(SPEC, "phone-user")
        assert again.value.url == url  # the same request while it is pending
        phone = threading.Thread(target=lambda: person.approve_device(url))
        phone.start()
        assert auth.wait(timeout=30, user_id="phone-user") == {"testidp": "authorized"}
        phone.join()
        token = auth.environment(SPEC, "phone-user")["TESTIDP_TOKEN"]
        assert oidc_server.introspect(token)["active"] is True
    finally:
        auth.close()


def test_closing_stops_device_polling(make_settings, oidc_server):
    import threading

    from runner.errors import AuthRequiredError
    from tests.fixtures_oauth import idp_entry

    auth = Authenticator(make_settings({"testidp": idp_entry(oidc_server.issuer)}, device_flow=True))
    with pytest.raises(AuthRequiredError):
        auth.environment(SPEC, "u")
    pollers = [t for t in threading.enumerate() if t.name == "pocket-auth-device"]
    assert pollers
    auth.close()
    for poller in pollers:
        poller.join(timeout=2)
        assert not poller.is_alive()


def device_provider(make_settings, stand_in, device_answer: dict, **credentials) -> Authenticator:
    """ "acme" with its device and token endpoints on the stand-in; the token endpoint says "pending" once."""
    import json

    stand_in.json(
        "POST /device", {"device_code": "dc-1", "user_code": "WXYZ", "verification_uri": "https://x/d"} | device_answer
    )
    answers = iter([{"error": "authorization_pending"}, {"access_token": "acme-device-token", "expires_in": 60}])

    def token(_request):
        answer = next(answers, {"error": "authorization_pending"})
        return (400 if "error" in answer else 200), {"Content-Type": "application/json"}, json.dumps(answer).encode()

    stand_in.routes["POST /token"] = token
    entry = {
        "authorization_url": f"{stand_in.url}/authorize",
        "token_url": f"{stand_in.url}/token",
        "device_authorization_url": f"{stand_in.url}/device",
        "client_id": "c",
    }
    return Authenticator(make_settings({"acme": entry}, **credentials))


@pytest.mark.parametrize(
    ("interval", "expected"),
    [(-1, 5), (0, 5), (0.2, 5), ("abc", 5), (None, 5), ([], 5), ("3", 3), (10**9, 60)],
)
def test_the_server_interval_is_clamped_to_a_sane_pace(make_settings, stand_in, interval, expected):
    auth = device_provider(make_settings, stand_in, {"interval": interval, "expires_in": "soon"})
    device = auth.start_device("acme")
    assert 590 < device.expires_at - time.time() <= 600  # an expiry that is not a number: 10 minutes
    waits: list[float] = []
    auth.finish_device(device, sleep=waits.append)
    assert waits == [expected, expected]
    auth.close()


@pytest.mark.parametrize("interval", [-1, "abc"])
def test_an_agent_asking_with_a_nonsense_interval_gets_the_url_and_no_request_flood(make_settings, stand_in, interval):
    from runner.errors import AuthRequiredError

    auth = device_provider(make_settings, stand_in, {"interval": interval}, device_flow=True)
    try:
        with pytest.raises(AuthRequiredError) as caught:
            auth.environment(AuthSpec(auth_provider="acme"), "u")
        assert "enter the code WXYZ" in str(caught.value)
        time.sleep(1)
        assert [r for r in stand_in.requests if r.path == "/token"] == []  # the first poll comes after 5 s
    finally:
        auth.close()
