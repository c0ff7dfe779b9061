"""`pocket serve --http` as an OAuth resource server, against a real authorization server (oidc-provider issuing
JWT access tokens for this resource by RFC 8707 resource indicators) and the official MCP SDK client's own OAuth
support: discovery from the 401, PKCE, login. The same server is the third-party provider ("testidp") whose
grants each user gives through the consent pages on the MCP port, and whose introspection tells the `whoami`
tool whose token it was handed."""

from __future__ import annotations

import base64
import contextlib
import json
import re
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import anyio
import httpx
import httpx2
import pytest
from joserfc import jwt
from joserfc.jwk import KeySet, RSAKey
from mcp import Client, types
from mcp.client.auth import OAuthClientProvider, TokenStorage
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.auth import AuthorizationCodeResult, OAuthClientInformationFull, OAuthClientMetadata, OAuthToken
from mcp.shared.exceptions import MCPError, UrlElicitationRequiredError
from mcp.types import URL_ELICITATION_REQUIRED

from runner.auth.oauth import pkce_pair
from runner.errors import SettingsError
from runner.function_tools import function_tool
from runner.pocket import Pocket
from runner.server import build_server, http_app
from runner.server.resource import KEYS_REFETCH_AFTER, Refusal, TokenValidator
from runner.settings import ServerSettings, Settings, load_settings
from tests.fixtures_oauth import CLIENT_ID, CLIENT_SECRET, OidcServer, Person, idp_entry
from tests.helpers import HELLO, REPO, environment, free_port, pocket, wait_listening

MCP_CLIENT = "mcp-client"
LOGIN_CLIENT = "pocket-login"
MCP_REDIRECT = "http://127.0.0.1:9/callback"  # the MCP client's own redirect: never listened on, the person stops there

SERVER_SCRIPT = """
import sys
sys.path.insert(0, {repo!r})
import httpx
from runner.function_tools import function_tool
from runner.server import serve
from runner.pocket import Pocket
from runner.settings import ServerSettings, load_settings

@function_tool
def add(a: int, b: int = 1) -> int:
    '''Add two integers.'''
    return a + b

@function_tool(auth_provider="testidp")
def whoami(TESTIDP_TOKEN: str) -> str:
    '''Whose third-party token this call was handed, as the provider that issued it says.'''
    answer = httpx.post({introspection!r}, data={{"token": TESTIDP_TOKEN}}, auth=({client!r}, {secret!r}))
    return answer.json()["sub"]

serve(Pocket([add, whoami], settings=load_settings(sys.argv[1])), transport="http", port=int(sys.argv[2]))
"""


@dataclass
class Deployment:
    """An authorization server and `pocket serve --http` trusting it, on loopback."""

    idp: OidcServer
    url: str  # the MCP endpoint, the resource URI
    process: subprocess.Popen[str] | None

    @property
    def origin(self) -> str:
        return self.url.removesuffix("/mcp")


def _clients(mcp_port: int, public: str | None = None) -> list[dict[str, Any]]:
    """The clients registered at the authorization server; `public` is where browsers reach the MCP server."""
    public = public or f"http://127.0.0.1:{mcp_port}"
    return [
        {  # the runner, as an OAuth client of the provider "testidp" (and of introspection)
            "client_id": CLIENT_ID,
            "client_secret": CLIENT_SECRET,
            "redirect_uris": [f"{public}/auth/testidp/callback"],
            "grant_types": ["authorization_code", "refresh_token"],
            "token_endpoint_auth_method": "client_secret_basic",
        },
        {  # the runner's own login client: who opens a consent link (runner/server/consent_links.py)
            "client_id": LOGIN_CLIENT,
            "client_secret": CLIENT_SECRET,
            "redirect_uris": [f"{public}/auth/login/callback"],
            "grant_types": ["authorization_code"],
            "token_endpoint_auth_method": "client_secret_basic",
        },
        {  # an MCP client (public, PKCE)
            "client_id": MCP_CLIENT,
            "redirect_uris": [MCP_REDIRECT],
            "grant_types": ["authorization_code", "refresh_token"],
            "token_endpoint_auth_method": "none",
        },
    ]


def _settings_file(tmp: Path, issuer: str, public_url: str | None = None) -> Path:
    path = tmp / "settings.toml"
    path.write_text(
        textwrap.dedent(f"""
        data_dir = "{tmp / "data"}"
        cache_dir = "{tmp / "cache"}"
        [server]
        {f'public_url = "{public_url}"' if public_url else ""}
        issuers = ["{issuer}"]
        required_scopes = ["mcp:tools"]
        introspection_client_id = "{CLIENT_ID}"
        introspection_client_secret = "{CLIENT_SECRET}"
        consent_wait_seconds = 60
        login_client_id = "{LOGIN_CLIENT}"
        login_client_secret = "{CLIENT_SECRET}"
        [auth.testidp]
        issuer = "{issuer}"
        client_id = "{CLIENT_ID}"
        client_secret = "{CLIENT_SECRET}"
        default_scopes = ["openid"]
        env = {{ TESTIDP_TOKEN = "{{token}}" }}
        """)
    )
    return path


