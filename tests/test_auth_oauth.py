"""The OAuth 2.0 code flow against a real, strict authorization server (oidc-provider on 127.0.0.1).

The server requires PKCE S256, exact redirect URIs and single-use codes, rotates refresh tokens on
every use and revokes the whole grant when a used refresh token comes back. Access tokens live 3 s.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from urllib.parse import parse_qs, urlsplit

import pytest

from runner.auth import Authenticator, Revocation
from runner.auth.results import LogoutResult
from runner.auth.store import ACTIVE, EXPIRED
from runner.errors import AuthRequiredError, ExitCode, SettingsError
from runner.manifest import AuthSpec
from tests.auth_helpers import SPEC, authorize, url_from, with_query
from tests.fixtures_oauth import (
    ACCESS_TOKEN_TTL,
    CLIENT_ID,
    CLIENT_SECRET,
    PUBLIC_CLIENT_ID,
    idp_entry,
)


def test_full_flow_with_pkce_exact_redirect_and_granted_scope(authenticator, person, oidc_server, callback_port):
    url = url_from(authenticator)
    query = parse_qs(urlsplit(url).query)
    assert url.startswith(f"{oidc_server.issuer}/auth?")  # discovered from the issuer
    assert query["code_challenge_method"] == ["S256"] and len(query["code_challenge"][0]) == 43
    assert len(query["state"][0]) >= 43
    assert query["redirect_uri"] == [f"http://127.0.0.1:{callback_port}/auth/testidp/callback"]
    assert set(query["scope"][0].split()) == {"openid", "offline_access", "api:read"}
    assert url_from(authenticator) == url  # the same pending request while it waits
    assert CLIENT_SECRET not in url and "code_verifier" not in url

    callback = person.authorize(url)
    page = person.visit(callback)
    assert page.status_code == 200 and "testidp is connected" in page.text
    assert page.headers["cache-control"] == "no-store" and page.headers["referrer-policy"] == "no-referrer"

    token = authenticator.environment(SPEC, "default")["TESTIDP_TOKEN"]
    introspection = oidc_server.introspect(token)
    assert introspection["active"] is True and introspection["client_id"] == CLIENT_ID
    stored = authenticator.store.get("default", "testidp")
    assert "api:read" in stored.scopes  # the response's scope, not the request's
    assert "refresh_token" in stored.secrets
    assert authenticator.wait(timeout=0) == {"testidp": "authorized"}  # reported once
    assert authenticator.wait(timeout=0) == {}


def test_credentials_never_cross_users(authenticator, person):
    authorize(authenticator, person, user="alice")
    with pytest.raises(AuthRequiredError):
        authenticator.environment(SPEC, "bob")


def test_tampered_state_is_rejected_and_the_genuine_callback_still_works(authenticator, person):
    callback = person.authorize(url_from(authenticator))
    state = parse_qs(urlsplit(callback).query)["state"][0]
    forged = with_query(callback, state=state[:-2] + ("AA" if not state.endswith("AA") else "BB"))
    page = person.visit(forged)
    assert page.status_code == 400 and "not recognised" in page.text
    assert authenticator.store.get("default", "testidp") is None
    assert person.visit(with_query(callback, state="")).status_code == 400
    assert person.visit(callback).status_code == 200
    assert authenticator.environment(SPEC, "default")["TESTIDP_TOKEN"]


def test_replayed_callback_is_rejected(authenticator, person):
    callback = person.authorize(url_from(authenticator))
    assert person.visit(callback).status_code == 200
    first = authenticator.environment(SPEC, "default")["TESTIDP_TOKEN"]
    replay = person.visit(callback)
    assert replay.status_code == 400 and "already used" in replay.text
    assert authenticator.environment(SPEC, "default")["TESTIDP_TOKEN"] == first


def test_callback_for_another_provider_path_is_rejected(authenticator, person, callback_port):
    callback = person.authorize(url_from(authenticator))
    other = callback.replace("/auth/testidp/callback", "/auth/github/callback")
    assert person.visit(other).status_code == 400
    assert person.visit(callback).status_code == 200


def test_user_who_denies_consent(authenticator, person):
    url = url_from(authenticator)
    callback = person.authorize(url, deny=True)
    assert parse_qs(urlsplit(callback).query)["error"] == ["access_denied"]
    page = person.visit(callback)
    assert page.status_code == 400 and "You declined access" in page.text
    assert authenticator.wait(timeout=0) == {"testidp": "failed: access_denied (End-User aborted interaction)"}
    with pytest.raises(AuthRequiredError) as caught:
        authenticator.environment(SPEC, "default")
    assert caught.value.url != url  # a fresh request, the denied one is gone


def test_wait_reports_the_outcome_of_each_pending_authorization(authenticator, person):
    url = url_from(authenticator)
    worker = threading.Thread(target=lambda: person.visit(person.authorize(url)))
    worker.start()
    assert authenticator.wait(timeout=20) == {"testidp": "authorized"}
    worker.join()
    denied = url_from(authenticator, AuthSpec(auth_provider="testidp", scopes=["api:write"]), user="bob")
    worker = threading.Thread(target=lambda: person.visit(person.authorize(denied, deny=True)))
    worker.start()
    result = authenticator.wait(timeout=20, user_id="bob")
    worker.join()
    assert result["testidp"].startswith("failed: access_denied")


def test_wrong_code_verifier_is_refused_by_the_server(authenticator, person):
    url = url_from(authenticator)
    state = parse_qs(urlsplit(url).query)["state"][0]
    pending = next(p for p in authenticator.pending() if p.state == state)
    pending.code_verifier = "x" * 64  # what an attacker without the verifier has
    page = person.visit(person.authorize(url))
    assert page.status_code == 400 and "invalid_grant" in page.text
    assert authenticator.store.get("default", "testidp") is None


def test_wrong_client_secret_fails_clearly_without_echoing_it(make_settings, oidc_server, person):
    settings = make_settings({"testidp": idp_entry(oidc_server.issuer, client_secret="not-the-secret-xyz")})
    auth = Authenticator(settings)
    try:
        page = person.visit(person.authorize(url_from(auth)))
        assert page.status_code == 400 and "invalid_client" in page.text
        assert "not-the-secret-xyz" not in page.text
    finally:
        auth.close()


def test_public_client_with_pkce_only(make_settings, oidc_server, person):
    entry = idp_entry(oidc_server.issuer, client_id=PUBLIC_CLIENT_ID, token_request_auth_method="none")
    del entry["client_secret"]
    auth = Authenticator(make_settings({"testidp": entry}))
    try:
        token = authorize(auth, person)
        assert oidc_server.introspect(token)["active"] is True
    finally:
        auth.close()


def test_refresh_ahead_of_expiry_with_rotation(authenticator, person, oidc_server):
    token = authorize(authenticator, person)
    before = authenticator.store.get("default", "testidp")
    mark = oidc_server.mark()
    assert authenticator.environment(SPEC, "default")["TESTIDP_TOKEN"] == token  # still fresh: no refresh
    time.sleep(ACCESS_TOKEN_TTL - 0.9)  # within the 1 s margin of expiry
    fresh = authenticator.environment(SPEC, "default")["TESTIDP_TOKEN"]
    assert fresh != token
    after = authenticator.store.get("default", "testidp")
    assert after.value("refresh_token") != before.value("refresh_token")  # rotated, and stored
    assert oidc_server.events(mark) == ["grant.success refresh_token"]
    assert oidc_server.introspect(fresh)["active"] is True
    assert oidc_server.introspect(before.value("refresh_token"))["active"] is False  # consumed
    assert after.scopes == before.scopes


def test_twenty_concurrent_calls_at_expiry_refresh_exactly_once(authenticator, person, oidc_server):
    authorize(authenticator, person)
    time.sleep(ACCESS_TOKEN_TTL - 0.9)
    mark = oidc_server.mark()
    barrier = threading.Barrier(20)

    def call(_: int) -> str:
        barrier.wait()
        return authenticator.environment(SPEC, "default")["TESTIDP_TOKEN"]

    with ThreadPoolExecutor(20) as pool:
        tokens = set(pool.map(call, range(20)))
    assert len(tokens) == 1
    assert oidc_server.events(mark) == ["grant.success refresh_token"]
    assert oidc_server.introspect(tokens.pop())["active"] is True


_CHILD = """
import hashlib, json, sys, threading
from runner.auth import Authenticator
from runner.manifest import AuthSpec
from runner.settings import Settings
auth = Authenticator(Settings.model_validate(json.loads(sys.argv[1])))
spec = AuthSpec(auth_provider="testidp", scopes=["api:read"])
print("ready", flush=True)
sys.stdin.readline()  # every process starts calling at the same moment
tokens = []
def call():
    tokens.append(auth.environment(spec, "default")["TESTIDP_TOKEN"])
