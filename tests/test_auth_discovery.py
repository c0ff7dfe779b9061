"""A provider configured by `issuer` alone, against a real authorization server: both metadata documents are
read, and what was discovered is kept, so a server that is down fails calls without losing the grant."""

from __future__ import annotations

import dataclasses
import time

from runner.auth import Authenticator, Revocation
from runner.auth.results import LogoutResult
from runner.auth.store import ACTIVE
from runner.invocation import Outcome
from runner.pocket import Pocket
from tests.auth_helpers import SPEC, make_tool, url_from
from tests.fixtures_oauth import idp_entry


def test_logout_with_an_issuer_alone_revokes_through_the_rfc8414_document(make_settings, own_oidc_server, person):
    server = own_oidc_server(SPLIT_METADATA="1")  # only /.well-known/oauth-authorization-server names revocation
    auth = Authenticator(make_settings({"testidp": idp_entry(server.issuer)}))
    try:
        assert person.visit(person.authorize(url_from(auth))).status_code == 200
        token = auth.environment(SPEC)["TESTIDP_TOKEN"]
        refresh = auth.store.get("default", "testidp").value("refresh_token")
        assert auth.logout("testidp") == LogoutResult(
            deleted=True, revocation=Revocation(revoked=("refresh token", "access token"), not_revoked={})
        )
        assert server.introspect(refresh)["active"] is False and server.introspect(token)["active"] is False
    finally:
        auth.close()


def test_a_server_down_fails_the_call_and_keeps_the_grant(tmp_path, make_settings, own_oidc_server, person):
    server = own_oidc_server()
    settings = make_settings({"testidp": idp_entry(server.issuer)})
    auth = Authenticator(settings)
    try:
        assert person.visit(person.authorize(url_from(auth))).status_code == 200
        stored = auth.store.get("default", "testidp")
        auth.store.put(dataclasses.replace(stored, expires_at=time.time() - 1))  # due for a refresh
    finally:
        auth.close()
    server.stop()

    tool = make_tool(tmp_path / "tools", "reader", "testidp", ["api:read"])
    with Pocket([str(tool)], settings=settings) as pocket:  # a new process would start the same: nothing in memory
        result = pocket.invoke("reader", {})
        assert result.outcome is Outcome.TOOL_FAILED and result.outcome.exit_code == 1, result.error
        assert "testidp" in (result.error or "") and result.auth_url is None
        assert pocket.initialize_tool_auth() == {}  # left out: no consent would help
        kept = pocket.authenticator.store.get("default", "testidp")
        assert kept.status == ACTIVE and kept.value("refresh_token") == stored.value("refresh_token")

    # Never discovered at all (another data dir) while the server is down: a failed call too, not a settings error.
    fresh = make_settings({"testidp": idp_entry(server.issuer)}, data_dir=tmp_path / "other")
    with Pocket([str(tool)], settings=fresh) as pocket:
        result = pocket.invoke("reader", {})
        assert result.outcome is Outcome.TOOL_FAILED, result.error
        assert f"cannot discover the metadata of {server.issuer}" in (result.error or "")
        assert pocket.initialize_tool_auth() == {}
