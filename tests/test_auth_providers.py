"""The provider catalog, providers defined in settings, discovery, and the quirks of Slack, GitHub,
Google, Notion and Linear, tested against a local stand-in of their token endpoints."""

from __future__ import annotations

import base64
import html
import json
import time
from dataclasses import replace
from urllib.parse import parse_qs, quote, quote_plus, urlencode, urlsplit

import pytest

from runner.auth import Authenticator, OAuth2Handler, Revocation
from runner.auth.providers import catalog
from runner.auth.results import LogoutResult
from runner.errors import AuthRequiredError, AuthUnavailableError, PocketError, SettingsError
from runner.manifest import AuthSpec, load_manifest
from tests.helpers import require_corpus

# What hyperpocket 0.5.7 hands each provider's tools (hyperpocket/auth/*/context.py).
HYPERPOCKET_VARIABLES = {
    ("serpapi", None): {"SERPAPI_TOKEN"},
    ("github", None): {"GITHUB_TOKEN"},
    ("google", None): {"GOOGLE_TOKEN"},
    ("weaviate", None): {"WEAVIATE_TOKEN"},
    ("happyrobot", None): {"HAPPYROBOT_TOKEN"},
    ("x", None): {"X_AUTH_TOKEN"},
    ("gumloop", None): {"GUMLOOP_TOKEN"},
    ("cloudflare", None): {"CLOUDFLARE_TOKEN"},
    ("linkedin", "linkedin-basicauth"): {"LINKEDIN_BASIC_AUTH"},
    ("kraken", None): {"KRAKEN_API_KEY", "KRAKEN_API_SECRET"},
    ("slack", None): {"SLACK_BOT_TOKEN"},
    ("hubspot", None): {"HUBSPOT_TOKEN"},
    ("activeloop", "activeloop-token"): {"ACTIVELOOP_TOKEN"},
    ("agentql", "agentql-token"): {"AGENTQL_TOKEN"},
    ("valyu", None): {"VALYU_API_KEY"},
    ("notion", "notion-token"): {"NOTION_TOKEN"},
    ("linear", None): {"LINEAR_TOKEN"},
    ("calendly", "calendly-oauth2"): {"CALENDLY_TOKEN"},
    ("zinc", "zinc-token"): {"ZINC_TOKEN"},
}


def corpus_specs() -> list[AuthSpec]:
    specs = []
    for path in sorted(require_corpus().rglob("pocket.json")):
        manifest = load_manifest(path.parent)
        if manifest.auth is not None:
            specs.append(manifest.auth)
    return specs


def static_settings() -> dict[str, str]:
    return {
        "token": "tok-123456",
        "username": "ada",
        "password": "pw-123456",
        "api_key": "k-1234",
        "api_secret": "s-5678",
    }


def test_every_hyperpocket_provider_and_handler_gets_hyperpocket_variables(make_settings):
    auth = Authenticator(make_settings({name: static_settings() for name in catalog()}))
    for (provider, handler), variables in HYPERPOCKET_VARIABLES.items():
        env = auth.environment(AuthSpec(auth_provider=provider, auth_handler=handler), "default")
        assert set(env) >= variables, (provider, handler)  # static credentials from settings, for every kind
    auth.close()


def test_the_corpus_names_exactly_these_providers_and_handlers(make_settings):
    specs = corpus_specs()
    assert len(specs) == 76  # 82 manifests, 6 without auth
    assert {(spec.provider, spec.handler) for spec in specs} == set(HYPERPOCKET_VARIABLES)
    auth = Authenticator(make_settings({name: static_settings() for name in catalog()}))
    for spec in specs:  # with the manifests' own scopes
        assert set(auth.environment(spec, "default")) >= HYPERPOCKET_VARIABLES[(spec.provider, spec.handler)]
    auth.close()


def test_catalog_entries_are_complete():
    for name, provider in catalog().items():
        assert provider.display_name, name
        if "oauth2" in provider.handlers:
            assert provider.authorization_url.startswith("https://") and provider.token_url.startswith("https://")
        for kind in provider.handlers:
            assert provider.env_templates(kind), (name, kind)
    assert catalog()["linkedin"].kind_of("linkedin-basicauth") == "basic"
    assert catalog()["notion"].kind_of("notion-token") == "token"
    assert catalog()["calendly"].kind_of("calendly-oauth2") == "oauth2"