threads = [threading.Thread(target=call) for _ in range(5)]
[t.start() for t in threads]
[t.join() for t in threads]
print(json.dumps(sorted({hashlib.sha256(t.encode()).hexdigest() for t in tokens})))
"""


def test_processes_sharing_the_store_refresh_exactly_once(authenticator, person, oidc_server, auth_settings):
    dumped = auth_settings.model_dump(mode="json")
    dumped["auth"]["testidp"]["client_secret"] = auth_settings.auth["testidp"].client_secret.get_secret_value()
    children = [
        subprocess.Popen(
            [sys.executable, "-c", _CHILD, json.dumps(dumped)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )
        for _ in range(3)
    ]
    for child in children:
        assert child.stdout.readline().strip() == "ready"
    token = authorize(authenticator, person)
    time.sleep(ACCESS_TOKEN_TTL - 0.9)  # within the 1 s margin
    mark = oidc_server.mark()
    for child in children:
        child.stdin.write("go\n")
        child.stdin.flush()
    outputs = [json.loads(child.communicate(timeout=60)[0]) for child in children]
    assert all(child.returncode == 0 for child in children)
    assert len({hash_ for output in outputs for hash_ in output}) == 1  # everyone got the same new token
    assert oidc_server.events(mark) == ["grant.success refresh_token"]
    assert authenticator.environment(SPEC, "default")["TESTIDP_TOKEN"] != token


def test_invalid_grant_on_refresh_means_authorization_required(authenticator, person, oidc_server):
    authorize(authenticator, person)
    stored = authenticator.store.get("default", "testidp")
    # The grant is revoked behind our back (the person removed the app at the provider).
    import httpx

    httpx.post(
        f"{oidc_server.issuer}/token/revocation",
        data={"token": stored.value("refresh_token"), "token_type_hint": "refresh_token"},
        auth=(CLIENT_ID, CLIENT_SECRET),
    ).raise_for_status()
    time.sleep(ACCESS_TOKEN_TTL - 0.9)
    with pytest.raises(AuthRequiredError) as caught:
        authenticator.environment(SPEC, "default")
    assert "invalid_grant" in str(caught.value) and caught.value.url
    assert authenticator.store.get("default", "testidp").status == EXPIRED
    assert stored.value("refresh_token") not in str(caught.value)


def test_a_wrong_client_secret_at_refresh_keeps_the_grant_and_names_the_setting(
    authenticator, person, oidc_server, make_settings
):
    """The operator's mistake, not the user's: the call fails naming the settings, the grant stays usable."""
    authorize(authenticator, person)
    stored = authenticator.store.get("default", "testidp")
    authenticator.store.put(replace(stored, expires_at=time.time() - 1))  # expired: the call must refresh
    wrong = {"client_secret": "not-the-secret-xyz"}
    misconfigured = Authenticator(make_settings({"testidp": idp_entry(oidc_server.issuer, **wrong)}))
    try:
        with pytest.raises(SettingsError) as caught:
            misconfigured.environment(SPEC, "default")
    finally:
        misconfigured.close()
    message = str(caught.value)
    assert caught.value.exit_code is ExitCode.BAD_INPUT and not isinstance(caught.value, AuthRequiredError)
    assert "invalid_client" in message and "check [auth.testidp] client_id and client_secret" in message
    assert "POCKET_AUTH__TESTIDP__CLIENT_ID" in message and "grant is kept" in message
    assert "not-the-secret-xyz" not in message and stored.value("refresh_token") not in message
    kept = authenticator.store.get("default", "testidp")
    assert kept.status == ACTIVE and kept.value("refresh_token") == stored.value("refresh_token")
    # The settings fixed, the kept grant refreshes: no new consent.
    assert authenticator.environment(SPEC, "default")["TESTIDP_TOKEN"] != stored.value("token")


def test_incremental_consent_for_a_missing_scope(authenticator, person, oidc_server):
    authorize(authenticator, person)
    wider = AuthSpec(auth_provider="testidp", scopes=["api:write"])
    with pytest.raises(AuthRequiredError) as caught:
        authenticator.environment(wider, "default")
    assert "lacks the scope api:write" in str(caught.value)
    scope = parse_qs(urlsplit(caught.value.url).query)["scope"][0].split()
    assert {"api:read", "api:write"} <= set(scope)  # what was granted is asked for again with the new scope
    assert person.visit(person.authorize(caught.value.url)).status_code == 200
    token = authenticator.environment(wider, "default")["TESTIDP_TOKEN"]
    assert authenticator.environment(SPEC, "default")["TESTIDP_TOKEN"] == token
    assert {"api:read", "api:write"} <= set(oidc_server.introspect(token)["scope"].split())


def test_consent_asks_for_the_union_of_the_loaded_tools_scopes(authenticator):
    authenticator.require_scopes("testidp", ["api:read"])
    authenticator.require_scopes("testidp", ["api:write"])
    scope = parse_qs(urlsplit(url_from(authenticator)).query)["scope"][0].split()
    assert {"api:read", "api:write", "openid", "offline_access"} == set(scope)


def test_logout_revokes_at_the_provider(authenticator, person, oidc_server):
    token = authorize(authenticator, person)
    refresh = authenticator.store.get("default", "testidp").value("refresh_token")
    mark = oidc_server.mark()
    assert authenticator.logout("testidp", user_id="default") == LogoutResult(
        deleted=True, revocation=Revocation(revoked=("refresh token", "access token"), not_revoked={})
    )
    assert oidc_server.introspect(refresh)["active"] is False
    assert oidc_server.introspect(token)["active"] is False
    assert "grant.revoked" in oidc_server.events(mark)
    assert authenticator.store.get("default", "testidp") is None
    with pytest.raises(AuthRequiredError):
        authenticator.environment(SPEC, "default")
    assert authenticator.logout("testidp", user_id="default") == LogoutResult(
        deleted=False, revocation=Revocation(revoked=(), not_revoked={})
    )


def test_the_callback_server_refuses_a_negative_content_length(authenticator, callback_port):
    """A negative length must not turn into a read to the end of the stream (an unbounded body)."""
    import socket

    authenticator.base_url()  # starts the callback server
    with socket.create_connection(("127.0.0.1", callback_port), timeout=5) as conn:
        conn.sendall(
            f"POST /auth/oidc/form HTTP/1.1\r\nHost: 127.0.0.1:{callback_port}\r\n"
            "Content-Length: -1\r\nContent-Type: application/x-www-form-urlencoded\r\n\r\n".encode()
            + b"x" * 4096
        )  # and the stream stays open: a read to EOF would hang here
        answer = conn.recv(4096).decode()
    assert answer.startswith("HTTP/1.0 413") or answer.startswith("HTTP/1.1 413")


def test_scopes_the_provider_did_not_grant_are_named_on_the_page_and_by_wait(authenticator, person, oidc_server):
    spec = AuthSpec(auth_provider="testidp", scopes=["api:read", "api:admin"])  # the server knows no api:admin
    page = person.visit(person.authorize(url_from(authenticator, spec)))
    assert page.status_code == 200
    assert "testidp is connected, but not for everything asked" in page.text
    assert "testidp did not grant api:admin" in page.text
    assert authenticator.wait(timeout=0) == {"testidp": "partial: declined api:admin"}
    stored = authenticator.store.get("default", "testidp")
    assert "api:read" in stored.scopes and "api:admin" not in stored.scopes  # what was granted is kept
    assert authenticator.environment(SPEC, "default")["TESTIDP_TOKEN"]  # and serves the tools it covers
