"""The device authorization grant (RFC 8628): authorize a headless agent from another device."""

from __future__ import annotations

import pytest

from runner.auth import Authenticator, OAuthError
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