def test_basic_and_keypair_variables(make_settings):
    auth = Authenticator(make_settings({"linkedin": static_settings(), "kraken": static_settings()}))
    linkedin = auth.environment(AuthSpec(auth_provider="linkedin", auth_handler="linkedin-basicauth"), "u")
    assert linkedin.pop("LINKEDIN_BASIC_AUTH") == base64.b64encode(b"ada:pw-123456").decode()
    assert linkedin == {"LINKEDIN_USERNAME": "ada", "LINKEDIN_PASSWORD": "pw-123456"}
    assert auth.environment(AuthSpec(auth_provider="kraken"), "u") == {
        "KRAKEN_API_KEY": "k-1234",
        "KRAKEN_API_SECRET": "s-5678",
    }
    auth.close()


def test_linkedin_basic_auth_is_what_hyperpocket_tools_decode(make_settings):
    """As hyperpocket's linkedin tools read it: `base64.b64decode(LINKEDIN_BASIC_AUTH).decode().split(":")`."""
    auth = Authenticator(make_settings())
    spec = AuthSpec(auth_provider="linkedin", auth_handler="linkedin-basicauth")
    auth.login_with("linkedin", {"username": "ada@example.com", "password": "p/w+é 1="}, user_id="u")
    environment = auth.environment(spec, "u")
    username, password = base64.b64decode(environment["LINKEDIN_BASIC_AUTH"]).decode().split(":")
    assert (username, password) == ("ada@example.com", "p/w+é 1=")
    assert environment["LINKEDIN_BASIC_AUTH"] in auth.secret_values(spec, environment)  # masked in results
    auth.close()


def test_a_template_in_settings_can_ask_for_basic_b64(make_settings):
    entry = {
        "handlers": ["basic"],
        "env": {"CORP_AUTHORIZATION": "Basic {basic_b64}"},
        "username": "u",
        "password": "p",
    }
    auth = Authenticator(make_settings({"corp": entry}))
    assert auth.environment(AuthSpec(auth_provider="corp"), "x") == {"CORP_AUTHORIZATION": "Basic dTpw"}
    auth.close()


def test_unknown_handler_and_unknown_provider_are_clear(make_settings):
    auth = Authenticator(make_settings())
    with pytest.raises(SettingsError, match="no auth handler 'serpapi-oauth2'"):
        auth.environment(AuthSpec(auth_provider="serpapi", auth_handler="serpapi-oauth2"), "u")
    with pytest.raises(SettingsError, match=r"unknown auth provider 'nope'.*\[auth.nope\]"):
        auth.environment(AuthSpec(auth_provider="nope"), "u")
    auth.close()


# -- providers defined in settings ---------------------------------------------------------------


def test_provider_defined_by_explicit_urls_in_settings(make_settings, stand_in):
    auth = Authenticator(
        make_settings(
            {
                "acme": {
                    "authorization_url": f"{stand_in.url}/authorize",
                    "token_url": f"{stand_in.url}/token",
                    "client_id": "acme-client",
                    "client_secret": "acme-secret",
                }
            }
        )
    )
    with pytest.raises(AuthRequiredError) as caught:
        auth.environment(AuthSpec(auth_provider="acme", scopes=["read"]), "u")
    url = caught.value.url
    assert url.startswith(f"{stand_in.url}/authorize?")
    stand_in.json("POST /token", {"access_token": "acme-token-xyz", "token_type": "Bearer"})
    complete(auth, url)
    assert auth.environment(AuthSpec(auth_provider="acme", scopes=["read"]), "u") == {"ACME_TOKEN": "acme-token-xyz"}
    auth.close()


def test_provider_with_only_a_token_in_settings(make_settings):
    auth = Authenticator(make_settings({"my-api": {"token": 12345678}}))  # numeric secrets arrive as strings
    assert auth.environment(AuthSpec(auth_provider="my-api"), "u") == {"MY_API_TOKEN": "12345678"}
    auth.close()