@contextlib.contextmanager
def deployed(tmp: Path, *, port: int | None = None, public: str | None = None, **idp_env: str) -> Iterator[Deployment]:
    """The server on `port` (a free one by default); `public`: the URL browsers and tokens name it by, when a proxy
    stands in front of it."""
    port = port or free_port()
    url = f"{public or f'http://127.0.0.1:{port}'}/mcp"
    running = Deployment(OidcServer(_clients(port, public), 60, **idp_env), url, None)
    try:
        script = tmp / "server.py"
        script.write_text(
            textwrap.dedent(
                SERVER_SCRIPT.format(
                    repo=str(REPO),
                    introspection=f"{running.idp.issuer}/token/introspection",
                    client=CLIENT_ID,
                    secret=CLIENT_SECRET,
                )
            )
        )
        command = [sys.executable, str(script), str(_settings_file(tmp, running.idp.issuer, public and url)), str(port)]
        process = subprocess.Popen(command, cwd=REPO, env=environment(), stderr=subprocess.PIPE, text=True)
        running.process = process
        try:
            if not wait_listening(port, process, timeout=30):
                raise AssertionError(f"the server did not start: {process.stderr.read() if process.stderr else ''}")
            yield running
        finally:
            process.terminate()
            process.wait(10)
    finally:
        running.idp.stop()  # the one running now: a test may have restarted it


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    with deployed(tmp_path_factory.mktemp("deployment")) as running:
        yield running


@pytest.mark.parametrize(
    ("issuers", "options", "said"),
    [
        ([], [], "serving MCP over HTTP needs authentication: set [server] issuers"),
        ([], ["--no-auth", "--host", "0.0.0.0"], "refusing to serve without authentication on 0.0.0.0"),  # noqa: S104
        ([], ["--user", "alice"], "--user with --http needs --no-auth"),
        (["http://127.0.0.1:1"], ["--no-auth"], "an authenticated server ([server] issuers) calls as the user each"),
        (["http://127.0.0.1:1"], ["--host", "0.0.0.0"], "serving on 0.0.0.0 (every address) needs [server] public_url"),  # noqa: S104
        (["http://127.0.0.1:1"], ["--host", "::"], "serving on :: (every address) needs [server] public_url"),
    ],
)
def test_serve_http_is_never_silently_unauthenticated(tmp_path, issuers, options, said):
    settings = tmp_path / "settings.toml"
    settings.write_text(f"[server]\nissuers = {json.dumps(issuers)}\n")
    result = pocket("serve", str(HELLO), "--settings", str(settings), "--http", *options)
    assert result.returncode == 2, result.stderr
    assert f"pocket: {said}" in result.stderr and "Traceback" not in result.stderr
    assert "(Ctrl-C stops)" not in result.stderr  # refused before any banner


def test_server_settings_from_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("POCKET_SERVER__ISSUERS", "https://login.example.com, https://other.example.com")
    monkeypatch.setenv("POCKET_SERVER__REQUIRED_SCOPES", '["mcp:tools"]')
    monkeypatch.setenv("POCKET_SERVER__INTROSPECTION_CLIENT_SECRET", "0042")
    server = load_settings(directory=tmp_path).server
    assert server.issuers == ("https://login.example.com", "https://other.example.com")
    assert server.required_scopes == ("mcp:tools",) and server.user_claim == "sub"
    assert server.introspection_client_secret.get_secret_value() == "0042" and "0042" not in repr(server)
    monkeypatch.setenv("POCKET_SERVER__PUBLIC_URL", "https://tools.example.com/mcp#top")
    with pytest.raises(SettingsError, match=r"server\.public_url .*not an http"):
        load_settings(directory=tmp_path)


# -- getting tokens the way people and clients do ---------------------------------------------------------------


def access_token(idp: OidcServer, login: str, *, resource: str, scope: str = "mcp:tools") -> str:
    """An access token for `resource`, obtained by `login` through the authorization code flow with PKCE."""
    verifier, challenge = pkce_pair()
    meta = httpx.get(f"{idp.issuer}/.well-known/openid-configuration").json()
    query = {
        "client_id": MCP_CLIENT,
        "response_type": "code",
        "redirect_uri": MCP_REDIRECT,
        "scope": scope,
        "code_challenge": challenge,
        "code_challenge_method": "S256",
        "resource": resource,
        "state": "s" * 32,
    }
    person = Person(login=login)
    try:
        back = person.authorize(f"{meta['authorization_endpoint']}?{urlencode(query)}", stop_at="/callback")
    finally:
        person.client.close()
    code = parse_qs(urlsplit(back).query)["code"][0]
    answer = httpx.post(
        meta["token_endpoint"],
        data={
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": MCP_REDIRECT,
            "client_id": MCP_CLIENT,
            "code_verifier": verifier,
            "resource": resource,
        },
    )
    answer.raise_for_status()
    return answer.json()["access_token"]


def grant_third_party(url: str, login: str, *, callback_path: str = "/auth/testidp/") -> str:
    """A person opens the link a call answered with, logs in (the server checks the link is theirs), grants
    the provider access, lands on the consent callback of the MCP server; returns the page's text."""
    person = Person(login=login)
    try:
        callback = person.authorize(url, stop_at=callback_path)
        page = person.visit(callback)
    finally:
        person.client.close()
    assert page.status_code == 200, page.text
    return page.text


