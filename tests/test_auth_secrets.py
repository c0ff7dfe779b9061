"""Tokens never appear in reprs, strings, error messages or logs; secrets come from settings files or
POCKET_ variables as strings."""

from __future__ import annotations

import logging
import time

import pytest
from pydantic import SecretStr

from runner.auth import Authenticator
from runner.auth.oauth import Client, DeviceAuthorization, Pending, TokenSet
from runner.auth.store import Credential
from runner.errors import AuthRequiredError, OAuthError
from runner.manifest import AuthSpec
from runner.settings import load_settings

ACCESS = "access-token-value-0123456789"
REFRESH = "refresh-token-value-9876543210"
CLIENT_SECRET = "client-secret-value-abcdef"


def test_no_secret_in_the_repr_or_str_of_any_credential_object(make_settings):
    objects = [
        Credential(
            user_id="u",
            provider="p",
            kind="oauth2",
            secrets={"token": SecretStr(ACCESS), "refresh_token": SecretStr(REFRESH)},
        ),
        TokenSet(SecretStr(ACCESS), SecretStr(REFRESH), 60.0, ("a",), {}),
        Client("id", SecretStr(CLIENT_SECRET)),
        Pending(
            state=ACCESS, user_id="u", provider="p", kind="oauth2", scopes=(), redirect_uri="x", code_verifier=REFRESH
        ),
        DeviceAuthorization("p", "u", (), SecretStr(ACCESS), "CODE", "https://x", None, time.time(), 5),
        OAuthError("p", "invalid_grant", "bad"),
        AuthRequiredError("needs consent", provider="p", url="https://x/auth?state=s"),
    ]
    settings = make_settings({"slack": {"client_id": "id", "client_secret": CLIENT_SECRET, "token": ACCESS}})
    objects += [settings, settings.auth["slack"], Authenticator(settings)]
    for thing in objects:
        for text in (repr(thing), str(thing)):
            for secret in (ACCESS, REFRESH, CLIENT_SECRET):
                assert secret not in text, (type(thing).__name__, text)
    objects[-1].close()


def test_no_token_in_logs_during_a_whole_flow_and_refresh(authenticator, person, oidc_server, caplog):
    caplog.set_level(logging.DEBUG)
    spec = AuthSpec(auth_provider="testidp", scopes=["api:read"])
    with pytest.raises(AuthRequiredError) as caught:
        authenticator.environment(spec, "default")
    person.visit(person.authorize(caught.value.url))
    first = authenticator.environment(spec, "default")["TESTIDP_TOKEN"]
    stored = authenticator.store.get("default", "testidp")
    time.sleep(2.1)
    second = authenticator.environment(spec, "default")["TESTIDP_TOKEN"]
    assert first != second
    logged = "\n".join(record.getMessage() for record in caplog.records)
    for secret in (first, second, stored.value("refresh_token"), "test-client-secret-3f9a1c0e7b"):
        assert secret not in logged


def test_client_credentials_from_secrets_file_and_pocket_variables(tmp_path, monkeypatch):
    (tmp_path / ".secrets.toml").write_text('[auth.slack]\nclient_id = "123.456"\nclient_secret = "from-file"\n')
    monkeypatch.setenv("POCKET_AUTH__SLACK__CLIENT_SECRET", "from-env")
    monkeypatch.setenv("POCKET_AUTH__GITHUB__TOKEN", "1234567890")  # a numeric secret stays a string
    monkeypatch.setenv("POCKET_CREDENTIALS__REFRESH_MARGIN_SECONDS", "30")
    settings = load_settings(directory=tmp_path)
    assert settings.auth["slack"].client_id == "123.456"
    assert settings.auth["slack"].client_secret.get_secret_value() == "from-env"
    assert settings.auth["github"].token.get_secret_value() == "1234567890"
    assert settings.credentials.refresh_margin_seconds == 30
    assert "from-env" not in repr(settings)


def test_secrets_example_lists_every_catalog_provider_and_parses():
    import tomllib
    from pathlib import Path

    from runner.auth.providers import catalog

    example = Path(__file__).resolve().parent.parent / ".secrets.toml.example"
    text = example.read_text()
    for name in catalog():
        assert f"[auth.{name}]" in text, name
    uncommented = "\n".join(line.removeprefix("# ") for line in text.splitlines())
    tomllib.loads(uncommented)  # every entry is valid TOML once uncommented