def test_discovery_refuses_metadata_naming_another_issuer(make_settings, stand_in):
    stand_in.json(
        "GET /.well-known/openid-configuration",
        {"issuer": "https://evil.example", "authorization_endpoint": f"{stand_in.url}/a", "token_endpoint": "x"},
    )
    auth = Authenticator(make_settings({"corp": {"issuer": stand_in.url, "client_id": "c"}}))
    with pytest.raises(SettingsError, match="refusing it"):
        auth.environment(AuthSpec(auth_provider="corp"), "u")
    auth.close()


def test_discovery_of_metadata_that_is_no_object_is_a_settings_error(make_settings, stand_in):
    stand_in.json("GET /.well-known/openid-configuration", ["not", "an", "object"])
    auth = Authenticator(make_settings({"corp": {"issuer": stand_in.url, "client_id": "c"}}))
    with pytest.raises(SettingsError, match="cannot discover the metadata"):  # not an AttributeError
        auth.environment(AuthSpec(auth_provider="corp"), "u")
    auth.close()


def test_discovery_falls_back_to_rfc8414_with_a_path(make_settings, stand_in):
    issuer = f"{stand_in.url}/tenant1"
    stand_in.json(
        "GET /.well-known/oauth-authorization-server/tenant1",
        {
            "issuer": issuer,
            "authorization_endpoint": f"{issuer}/authorize",
            "token_endpoint": f"{issuer}/token",
            "token_endpoint_auth_methods_supported": ["client_secret_basic"],
        },
    )
    auth = Authenticator(make_settings({"corp": {"issuer": issuer, "client_id": "c", "client_secret": "s"}}))
    with pytest.raises(AuthRequiredError) as caught:
        auth.environment(AuthSpec(auth_provider="corp"), "u")
    assert caught.value.url.startswith(f"{issuer}/authorize?")
    assert auth.provider("corp").token_request_auth_method == "client_secret_basic"
    auth.close()


class MarkingHandler(OAuth2Handler):
    """A custom handler registered from settings: adds a parameter, as a provider-specific class would."""

    def authorization_url(self, pending, code_challenge):
        return super().authorization_url(pending, code_challenge) + "&custom=yes"


def test_custom_handler_class_from_settings(make_settings, stand_in):
    entry = {
        "authorization_url": f"{stand_in.url}/authorize",
        "token_url": f"{stand_in.url}/token",
        "client_id": "c",
        "handler_class": "tests.test_auth_providers:MarkingHandler",
    }
    auth = Authenticator(make_settings({"custom": entry}))
    with pytest.raises(AuthRequiredError) as caught:
        auth.environment(AuthSpec(auth_provider="custom"), "u")
    assert caught.value.url.endswith("&custom=yes")
    auth.close()


# -- quirks, against a stand-in of each provider's token endpoint --------------------------------


def quirky(make_settings, stand_in, provider: str, credentials: dict | None = None, **extra) -> Authenticator:
    entry = {
        "authorization_url": f"{stand_in.url}/authorize",
        "token_url": f"{stand_in.url}/token",
        "client_id": f"{provider}-client",
        "client_secret": f"{provider}-secret",
        **extra,
    }
    return Authenticator(make_settings({provider: entry}, **(credentials or {})))


def complete(auth: Authenticator, url: str, **params: str):
    """Play the provider's redirect back to our callback, as the browser would."""
    import httpx

    query = parse_qs(urlsplit(url).query)
    callback = query["redirect_uri"][0] + "?" + urlencode({"code": "the-code", "state": query["state"][0], **params})
    return httpx.get(callback)


def start(auth: Authenticator, spec: AuthSpec) -> str:
    with pytest.raises(AuthRequiredError) as caught:
        auth.environment(spec, "u")
    return caught.value.url


def expire(auth: Authenticator, provider: str) -> None:
    stored = auth.store.get("u", provider)
    auth.store.put(replace(stored, expires_at=time.time() - 1, obtained_at=time.time() - 100))