@dataclass
class MemoryStorage(TokenStorage):
    """The MCP client's token store: in memory, the client pre-registered at the authorization server."""

    tokens: OAuthToken | None = None
    client: OAuthClientInformationFull = field(
        default_factory=lambda: OAuthClientInformationFull(
            client_id=MCP_CLIENT, redirect_uris=[MCP_REDIRECT], token_endpoint_auth_method="none"
        )
    )

    async def get_tokens(self) -> OAuthToken | None:
        return self.tokens

    async def set_tokens(self, tokens: OAuthToken) -> None:
        self.tokens = tokens

    async def get_client_info(self) -> OAuthClientInformationFull | None:
        return self.client

    async def set_client_info(self, client_info: OAuthClientInformationFull) -> None:
        self.client = client_info


class Login:
    """The SDK's OAuth redirect and callback handlers, played by a person in a browser."""

    def __init__(self, login: str):
        self.login = login
        self.visited: list[str] = []
        self._callback = ""

    async def redirect(self, url: str) -> None:
        self.visited.append(url)
        person = Person(login=self.login)
        try:
            self._callback = await anyio.to_thread.run_sync(lambda: person.authorize(url, stop_at="/callback"))
        finally:
            person.client.close()

    async def callback(self) -> AuthorizationCodeResult:
        query = {k: v[0] for k, v in parse_qs(urlsplit(self._callback).query).items()}
        return AuthorizationCodeResult(code=query["code"], state=query.get("state"), iss=query.get("iss"))


def oauth_client(url: str, login: Login, storage: MemoryStorage | None = None, **options: Any) -> Client:
    """The official SDK client with its own OAuth support (discovery from the 401, PKCE, token refresh)."""
    provider = OAuthClientProvider(
        server_url=url,
        client_metadata=OAuthClientMetadata(redirect_uris=[MCP_REDIRECT], token_endpoint_auth_method="none"),
        storage=storage or MemoryStorage(),
        redirect_handler=login.redirect,
        callback_handler=login.callback,
    )
    http = httpx2.AsyncClient(auth=provider, timeout=httpx2.Timeout(60))
    return Client(streamable_http_client(url, http_client=http), **options)


def bearer_client(url: str, token: str, **options: Any) -> Client:
    http = httpx2.AsyncClient(headers={"Authorization": f"Bearer {token}"}, timeout=httpx2.Timeout(120))
    return Client(streamable_http_client(url, http_client=http), **options)


def text(result: Any) -> str:
    return result.content[0].text


def initialize(url: str, token: str | None) -> httpx.Response:
    """A raw `initialize` POST to the MCP endpoint, as any client's first request."""
    headers = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    body = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "initialize",
        "params": {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}},
    }
    return httpx.post(url, json=body, headers=headers)


def _params(response: httpx.Response) -> dict[str, str]:
    """The parameters of the `WWW-Authenticate: Bearer k="v", ...` header."""
    value = response.headers["www-authenticate"]
    assert value.startswith("Bearer ")
    return dict(re.findall(r'(\w+)="([^"]*)"', value))


# -- the resource server --------------------------------------------------------------------------------------


def test_without_a_token_the_client_is_told_where_to_log_in(deployment):
    refused = initialize(deployment.url, None)
    assert refused.status_code == 401
    metadata_url = f"{deployment.origin}/.well-known/oauth-protected-resource/mcp"
    assert _params(refused) == {"resource_metadata": metadata_url, "scope": "mcp:tools"}
    for url in (metadata_url, f"{deployment.origin}/.well-known/oauth-protected-resource"):
        metadata = httpx.get(url).json()
        assert metadata["resource"] == deployment.url
        assert metadata["authorization_servers"] == [deployment.idp.issuer]
        assert metadata["scopes_supported"] == ["mcp:tools"]


def test_the_sdk_client_logs_in_by_itself_and_calls_as_its_user(deployment):
    login = Login("dora")
    storage = MemoryStorage()

    async def scenario() -> Any:
        async with oauth_client(deployment.url, login, storage) as client:
            return await client.list_tools(), await client.call_tool("add", {"a": 1, "b": 2})

    listing, added = anyio.run(scenario)
    assert [tool.name for tool in listing.tools] == ["add", "whoami"]
    assert text(added) == "3"
    (authorize,) = login.visited  # one login: discovered from the 401, with PKCE and this resource
    query = parse_qs(urlsplit(authorize).query)
    assert authorize.startswith(f"{deployment.idp.issuer}/auth?")
    assert query["resource"] == [deployment.url] and query["code_challenge_method"] == ["S256"]
    assert "mcp:tools" in query["scope"][0].split()
    assert storage.tokens is not None
    claims = jwt.decode(storage.tokens.access_token, _issuer_keys(deployment.idp)).claims
    assert (claims["aud"], claims["sub"]) == (deployment.url, "dora")


