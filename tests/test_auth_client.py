"""The OAuth client's own defences, each tested so that removing it fails a test: the `iss` mix-up check
(RFC 9207), the HTTP timeout of every request to an authorization server, and never following a redirect
(a 307 would resend the client secret and the refresh token wherever it points).

Against the real authorization server (oidc-provider), with its token endpoint made slow by a proxy that
waits before forwarding, and drops a request whose client gave up meanwhile (so a timed-out refresh never
reaches the server and rotates the token behind our back).
"""

from __future__ import annotations

import select
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit, urlunsplit

import httpx
import pytest

from runner.auth import Authenticator
from runner.auth.store import ACTIVE
from runner.errors import AuthUnavailableError
from runner.manifest import AuthSpec
from tests.auth_helpers import SPEC, authorize, url_from, with_query
from tests.fixtures_oauth import idp_entry


class SlowProxy:
    """POST /token: waits `delay` seconds, then forwards to `target` unless the client has hung up."""

    def __init__(self, target: str, delay: float):
        self.target, self.delay = target, delay
        self.forwarded = 0
        self.dropped = threading.Event()
        outer = self

        class _Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                return

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                time.sleep(outer.delay)
                if _hung_up(self.connection):
                    outer.dropped.set()
                    return
                headers = {k: v for k, v in self.headers.items() if k.lower() in ("authorization", "content-type")}
                answer = httpx.post(outer.target, content=body, headers=headers)
                outer.forwarded += 1
                self.send_response(answer.status_code)
                self.send_header("Content-Type", answer.headers.get("content-type", "application/json"))
                self.send_header("Content-Length", str(len(answer.content)))
                self.end_headers()
                self.wfile.write(answer.content)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/token"
        threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def _hung_up(connection: socket.socket) -> bool:
    readable, _, _ = select.select([connection], [], [], 0)
    if not readable:
        return False
    try:
        return connection.recv(1, socket.MSG_PEEK) == b""
    except OSError:
        return True


@pytest.fixture
def slow_token_endpoint(oidc_server) -> Iterator[SlowProxy]:
    proxy = SlowProxy(f"{oidc_server.issuer}/token", delay=2.5)
    yield proxy
    proxy.close()


def expire(auth: Authenticator) -> Any:
    """Make the user's stored grant due for a refresh at the next call; return it as it was."""
    stored = auth.store.get("default", "testidp")
    auth.store.put(replace(stored, expires_at=time.time() - 1))
    return stored


# -- the iss mix-up check (RFC 9207) ---------------------------------------------------------------


def test_a_callback_naming_another_issuer_is_refused_and_its_code_never_exchanged(authenticator, person, oidc_server):
    callback = person.authorize(url_from(authenticator))
    assert parse_qs(urlsplit(callback).query)["iss"] == [oidc_server.issuer]  # the server sends iss
    mark = oidc_server.mark()
    page = person.visit(with_query(callback, iss="https://attacker.example"))
    assert page.status_code == 400 and "unexpected server" in page.text
    assert authenticator.wait(5) == {"testidp": "failed: the callback came from another issuer"}
    assert authenticator.store.get("default", "testidp") is None
    assert not any("authorization_code" in event for event in oidc_server.events(mark))  # the code was never sent


def test_a_callback_without_iss_from_a_server_that_always_sends_it_is_refused(authenticator, person, oidc_server):
    callback = person.authorize(url_from(authenticator))
    query = {k: v[0] for k, v in parse_qs(urlsplit(callback).query).items() if k != "iss"}
    stripped = urlunsplit(urlsplit(callback)._replace(query=urlencode(query)))
    mark = oidc_server.mark()
    page = person.visit(stripped)
    assert page.status_code == 400 and "did not say which server sent it" in page.text
    assert authenticator.wait(5) == {"testidp": "failed: the callback named no issuer, though the provider always does"}
    assert authenticator.store.get("default", "testidp") is None
    assert not any("authorization_code" in event for event in oidc_server.events(mark))


# -- the HTTP timeout --------------------------------------------------------------------------------


def test_a_token_endpoint_slower_than_the_timeout_fails_the_call_in_time_and_keeps_the_grant(
    authenticator, person, oidc_server, make_settings, slow_token_endpoint
):
    authorize(authenticator, person)
    stored = expire(authenticator)
    entry = idp_entry(oidc_server.issuer, token_url=slow_token_endpoint.url)
    impatient = Authenticator(make_settings({"testidp": entry}, http_timeout_seconds=1))
    try:
        started = time.monotonic()
        with pytest.raises(AuthUnavailableError) as caught:
            impatient.environment(SPEC, "default")
        elapsed = time.monotonic() - started
    finally:
        impatient.close()
    assert elapsed < slow_token_endpoint.delay - 0.5, elapsed  # the 1 s limit, not the endpoint's 2.5 s
    assert "ReadTimeout" in str(caught.value) and "try again later" in str(caught.value)
    assert slow_token_endpoint.dropped.wait(10) and slow_token_endpoint.forwarded == 0
    kept = authenticator.store.get("default", "testidp")
    assert kept.status == ACTIVE and kept.value("refresh_token") == stored.value("refresh_token")
    assert authenticator.environment(SPEC, "default")["TESTIDP_TOKEN"] != stored.value("token")  # still refreshes


def test_a_slow_token_endpoint_within_the_timeout_answers(
    authenticator, person, oidc_server, make_settings, slow_token_endpoint
):
    """The other side of the test above: the slow endpoint works, it was the 1 s limit that cut it."""
    authorize(authenticator, person)
    stored = expire(authenticator)
    patient = Authenticator(
        make_settings({"testidp": idp_entry(oidc_server.issuer, token_url=slow_token_endpoint.url)})
    )
    try:
        assert patient.environment(SPEC, "default")["TESTIDP_TOKEN"] != stored.value("token")
    finally:
        patient.close()
    assert slow_token_endpoint.forwarded == 1


# -- redirects are never followed ------------------------------------------------------------------


def test_a_token_endpoint_redirecting_elsewhere_is_not_followed(make_settings, stand_in):
    """A 307 keeps the method and the body: following it would hand the refresh token and the client secret to
    whatever the Location names."""
    from pydantic import SecretStr

    from runner.auth.store import Credential

    stand_in.routes["POST /token"] = lambda _r: (307, {"Location": f"{stand_in.url}/elsewhere"}, b"")
    stand_in.json("POST /elsewhere", {"access_token": "lin-new", "expires_in": 3600})
    settings = make_settings({"linear": {"token_url": f"{stand_in.url}/token", "client_id": "c", "client_secret": "s"}})
    auth = Authenticator(settings)
    try:
        expired = Credential(
            user_id="default", provider="linear", kind="oauth2", expires_at=time.time() - 10,
            secrets={"token": SecretStr("lin-old"), "refresh_token": SecretStr("lin-refresh")},
        )  # fmt: skip
        auth.store.put(expired)
        with pytest.raises(AuthUnavailableError) as caught:
            auth.environment(AuthSpec(auth_provider="linear"), "default")
        assert "HTTP 307" in str(caught.value)
        assert [r.path for r in stand_in.requests] == ["/token"]  # nothing was sent to /elsewhere
        assert auth.store.get("default", "linear").value("refresh_token") == "lin-refresh"
    finally:
        auth.close()