def test_slack_user_scopes_authed_user_token_and_rotation(make_settings, stand_in):
    auth = quirky(make_settings, stand_in, "slack")
    spec = AuthSpec(auth_provider="slack", scopes=["channels:history", "chat:write"])
    url = start(auth, spec)
    query = parse_qs(urlsplit(url).query)
    assert query["user_scope"] == ["channels:history,chat:write"] and "scope" not in query
    stand_in.json(
        "POST /token",
        {
            "ok": True,
            "access_token": "xoxb-bot-token-not-wanted",
            "scope": "commands",
            "team": {"id": "T1", "name": "Acme"},
            "authed_user": {
                "id": "U1",
                "access_token": "xoxp-user-token-1111",
                "scope": "channels:history,chat:write",
                "refresh_token": "xoxe-refresh-1",
                "expires_in": 43200,
            },
        },
    )
    assert complete(auth, url).status_code == 200
    assert auth.environment(spec, "u") == {"SLACK_BOT_TOKEN": "xoxp-user-token-1111"}
    stored = auth.store.get("u", "slack")
    assert stored.scopes == ("channels:history", "chat:write") and stored.extra["team.name"] == "Acme"
    sent = stand_in.requests[-1].form()
    assert sent["code"] == "the-code" and sent["client_id"] == "slack-client" and "code_verifier" in sent
    # A refresh answers with the user token at the top level.
    stand_in.json(
        "POST /token",
        {"ok": True, "access_token": "xoxp-user-token-2222", "refresh_token": "xoxe-refresh-2", "expires_in": 43200},
    )
    expire(auth, "slack")
    assert auth.environment(spec, "u") == {"SLACK_BOT_TOKEN": "xoxp-user-token-2222"}
    assert stand_in.requests[-1].form()["refresh_token"] == "xoxe-refresh-1"
    assert auth.store.get("u", "slack").value("refresh_token") == "xoxe-refresh-2"
    auth.close()


def test_slack_ok_false_with_http_200_is_an_error(make_settings, stand_in):
    auth = quirky(make_settings, stand_in, "slack")
    spec = AuthSpec(auth_provider="slack", scopes=["channels:history"])
    url = start(auth, spec)
    stand_in.json("POST /token", {"ok": False, "error": "invalid_code"})
    page = complete(auth, url)
    assert page.status_code == 400 and "invalid_code" in page.text
    assert auth.store.get("u", "slack") is None
    auth.close()


def test_github_form_encoded_answer_and_errors_with_http_200(make_settings, stand_in):
    auth = quirky(make_settings, stand_in, "github")
    spec = AuthSpec(auth_provider="github", scopes=["repo"])
    url = start(auth, spec)
    body = b"error=bad_verification_code&error_description=The+code+passed+is+incorrect+or+expired."
    stand_in.routes["POST /token"] = lambda _r: (200, {"Content-Type": "application/x-www-form-urlencoded"}, body)
    page = complete(auth, url)
    assert page.status_code == 400 and "bad_verification_code" in page.text
    assert auth.store.get("u", "github") is None
    url = start(auth, spec)
    body = b"access_token=gho_abcdef123456&scope=repo%2Cuser&token_type=bearer"
    stand_in.routes["POST /token"] = lambda _r: (200, {"Content-Type": "application/x-www-form-urlencoded"}, body)
    assert complete(auth, url).status_code == 200
    assert stand_in.requests[-1].headers["accept"] == "application/json"
    assert auth.environment(spec, "u") == {"GITHUB_TOKEN": "gho_abcdef123456"}
    stored = auth.store.get("u", "github")
    assert stored.scopes == ("repo", "user") and stored.expires_at is None  # OAuth App: no expiry, no refresh
    assert "refresh_token" not in stored.secrets
    auth.close()


def test_google_offline_access_and_refresh_keeps_the_refresh_token(make_settings, stand_in):
    auth = quirky(make_settings, stand_in, "google", issuer=None)
    spec = AuthSpec(auth_provider="google", scopes=["https://www.googleapis.com/auth/calendar"])
    url = start(auth, spec)
    query = parse_qs(urlsplit(url).query)
    assert query["access_type"] == ["offline"] and query["prompt"] == ["consent"]
    stand_in.json(
        "POST /token",
        {
            "access_token": "ya29.first",
            "refresh_token": "1//refresh",
            "expires_in": 3599,
            "scope": "https://www.googleapis.com/auth/calendar",
        },
    )
    assert complete(auth, url).status_code == 200
    stand_in.json("POST /token", {"access_token": "ya29.second", "expires_in": 3599, "token_type": "Bearer"})
    expire(auth, "google")
    assert auth.environment(spec, "u") == {"GOOGLE_TOKEN": "ya29.second"}
    stored = auth.store.get("u", "google")
    assert stored.value("refresh_token") == "1//refresh"  # kept: Google sends no new one
    assert stored.scopes == ("https://www.googleapis.com/auth/calendar",)
    auth.close()