def _issuer_keys(idp: OidcServer) -> KeySet:
    return KeySet.import_key_set(httpx.get(f"{idp.issuer}/jwks").json())


def _forge(token: str, **changes: Any) -> str:
    """The token with its claims changed and its signature kept."""
    header, payload, signature = token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))) | changes
    forged = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    return f"{header}.{forged}.{signature}"


def test_tokens_not_for_this_server_or_altered_are_refused(deployment):
    idp = deployment.idp
    good = access_token(idp, "erin", resource=deployment.url)
    assert initialize(deployment.url, good).status_code == 200
    cases = {
        "another audience": access_token(idp, "erin", resource="http://127.0.0.1:1/other/mcp"),
        "claims altered": _forge(good, sub="bob"),
        "signed by another key": jwt.encode(
            {"alg": "RS256", "kid": json.loads(base64.urlsafe_b64decode(good.split(".")[0] + "=="))["kid"]},
            {**jwt.decode(good, _issuer_keys(idp)).claims, "sub": "bob"},
            RSAKey.generate_key(2048),
        ),
        "not signed": _forge(good).replace(good.split(".")[0], _b64({"alg": "none"})).rsplit(".", 1)[0] + ".",
        "untrusted issuer": _forge(good, iss="http://127.0.0.1:1"),
        "not a JWT": "just-some-string",
    }
    why = {
        "another audience": "was not issued for this server",
        "claims altered": "signature does not verify",
        "signed by another key": "signature does not verify",
        "not signed": "algorithm 'none' is not accepted",
        "untrusted issuer": "does not trust",
        "not a JWT": "is not active",  # opaque: introspection does not know it
    }
    for case, token in cases.items():
        refused = initialize(deployment.url, token)
        assert refused.status_code == 401, case
        params = _params(refused)
        assert params["error"] == "invalid_token", case
        assert why[case] in params["error_description"], (case, params)
        assert token not in refused.text and token not in refused.headers["www-authenticate"]


def _b64(document: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(document).encode()).rstrip(b"=").decode()


def test_a_hostile_token_is_not_echoed_into_the_challenge(deployment):
    """A forged token's own text (its `alg`: 20 000 characters, non-ASCII, quotes, backslashes) is not copied into
    `WWW-Authenticate`: the challenge keeps to RFC 6750's characters, stays short, and still names the metadata."""
    claims = _b64({"iss": deployment.idp.issuer, "aud": deployment.url, "sub": "mallory"})
    for alg in ("x" * 20_000, 'é\u2028"\\x'):
        refused = initialize(deployment.url, f"{_b64({'alg': alg})}.{claims}.c2ln")
        challenge = refused.headers["www-authenticate"]
        assert refused.status_code == 401 and len(challenge) < 500
        assert re.fullmatch(r'Bearer ( ?\w+="[\x20\x21\x23-\x5b\x5d-\x7e]*",?)+', challenge), challenge
        assert "signature algorithm" in _params(refused)["error_description"]
        assert _params(refused)["resource_metadata"] == f"{deployment.origin}/.well-known/oauth-protected-resource/mcp"


def test_a_token_without_the_required_scope_gets_403_naming_it(deployment):
    token = access_token(deployment.idp, "erin", resource=deployment.url, scope="openid")
    refused = initialize(deployment.url, token)
    assert refused.status_code == 403
    params = _params(refused)
    assert (params["error"], params["scope"]) == ("insufficient_scope", "mcp:tools")
    assert params["error_description"] == "the access token lacks the scope mcp:tools"


# -- per-user credentials, and consent ---------------------------------------------------------------------------


def test_two_users_at_once_each_with_their_own_grant(deployment):
    """Alice and Bob, each logged in with the SDK client, each authorize the third-party provider through the
    URL their call answered with; each call then runs with their own token, never the other's."""
    first_answers: dict[str, Any] = {}
    second_answers: dict[str, Any] = {}

    async def user(login: str) -> None:
        async with oauth_client(deployment.url, Login(login)) as client:
            first = await client.call_tool("whoami", {})
            first_answers[login] = first
            url = first.meta["pocket/auth_url"]
            await anyio.to_thread.run_sync(grant_third_party, url, login)
            second_answers[login] = await client.call_tool("whoami", {})

    async def both() -> None:
        async with anyio.create_task_group() as group:
            group.start_soon(user, "alice")
            group.start_soon(user, "bob")

    anyio.run(both)
    for login in ("alice", "bob"):
        first = first_answers[login]
        assert first.is_error and first.meta["pocket/outcome"] == "auth_required"  # no elicitation declared
        url = first.meta["pocket/auth_url"]
        assert url in text(first) and f"user '{login}'" in text(first)
        assert url.startswith(f"{deployment.origin}/auth/confirm?link=")  # a link only its user can follow
        assert (second_answers[login].is_error, text(second_answers[login])) == (False, login)


