"""Consent links that only their user can follow (the MCP specification's defence against consent phishing).

A call that needs a provider's consent is answered with the provider's authorization URL, bound by its `state`
to the user whose call opened it. Forwarded to someone else of the same server, that person's grant would be
stored as the first user's. So, with `[server] login_client_id` set, the link handed out is one of this
server's (`/auth/confirm?link=...`): whoever opens it first logs in at the server's authorization server (an
OpenID Connect login with PKCE, a nonce, and a cookie tying the login to this browser), and only the user the
link was made for goes on to the provider; anyone else is told the link is not theirs.
"""

from __future__ import annotations

import dataclasses
import functools
import secrets
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx

from runner.auth.callback import Page, page_headers, render
from runner.auth.oauth import pkce_pair
from runner.invocation import Invocation
from runner.server.resource import Refusal, TrustedIssuer
from runner.settings import ServerSettings

__all__ = ["ConsentLinks"]

CONFIRM = "/auth/confirm"
LOGIN_CALLBACK = "/auth/login/callback"
_COOKIE = "pocket_consent_login"


@dataclass(frozen=True)
class _Link:
    user_id: str
    url: str  # where the user goes once confirmed: the provider's authorization URL, or the credential form
    expires: float


@dataclass(frozen=True)
class _Login:
    link: str
    verifier: str
    nonce: str
    expires: float


class ConsentLinks:
    """Hands out links bound to a user (`guard`), and serves the pages that check who opens them (`front`)."""

    def __init__(self, settings: ServerSettings, issuer: TrustedIssuer, base_url: str, *, ttl: float) -> None:
        assert settings.login_client_id and settings.login_client_secret is not None
        self._settings = settings
        self._issuer = issuer
        self._base_url = base_url.rstrip("/")
        # The login callback's path as the browser sees it (behind a proxy publishing the server under a path too).
        self._cookie_path = urlsplit(self._base_url).path + LOGIN_CALLBACK
        self._ttl = ttl
        self._links: dict[str, _Link] = {}
        self._logins: dict[str, _Login] = {}

    def guard(self, invocation: Invocation, user_id: str) -> Invocation:
        """`invocation` with its authorization URL replaced by a link to the check page (the same link while
        that URL is the same)."""
        url = invocation.auth_url
        if not url:
            return invocation
        self._forget_expired()
        link = next((key for key, known in self._links.items() if known.url == url), None)
        if link is None:
            link = secrets.token_urlsafe(24)
            self._links[link] = _Link(user_id, url, time.time() + self._ttl)
        shown = f"{self._base_url}{CONFIRM}?{urlencode({'link': link})}"
        error = invocation.error.replace(url, shown) if invocation.error else invocation.error
        return dataclasses.replace(invocation, auth_url=shown, error=error)

    def original(self, shown: str) -> str:
        """The provider URL behind a link `guard` handed out."""
        known = self._links.get(parse_qs(shown.partition("?")[2]).get("link", [""])[0])
        return known.url if known else shown

    def _forget_expired(self) -> None:
        now = time.time()
        for table in (self._links, self._logins):
            for key in [key for key, entry in table.items() if entry.expires < now]:
                del table[key]

    def front(self, app: Any) -> Any:
        """`app` (ASGI) with the check pages in front of it."""
        return functools.partial(self._serve, app)

    async def _serve(self, app: Any, scope: dict[str, Any], receive: Any, send: Any) -> None:
        path = scope.get("path", "")
        if scope["type"] != "http" or path not in (CONFIRM, LOGIN_CALLBACK) or scope["method"] != "GET":
            await app(scope, receive, send)
            return
        query = {k: v[0] for k, v in parse_qs(scope.get("query_string", b"").decode("latin-1")).items()}
        self._forget_expired()
        if path == CONFIRM:
            await self._confirm(send, query.get("link", ""))
        else:
            await _send_page(send, await self._logged_in(query, _cookie(scope)), self._cookie_path)

    async def _confirm(self, send: Any, link: str) -> None:
        """Send the browser to log in at the server's authorization server, remembering which link it opened."""
        if link not in self._links:
            await _send_page(send, _UNKNOWN)
            return
        try:
            endpoint = (await self._issuer.metadata())["authorization_endpoint"]
        except (Refusal, KeyError):
            await _send_page(send, Page(503, "Try again later", "The login server cannot be reached.", "failure"))
            return
        state, nonce = secrets.token_urlsafe(32), secrets.token_urlsafe(16)
        verifier, challenge = pkce_pair()
        self._logins[state] = _Login(link, verifier, nonce, time.time() + self._ttl)
        query = {
            "client_id": self._settings.login_client_id,
            "response_type": "code",
            "scope": "openid",
            "redirect_uri": self._base_url + LOGIN_CALLBACK,
            "state": state,
            "nonce": nonce,
            "code_challenge": challenge,
            "code_challenge_method": "S256",
        }
        secure = "; Secure" if self._base_url.startswith("https:") else ""
        cookie = (
            f"{_COOKIE}={state}; Path={self._cookie_path}; HttpOnly; SameSite=Lax; Max-Age={int(self._ttl)}{secure}"
        )
        await _redirect(send, f"{endpoint}?{urlencode(query)}", cookie)

    async def _logged_in(self, query: dict[str, str], cookie: str | None) -> Page | str:
        """The end of the login: on to the provider (its URL) when the person is the link's user, else a page."""
        state = query.get("state", "")
        login = self._logins.pop(state, None) if state and cookie == state else None
        link = self._links.get(login.link) if login else None
        if login is None or link is None:
            return _UNKNOWN
        if query.get("error") or not query.get("code"):
            return Page(400, "Login failed", "The login server did not confirm who you are.", "failure")
        try:
            user = await self._user(query["code"], login)
        except Refusal as refusal:
            return Page(400, "Login failed", f"Your login could not be checked: {refusal.description}.", "failure")
        if user != link.user_id:
            return Page(
                403,
                "This link is not yours",
                "This authorization link was made for another user. Call the tool yourself to get your own link.",
                "failure",
            )
        return link.url

    async def _user(self, code: str, login: _Login) -> str:
        """Exchange the login's code and read the user from its verified ID token."""
        settings = self._settings
        assert settings.login_client_id and settings.login_client_secret is not None
        data = {
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": self._base_url + LOGIN_CALLBACK,
            "code_verifier": login.verifier,
        }
        auth = (settings.login_client_id, settings.login_client_secret.get_secret_value())
        try:
            response = await self._issuer.http.post(
                (await self._issuer.metadata())["token_endpoint"], data=data, auth=auth
            )
            id_token = response.json().get("id_token") if response.status_code == 200 else None
        except (httpx.HTTPError, ValueError, KeyError):
            id_token = None
        if not isinstance(id_token, str):
            raise Refusal("the login server gave no ID token")
        claims = await self._issuer.verify(
            id_token,
            leeway=settings.clock_skew_seconds,
            what="ID token",
            aud=settings.login_client_id,
            nonce=login.nonce,
        )
        user = claims.get(settings.user_claim)
        if not isinstance(user, str) or not user:
            raise Refusal(f"the ID token names no user (its {settings.user_claim!r} claim)")
        return f"{self._issuer.issuer}|{user}" if len(settings.issuers) > 1 else user