def test_notion_basic_client_auth_json_body_and_workspace_fields(make_settings, stand_in):
    auth = quirky(make_settings, stand_in, "notion")
    spec = AuthSpec(auth_provider="notion")
    url = start(auth, spec)
    assert parse_qs(urlsplit(url).query)["owner"] == ["user"]
    stand_in.json(
        "POST /token",
        {
            "access_token": "ntn_secret_value_1",
            "token_type": "bearer",
            "bot_id": "b-1",
            "workspace_id": "w-1",
            "workspace_name": "Ada's workspace",
            "owner": {"type": "user", "user": {"id": "u-1"}},
        },
    )
    assert complete(auth, url).status_code == 200
    request = stand_in.requests[-1]
    assert request.headers["authorization"] == "Basic " + base64.b64encode(b"notion-client:notion-secret").decode()
    assert request.headers["content-type"] == "application/json"
    body = request.json()
    assert body["grant_type"] == "authorization_code" and "client_secret" not in body
    assert auth.environment(spec, "u") == {"NOTION_TOKEN": "ntn_secret_value_1"}
    assert auth.store.get("u", "notion").extra == {
        "workspace_id": "w-1",
        "workspace_name": "Ada's workspace",
        "bot_id": "b-1",
        "owner.type": "user",
    }
    auth.close()


def test_linear_comma_scopes_and_refresh_tokens(make_settings, stand_in):
    auth = quirky(make_settings, stand_in, "linear", authorization_params={"actor": "app"})
    spec = AuthSpec(auth_provider="linear", scopes=["issues:create"])
    url = start(auth, spec)
    query = parse_qs(urlsplit(url).query)
    assert query["scope"] == ["read,issues:create"] and query["actor"] == ["app"]
    stand_in.json(
        "POST /token",
        {"access_token": "lin_oauth_1", "refresh_token": "lin_r_1", "expires_in": 86399, "scope": "read,issues:create"},
    )
    assert complete(auth, url).status_code == 200
    assert auth.store.get("u", "linear").scopes == ("read", "issues:create")
    stand_in.json("POST /token", {"error": "invalid_grant", "error_description": "refresh token reused"}, status=400)
    expire(auth, "linear")
    with pytest.raises(AuthRequiredError, match="invalid_grant"):
        auth.environment(spec, "u")
    auth.close()


def test_error_callback_is_surfaced_and_nothing_is_exchanged(make_settings, stand_in):
    auth = quirky(make_settings, stand_in, "linear")
    url = start(auth, AuthSpec(auth_provider="linear"))
    page = complete(auth, url, error="invalid_scope", error_description="<script>alert(1)</script>")
    assert page.status_code == 400 and "invalid_scope" in page.text
    assert "<script>" not in page.text  # escaped
    assert not [r for r in stand_in.requests if r.path == "/token"]
    assert auth.wait(timeout=0) == {"linear": "failed: invalid_scope (<script>alert(1)</script>)"}
    auth.close()


def test_oauth_handler_without_client_offers_the_token_form(make_settings):
    import httpx

    auth = Authenticator(make_settings())
    spec = AuthSpec(auth_provider="calendly", auth_handler="calendly-oauth2")
    url = start(auth, spec)
    assert "/auth/calendly/form?state=" in url
    page = httpx.get(url)
    state = page.text.split("name='state' value='")[1].split("'")[0]
    done = httpx.post(url.split("?")[0], data={"state": state, "token": "cal-pat-123456"})
    assert done.status_code == 200
    assert auth.environment(spec, "u") == {"CALENDLY_TOKEN": "cal-pat-123456"}
    assert auth.status("u")[0].kind == "token"
    auth.close()


def test_public_base_url_for_running_behind_a_proxy(make_settings, stand_in):
    auth = quirky(
        make_settings, stand_in, "linear", credentials={"public_base_url": "https://agent.example.com/pocket/"}
    )
    url = start(auth, AuthSpec(auth_provider="linear"))
    assert parse_qs(urlsplit(url).query)["redirect_uri"] == ["https://agent.example.com/pocket/auth/linear/callback"]
    auth.close()