def test_a_consent_link_only_works_for_its_own_user(deployment):
    """Consent phishing: Kim forwards the link her call answered with to Liam. He logs in, is told the link
    is not his, and never reaches the provider; Kim follows it herself and her call then runs."""

    async def call() -> Any:
        token = await anyio.to_thread.run_sync(lambda: access_token(deployment.idp, "kim", resource=deployment.url))
        async with bearer_client(deployment.url, token) as client:
            return await client.call_tool("whoami", {})

    link = anyio.run(call).meta["pocket/auth_url"]
    liam = Person(login="liam")
    try:
        logged_in = liam.authorize(link, stop_at="/auth/login/")  # he logs in at the authorization server
        refused = liam.visit(logged_in)  # and lands back on the MCP server
    finally:
        liam.client.close()
    assert refused.status_code == 403 and "This link is not yours" in refused.text
    assert "location" not in refused.headers  # not sent on to the provider
    kim = Person(login="kim")
    try:
        logged_in = kim.authorize(link, stop_at="/auth/login/")
        elsewhere = httpx.get(logged_in)  # the same login answer in another browser (login CSRF): no cookie
    finally:
        kim.client.close()
    assert elsewhere.status_code == 400 and "not recognised" in elsewhere.text
    assert "is connected" in grant_third_party(link, "kim")
    result = anyio.run(call)
    assert (result.is_error, text(result)) == (False, "kim")