_UNKNOWN = Page(
    400,
    "Authorization link not recognised",
    "This link is unknown, was already used, or expired. Call the tool again for a new one.",
    "failure",
)


def _cookie(scope: dict[str, Any]) -> str | None:
    for name, value in scope.get("headers", []):
        if name.lower() == b"cookie":
            for part in value.decode("latin-1").split(";"):
                key, _, content = part.strip().partition("=")
                if key == _COOKIE:
                    return content
    return None


async def _send_page(send: Any, outcome: Page | str, cookie_path: str = LOGIN_CALLBACK) -> None:
    if isinstance(outcome, str):  # confirmed: on to the provider
        await _redirect(send, outcome, f"{_COOKIE}=; Path={cookie_path}; Max-Age=0")
        return
    content = render(outcome)
    head = [(name.lower().encode(), value.encode()) for name, value in page_headers(len(content))]
    await send({"type": "http.response.start", "status": outcome.status, "headers": head})
    await send({"type": "http.response.body", "body": content})


async def _redirect(send: Any, location: str, cookie: str) -> None:
    head = [
        (b"location", location.encode()),
        (b"set-cookie", cookie.encode()),
        (b"cache-control", b"no-store"),
        (b"referrer-policy", b"no-referrer"),
        (b"content-length", b"0"),
    ]
    await send({"type": "http.response.start", "status": 302, "headers": head})
    await send({"type": "http.response.body", "body": b""})