def test_slack_logout_revokes_with_auth_revoke(make_settings, stand_in):
    auth = quirky(make_settings, stand_in, "slack", revocation_url=f"{stand_in.url}/revoke")
    auth.login_with("slack", {"token": "xoxb-revoke-me-1234"}, user_id="u", kind="token")
    stand_in.json("POST /revoke", {"ok": True, "revoked": True})
    assert auth.logout("slack", user_id="u") == LogoutResult(
        deleted=True, revocation=Revocation(revoked=("access token",), not_revoked={})
    )
    assert stand_in.requests[-1].headers["authorization"] == "Bearer xoxb-revoke-me-1234"
    auth.close()


def test_github_logout_deletes_the_grant(make_settings, stand_in):
    auth = quirky(make_settings, stand_in, "github", revocation_url=f"{stand_in.url}/applications/{{client_id}}/grant")
    url = start(auth, AuthSpec(auth_provider="github", scopes=["repo"]))
    stand_in.json("POST /token", {"access_token": "gho_to_revoke_123", "scope": "repo", "token_type": "bearer"})
    assert complete(auth, url).status_code == 200
    stand_in.routes["DELETE /applications/github-client/grant"] = lambda _r: (204, {}, b"")
    assert auth.logout("github", user_id="u") == LogoutResult(
        deleted=True, revocation=Revocation(revoked=("access token",), not_revoked={})
    )
    request = stand_in.requests[-1]
    assert request.json() == {"access_token": "gho_to_revoke_123"}
    assert request.headers["authorization"] == "Basic " + base64.b64encode(b"github-client:github-secret").decode()
    auth.close()


def test_expired_token_without_refresh_token_requires_authorization(make_settings, stand_in):
    auth = quirky(make_settings, stand_in, "github")
    spec = AuthSpec(auth_provider="github", scopes=["repo"])
    url = start(auth, spec)
    stand_in.json("POST /token", {"access_token": "ghu_app_token_1", "expires_in": 28800, "scope": "repo"})
    assert complete(auth, url).status_code == 200
    assert auth.environment(spec, "u") == {"GITHUB_TOKEN": "ghu_app_token_1"}
    expire(auth, "github")
    with pytest.raises(AuthRequiredError, match="the token expired") as caught:
        auth.environment(spec, "u")
    assert caught.value.url.startswith(f"{stand_in.url}/authorize?")
    assert auth.store.get("u", "github").status == "expired"
    auth.close()


def test_callback_server_refuses_other_hosts_and_expired_states(make_settings, stand_in, callback_port):
    import httpx

    auth = quirky(make_settings, stand_in, "linear", credentials={"authorization_timeout_seconds": 0.3})
    url = start(auth, AuthSpec(auth_provider="linear"))
    state = parse_qs(urlsplit(url).query)["state"][0]
    callback = f"http://127.0.0.1:{callback_port}/auth/linear/callback?code=c&state={state}"
    rebound = httpx.get(callback, headers={"Host": f"attacker.example:{callback_port}"})
    assert rebound.status_code == 421
    time.sleep(0.4)
    page = httpx.get(callback)
    assert page.status_code == 400
    assert not [r for r in stand_in.requests if r.path == "/token"]
    assert auth.wait(timeout=0) == {"linear": "failed: the authorization request expired"}
    auth.close()


def test_a_pasted_token_serves_an_oauth_only_provider(make_settings):
    auth = Authenticator(make_settings())
    auth.login_with("google", {"token": "ya29.pasted-token"}, user_id="u", kind="token")
    spec = AuthSpec(auth_provider="google", scopes=["https://www.googleapis.com/auth/calendar"])
    assert auth.environment(spec, "u") == {"GOOGLE_TOKEN": "ya29.pasted-token"}
    auth.close()