class PrefixProxy(ThreadingHTTPServer):
    """A reverse proxy on 127.0.0.1 publishing the server under a path (`/pocket/...` -> `/...`), keeping the
    Host header, as a team's ingress does: what browsers see of the consent pages."""

    def __init__(self, prefix: str, target_port: int):
        prefix_, target = prefix, f"http://127.0.0.1:{target_port}"

        class Forward(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if not self.path.startswith(prefix_ + "/"):
                    self.send_error(404)
                    return
                headers = {name: value for name, value in self.headers.items() if name.lower() != "connection"}
                answer = httpx.get(target + self.path.removeprefix(prefix_), headers=headers, follow_redirects=False)
                self.send_response(answer.status_code)
                for name, value in answer.headers.multi_items():
                    if name.lower() not in ("content-length", "transfer-encoding", "connection", "date", "server"):
                        self.send_header(name, value)
                self.send_header("Content-Length", str(len(answer.content)))
                self.end_headers()
                self.wfile.write(answer.content)

            def log_message(self, *args: Any) -> None:
                pass

        super().__init__(("127.0.0.1", 0), Forward)
        self.origin = f"http://127.0.0.1:{self.server_address[1]}{prefix}"
        threading.Thread(target=self.serve_forever, daemon=True).start()


def test_consent_behind_a_proxy_publishing_the_server_under_a_path(tmp_path):
    """`public_url` with a path (an ingress at https://example.com/pocket/): the consent link, the login's cookie
    and the provider's callback all work at the public addresses, and the call then runs as its user."""
    port = free_port()
    proxy = PrefixProxy("/pocket", port)
    try:
        with deployed(tmp_path, port=port, public=proxy.origin) as running:
            direct = f"http://127.0.0.1:{port}/mcp"  # an agent inside, with a token for the public resource

            async def call() -> Any:
                token = await anyio.to_thread.run_sync(lambda: access_token(running.idp, "kim", resource=running.url))
                async with bearer_client(direct, token) as client:
                    return await client.call_tool("whoami", {})

            link = anyio.run(call).meta["pocket/auth_url"]
            assert link.startswith(f"{proxy.origin}/auth/confirm?link=")
            assert "is connected" in grant_third_party(link, "kim", callback_path="/pocket/auth/testidp/")
            result = anyio.run(call)
            assert (result.is_error, text(result)) == (False, "kim")
    finally:
        proxy.shutdown()
        proxy.server_close()


class Elicited:
    """A client's URL elicitation handling: the person is sent to the link after the client accepted (so the
    server must wait for the consent), and completion notifications are recorded."""

    def __init__(self, login: str):
        self.login = login
        self.asked: list[types.ElicitRequestURLParams] = []
        self.completed: list[str] = []
        self.complete = anyio.Event()
        self.people: list[threading.Thread] = []

    def open(self, url: str) -> None:
        person = threading.Thread(target=grant_third_party, args=(url, self.login))
        self.people.append(person)
        person.start()

    async def elicitation(self, context: Any, params: Any) -> types.ElicitResult:
        self.asked.append(params)
        self.open(params.url)
        return types.ElicitResult(action="accept")

    async def messages(self, message: Any) -> None:
        if isinstance(message, types.ElicitCompleteNotification):
            self.completed.append(message.params.elicitation_id)
            self.complete.set()

    def join(self) -> None:
        for person in self.people:
            person.join(30)

    @contextlib.asynccontextmanager
    async def client(self, deployment: Deployment, mode: str) -> AsyncIterator[Client]:
        """An SDK client of the deployment speaking `mode`, logged in as this person, handling elicitation."""
        token = await anyio.to_thread.run_sync(
            lambda: access_token(deployment.idp, self.login, resource=deployment.url)
        )
        options = {"mode": mode, "elicitation_callback": self.elicitation, "message_handler": self.messages}
        async with bearer_client(deployment.url, token, **options) as client:
            yield client


def test_url_elicitation_2026_07_28(deployment):
    """2026-07-28: the call answers an InputRequiredResult carrying elicitation/create (mode url, no
    elicitationId); the client accepts and retries, the person authorizes meanwhile, and the call's result is
    the tool's."""
    elicited = Elicited("frank")

    async def scenario() -> Any:
        async with elicited.client(deployment, "2026-07-28") as client:
            return await client.call_tool("whoami", {})

    result = anyio.run(scenario)
    elicited.join()
    assert (result.is_error, text(result)) == (False, "frank")
    (params,) = elicited.asked
    assert params.mode == "url" and params.url.startswith(f"{deployment.origin}/auth/confirm?link=")
    assert params.elicitation_id is None and elicited.completed == []


def test_url_elicitation_2025_11_25_over_http(deployment):
    """2025-11-25 over HTTP with JSON responses (no stream back within a call): the call fails with
    URLElicitationRequiredError (-32042) carrying the URL and an elicitationId; once the person authorized,
    notifications/elicitation/complete names it on the session's stream, and the call made again succeeds."""
    elicited = Elicited("gus")

    async def scenario() -> tuple[MCPError, Any]:
        async with elicited.client(deployment, "legacy") as client:
            with pytest.raises(MCPError) as raised:
                await client.call_tool("whoami", {})
            (params,) = UrlElicitationRequiredError.from_error(raised.value.error).elicitations
            elicited.open(params.url)
            with anyio.fail_after(60):
                await elicited.complete.wait()
            return raised.value, (params, await client.call_tool("whoami", {}))

    error, (params, result) = anyio.run(scenario)
    elicited.join()
    assert error.error.code == URL_ELICITATION_REQUIRED
    assert params.mode == "url" and params.url.startswith(f"{deployment.origin}/auth/confirm?link=")
    assert params.elicitation_id and elicited.completed == [params.elicitation_id]
    assert elicited.asked == []  # nothing was sent back within the call
    assert (result.is_error, text(result)) == (False, "gus")


def test_url_elicitation_2025_11_25_within_the_call(make_settings, oidc_server):
    """2025-11-25 where the call has a stream back (stdio, in process here): elicitation/create (mode url, an
    elicitationId) within the call; the client accepts, the person authorizes, notifications/elicitation/complete
    names it, and the same call returns the tool's result."""
    introspection = f"{oidc_server.issuer}/token/introspection"

    @function_tool(auth_provider="testidp")
    def whoami(TESTIDP_TOKEN: str) -> str:
        """Whose third-party token this call was handed."""
        answer = httpx.post(introspection, data={"token": TESTIDP_TOKEN}, auth=(CLIENT_ID, CLIENT_SECRET))
        return answer.json()["sub"]

    elicited = Elicited("hugo")
    settings = make_settings({"testidp": idp_entry(oidc_server.issuer, default_scopes=["openid"])})
    with Pocket([whoami], settings=settings) as pocket:

        async def scenario() -> Any:
            server = build_server(pocket, user_id="hugo")
            options = {"elicitation_callback": elicited.elicitation, "message_handler": elicited.messages}
            async with Client(server, mode="legacy", **options) as client:
                return await client.call_tool("whoami", {})

        result = anyio.run(scenario)
    elicited.join()
    assert (result.is_error, text(result)) == (False, "hugo")
    (params,) = elicited.asked
    assert params.mode == "url" and params.url.startswith(f"{oidc_server.issuer}/auth?")
    assert params.elicitation_id and elicited.completed == [params.elicitation_id]


def test_a_declined_elicitation_keeps_todays_result(deployment):
    async def decline(context: Any, params: Any) -> types.ElicitResult:
        return types.ElicitResult(action="decline")

    async def scenario() -> Any:
        token = await anyio.to_thread.run_sync(lambda: access_token(deployment.idp, "gina", resource=deployment.url))
        async with bearer_client(deployment.url, token, elicitation_callback=decline) as client:
            return await client.call_tool("whoami", {})

    result = anyio.run(scenario)
    assert result.is_error and result.meta["pocket/outcome"] == "auth_required"
    assert result.meta["pocket/auth_url"] in text(result)


def test_fifty_concurrent_calls_from_five_users(deployment):
    users = [f"user{i}" for i in range(5)]
    tokens = {user: access_token(deployment.idp, user, resource=deployment.url) for user in users}

    async def grant(user: str) -> None:
        async with bearer_client(deployment.url, tokens[user]) as client:
            first = await client.call_tool("whoami", {})
            await anyio.to_thread.run_sync(grant_third_party, first.meta["pocket/auth_url"], user)

    answers: list[tuple[str, str, bool]] = []

    async def calls(user: str) -> None:
        async with bearer_client(deployment.url, tokens[user]) as client:

            async def one() -> None:
                result = await client.call_tool("whoami", {})
                answers.append((user, text(result), result.is_error))

            async with anyio.create_task_group() as group:
                for _ in range(10):
                    group.start_soon(one)

    async def scenario() -> None:
        for user in users:
            await grant(user)
        async with anyio.create_task_group() as group:
            for user in users:
                group.start_soon(calls, user)

    anyio.run(scenario)
    assert len(answers) == 50
    assert sorted(answers) == sorted((user, user, False) for user in users for _ in range(10))


def test_the_typescript_sdk_logs_in_and_calls_as_its_user(deployment):
    """A second client, the TypeScript SDK (tests/mcp_ts, installed by scripts/setup-test-deps.sh): its own
    OAuth discovery from the 401 and PKCE; its calls run as the user who logged in."""
    folder = REPO / "tests" / "mcp_ts"
    if not (folder / "node_modules" / "@modelcontextprotocol" / "sdk").is_dir():
        pytest.fail("the TypeScript MCP SDK is missing: run scripts/setup-test-deps.sh")
    calls = [["add", {"a": 2, "b": 3}], ["whoami", {}]]
    env = {
        **environment(),
        "SERVER_URL": deployment.url,
        "CLIENT_ID": MCP_CLIENT,
        "REDIRECT_URI": MCP_REDIRECT,
        "CALLS": json.dumps(calls),
    }
    process = subprocess.Popen(
        ["node", "client.mjs"], cwd=folder, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert process.stdin is not None and process.stdout is not None
        line = process.stdout.readline()
        assert line.startswith("authorize "), line
        url = line.split(" ", 1)[1].strip()
        query = parse_qs(urlsplit(url).query)
        assert query["resource"] == [deployment.url] and query["code_challenge_method"] == ["S256"]
        person = Person(login="jill")
        try:
            callback = person.authorize(url, stop_at="/callback")
        finally:
            person.client.close()
        process.stdin.write(parse_qs(urlsplit(callback).query)["code"][0] + "\n")
        process.stdin.flush()
        line = process.stdout.readline()
        assert line.startswith("result "), line
        answer = json.loads(line.split(" ", 1)[1])
    finally:
        process.kill()
        process.wait(10)
    assert answer["tools"] == ["add", "whoami"]
    added, who = answer["calls"]
    assert added == {"text": "5", "isError": False}
    assert who["isError"] and "authorization is needed for user 'jill'" in who["text"]  # her grant, not another's


# -- keys, expiry and opaque tokens -------------------------------------------------------------------------------


def _private_jwks(kid: str) -> tuple[str, RSAKey]:
    key = RSAKey.generate_key(2048, parameters={"kid": kid, "use": "sig", "alg": "RS256"})
    return json.dumps({"keys": [key.as_dict(private=True)]}), key


def test_expired_tokens_are_refused_and_rotated_keys_fetched(tmp_path):
    jwks, _ = _private_jwks("first")
    with deployed(tmp_path, JWKS=jwks, RESOURCE_TTL="2") as running:
        token = access_token(running.idp, "hana", resource=running.url)
        assert initialize(running.url, token).status_code == 200
        expires = jwt.decode(token, _issuer_keys(running.idp)).claims["exp"]
        while time.time() <= expires:  # the token's own expiry, read from it: no guess
            time.sleep(expires - time.time() + 0.1)
        refused = initialize(running.url, token)
        assert refused.status_code == 401
        assert _params(refused)["error_description"] == "the access token has expired"
        keys_fetched_by = time.monotonic()  # the server's last fetch of the keys was before this

        # The authorization server rotates its keys (a restart on the same port with a new key set): a token
        # signed with the new key names a kid the server has not seen, so it fetches the keys again.
        running.idp.stop()
        rotated, signing_key = _private_jwks("second")
        running.idp = OidcServer(running.idp.clients, 60, port=running.idp.port, JWKS=rotated, RESOURCE_TTL="60")
        fresh = access_token(running.idp, "hana", resource=running.url)
        assert json.loads(base64.urlsafe_b64decode(fresh.split(".")[0] + "=="))["kid"] == "second"
        time.sleep(max(0.0, keys_fetched_by + KEYS_REFETCH_AFTER - time.monotonic()))  # its throttle, passed
        assert initialize(running.url, fresh).status_code == 200
        # Signed with the issuer's own key, but not valid before a time still to come:
        claims = jwt.decode(fresh, _issuer_keys(running.idp)).claims | {"nbf": int(time.time()) + 300}
        early = jwt.encode({"alg": "RS256", "kid": "second", "typ": "at+jwt"}, claims, signing_key)
        refused = initialize(running.url, early)
        assert refused.status_code == 401 and "not yet valid" in _params(refused)["error_description"]


@function_tool
def echo(text: str) -> str:
    """Say it back."""
    return text


def test_the_token_checks_client_is_closed_when_the_server_shuts_down(tmp_path):
    """The HTTP client that fetches issuers' keys lives as long as the server: an embedding application that
    starts and stops it keeps no connections behind."""
    server = ServerSettings(issuers=("http://127.0.0.1:1",), public_url="https://tools.example.com/mcp")
    settings = Settings(data_dir=tmp_path / "data", cache_dir=tmp_path / "cache", server=server)
    with Pocket([echo], settings=settings) as served:
        app = http_app(served)
        assert app.http is not None

        async def start_and_stop() -> list[str]:
            to_app, app_receives = anyio.create_memory_object_stream[dict[str, Any]](2)
            app_sends, from_app = anyio.create_memory_object_stream[dict[str, Any]](2)
            said = []
            async with anyio.create_task_group() as group:
                group.start_soon(
                    app,
                    {"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}},
                    app_receives.receive,
                    app_sends.send,
                )
                for event in ("lifespan.startup", "lifespan.shutdown"):
                    await to_app.send({"type": event})
                    said.append((await from_app.receive())["type"])
                    said.append("open" if not app.http.is_closed else "closed")
            return said

        assert anyio.run(start_and_stop) == [
            "lifespan.startup.complete",
            "open",
            "lifespan.shutdown.complete",
            "closed",
        ]


def test_a_token_from_a_clock_ahead_says_how_to_tolerate_it():
    """The authorization server's clock runs a minute ahead: its fresh token was issued "in the future". The
    refusal says so and names the setting; with `clock_skew_seconds` covering the difference it is accepted."""
    jwks, key = _private_jwks("ahead")
    idp = OidcServer(_clients(1), 60, JWKS=jwks)
    resource = "http://127.0.0.1:1/mcp"
    try:
        now = int(time.time()) + 60
        claims = {"iss": idp.issuer, "aud": resource, "sub": "uma", "scope": "mcp:tools", "iat": now, "exp": now + 300}
        token = jwt.encode({"alg": "RS256", "kid": "ahead", "typ": "at+jwt"}, claims, key)

        async def validate(skew: int) -> str:
            settings = ServerSettings(issuers=(idp.issuer,), required_scopes=("mcp:tools",), clock_skew_seconds=skew)
            async with httpx.AsyncClient() as http:
                try:
                    return (await TokenValidator(settings, resource, http).validate(token)).user_id
                except Refusal as refusal:
                    return refusal.description

        refused = anyio.run(validate, 0)
        assert refused.startswith("the access token was issued in the future (its iat) by this server's clock")
        assert "set [server] clock_skew_seconds" in refused
        assert anyio.run(validate, 120) == "uma"
    finally:
        idp.stop()


def test_an_issuer_written_with_a_trailing_slash_is_named_in_the_refusal(deployment):
    """`issuers = ["https://login.example.com/"]` for an issuer whose tokens say `https://login.example.com`: the
    refusal says which setting to correct, not just that the issuer is not trusted."""
    token = access_token(deployment.idp, "alice", resource=deployment.url)
    settings = ServerSettings(issuers=(deployment.idp.issuer + "/",), required_scopes=("mcp:tools",))

    async def refusal() -> str:
        async with httpx.AsyncClient() as http:
            with pytest.raises(Refusal) as refused:
                await TokenValidator(settings, deployment.url, http).validate(token)
        return refused.value.description

    said = anyio.run(refusal)
    assert said == (
        f"the access token's issuer is '{deployment.idp.issuer}' but [server] issuers has "
        f"'{deployment.idp.issuer}/': they must match exactly (RFC 8414), correct the setting"
    )


def test_an_issuer_whose_metadata_names_it_otherwise_is_a_setting_to_correct(deployment):
    """Checking an opaque token needs the issuer's metadata; when it names the issuer otherwise than the settings
    do (a trailing slash), the server says so instead of calling it unreachable."""
    settings = ServerSettings(
        issuers=(deployment.idp.issuer + "/",),
        introspection_client_id=CLIENT_ID,
        introspection_client_secret=CLIENT_SECRET,
    )

    async def refusal() -> Refusal:
        async with httpx.AsyncClient() as http:
            with pytest.raises(Refusal) as refused:
                await TokenValidator(settings, deployment.url, http).validate("an-opaque-token")
        return refused.value

    refused = anyio.run(refusal)
    assert refused.status == 503 and refused.description == (
        f"the authorization server {deployment.idp.issuer}/ names itself '{deployment.idp.issuer}' in its metadata: "
        "[server] issuers must name it exactly so"
    )


def test_with_two_issuers_the_same_subject_is_two_users(deployment):
    """A `sub` is unique only per issuer: trusting two, the user is ISSUER|SUB, so two people named alike at
    two authorization servers never share credentials."""
    other = OidcServer(_clients(1), 60)
    try:
        settings = ServerSettings(issuers=(deployment.idp.issuer, other.issuer), required_scopes=("mcp:tools",))
        tokens = [access_token(idp, "alice", resource=deployment.url) for idp in (deployment.idp, other)]

        async def users() -> list[str]:
            async with httpx.AsyncClient() as http:
                validator = TokenValidator(settings, deployment.url, http)
                return [(await validator.validate(token)).user_id for token in tokens]

        assert anyio.run(users) == [f"{deployment.idp.issuer}|alice", f"{other.issuer}|alice"]
    finally:
        other.stop()


def test_opaque_tokens_are_checked_by_introspection(tmp_path):
    with deployed(tmp_path, RESOURCE_FORMAT="opaque") as running:
        token = access_token(running.idp, "ivan", resource=running.url)
        assert token.count(".") != 2
        assert initialize(running.url, token).status_code == 200
        elsewhere = access_token(running.idp, "ivan", resource="http://127.0.0.1:1/other/mcp")
        refused = initialize(running.url, elsewhere)
        assert refused.status_code == 401 and "not issued for this server" in _params(refused)["error_description"]