def test_transient_refresh_failure_keeps_a_valid_token_and_never_crashes(make_settings, stand_in):
    auth = quirky(make_settings, stand_in, "linear", credentials={"refresh_margin_seconds": 60})
    spec = AuthSpec(auth_provider="linear")
    url = start(auth, spec)
    stand_in.json("POST /token", {"access_token": "lin_1", "refresh_token": "lin_r", "expires_in": 100})
    assert complete(auth, url).status_code == 200
    stored = auth.store.get("u", "linear")
    # Inside the refresh margin but not expired: the provider is down, the current token is still used.
    auth.store.put(replace(stored, obtained_at=time.time() - 95, expires_at=time.time() + 5))
    stand_in.json("POST /token", {"error": "server_error"}, status=503)
    assert auth.environment(spec, "u") == {"LINEAR_TOKEN": "lin_1"}
    expire(auth, "linear")
    with pytest.raises(AuthUnavailableError, match="server_error"):  # not "authorization required"
        auth.environment(spec, "u")
    assert auth.store.get("u", "linear").status == "active"  # not the grant's fault: kept for the next try
    auth.close()
    without_client = Authenticator(make_settings({"linear": {"token_url": f"{stand_in.url}/token"}}))
    with pytest.raises(AuthRequiredError, match="no OAuth client"):
        without_client.environment(spec, "u")  # the expired token cannot be refreshed any more: said, no crash
    without_client.close()


def test_a_refresh_error_echoing_the_refresh_token_never_shows_it(make_settings, stand_in):
    auth = quirky(make_settings, stand_in, "linear")
    spec = AuthSpec(auth_provider="linear")
    url = start(auth, spec)
    stand_in.json("POST /token", {"access_token": "lin_1", "refresh_token": "RT-secret-987654321", "expires_in": 100})
    assert complete(auth, url).status_code == 200
    expire(auth, "linear")
    stand_in.json(
        "POST /token", {"error": "server_error", "error_description": "could not refresh RT-secret-987654321"}, 500
    )
    with pytest.raises(AuthUnavailableError) as info:
        auth.environment(spec, "u")
    assert "could not refresh [redacted]" in str(info.value)
    assert "RT-secret" not in str(info.value) + repr(info.value)
    auth.close()


def exception_chain(error: BaseException) -> list[BaseException]:
    """The error and every exception it holds on to: what an error tracker or `logging.exception` may show."""
    chain, seen = [], set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        chain.append(error)
        error = error.__cause__ or error.__context__
    return chain


def test_a_refresh_error_keeps_no_unredacted_exception_in_its_chain(make_settings, stand_in):
    auth = quirky(make_settings, stand_in, "linear")
    spec = AuthSpec(auth_provider="linear")
    url = start(auth, spec)
    stand_in.json("POST /token", {"access_token": "lin_1", "refresh_token": "RT-chained-55555555", "expires_in": 100})
    assert complete(auth, url).status_code == 200
    expire(auth, "linear")
    stand_in.json("POST /token", {"error": "server_error", "error_description": "bad RT-chained-55555555"}, 500)
    with pytest.raises(PocketError) as info:
        auth.environment(spec, "u")
    for error in exception_chain(info.value):
        assert "RT-chained" not in str(error) + repr(error), type(error).__name__
    auth.close()


@pytest.mark.parametrize("provider", ["notion", "linear"])  # client_secret_basic, client_secret_post
def test_a_token_endpoint_echoing_the_client_credentials_never_shows_the_secret(make_settings, stand_in, provider):
    secret = "cl/sec+ret=42-abcdef"  # characters that percent-encoding and Basic encoding change
    auth = quirky(make_settings, stand_in, provider, client_secret=secret)
    url = start(auth, AuthSpec(auth_provider=provider))

    def echo(request):
        sent = f"{request.headers.get('authorization', '')} {request.body.decode()}"
        body = json.dumps({"error": "invalid_client", "error_description": f"refused: {sent}"}).encode()
        return 401, {"Content-Type": "application/json"}, body

    stand_in.routes["POST /token"] = echo
    page = complete(auth, url)
    sent = stand_in.requests[-1]
    basic = sent.headers.get("authorization", "").removeprefix("Basic ")
    shown = page.text + json.dumps(auth.wait(timeout=0))
    assert page.status_code == 400 and "refused:" in shown
    for form in (secret, quote(secret, safe=""), quote_plus(secret), basic or secret):
        assert form not in shown and html.escape(form) not in shown
    auth.close()
