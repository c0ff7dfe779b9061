"""Fixtures for the auth tests: a real, strict authorization server and a person who clicks through it.

- `oidc_server`: panva's `oidc-provider` (tests/oidc/server.js) on 127.0.0.1, installed with `npm ci`
  from the committed lock file on first use. Access tokens live ACCESS_TOKEN_TTL seconds, so expiry
  and refresh are tested without long sleeps. Its token endpoint events are recorded (`events()`).
- `person`: the human in the loop, as an HTTP client that follows the authorization URL, posts the
  server's login and consent forms (or cancels), and returns the redirect to our callback.
- `auth_settings`: Settings for a provider "testidp" defined only in settings (discovered from the
  server's issuer) plus the callback port registered at the server.
- `stand_in`: a tiny HTTP server on 127.0.0.1 scripted per test, standing in for the token endpoints
  of Slack, GitHub, Google, Notion and Linear (or their APIs), recording every request.
"""

from __future__ import annotations

import json
import os
import re
import select
import shutil
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from html import unescape
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urljoin, urlsplit

import httpx
import pytest

from tests.helpers import free_port

OIDC_DIR = Path(__file__).resolve().parent / "oidc"
ACCESS_TOKEN_TTL = 3
CLIENT_ID = "pocket-test"
CLIENT_SECRET = "test-client-secret-3f9a1c0e7b"
PUBLIC_CLIENT_ID = "pocket-public"


def ensure_node_modules() -> None:
    if (OIDC_DIR / "node_modules" / "oidc-provider").is_dir():
        return
    npm = shutil.which("npm")
    if npm is None:
        pytest.fail("npm is needed for the auth tests (node 18+): run scripts/setup-test-deps.sh")
    result = subprocess.run(
        [npm, "ci", "--no-audit", "--no-fund"], cwd=OIDC_DIR, capture_output=True, text=True, timeout=300
    )
    if result.returncode != 0:
        pytest.fail(f"npm ci in {OIDC_DIR} failed:\n{result.stderr[-2000:]}")


class OidcServer:
    """oidc-provider in a child process we started (stopped by its pid)."""

    def __init__(self, clients: list[dict[str, Any]], ttl: int, *, port: int | None = None, **env: str):
        ensure_node_modules()
        self.clients = clients
        self.port = port or free_port()  # a port: restart a stopped server at the same issuer
        self.issuer = f"http://127.0.0.1:{self.port}"
        env = {
            **os.environ,
            "PORT": str(self.port),
            "ACCESS_TOKEN_TTL": str(ttl),
            "CLIENTS": json.dumps(clients),
            "NODE_ENV": "test",
            **env,
        }
        self._lines: list[str] = []
        self._ready = threading.Event()
        self.process = subprocess.Popen(
            ["node", "server.js"], cwd=OIDC_DIR, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
        )
        threading.Thread(target=self._read, daemon=True).start()
        if not self._ready.wait(20):
            self.stop()
            pytest.fail("oidc-provider did not start within 20 s")

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            line = line.strip()
            if line.startswith("ready "):
                self._ready.set()
            self._lines.append(line)

    def mark(self) -> int:
        return len(self._lines)

    def events(self, since: int = 0) -> list[str]:
        return [line[len("event ") :] for line in self._lines[since:] if line.startswith("event ")]

    def introspect(self, token: str) -> dict[str, Any]:
        response = httpx.post(
            f"{self.issuer}/token/introspection", data={"token": token}, auth=(CLIENT_ID, CLIENT_SECRET)
        )
        response.raise_for_status()
        return response.json()

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)


@pytest.fixture(scope="session")
def callback_port() -> int:
    return free_port()


def registered_clients(callback_port: int) -> list[dict[str, Any]]:
    redirect = f"http://127.0.0.1:{callback_port}/auth/testidp/callback"
    grants = ["authorization_code", "refresh_token", "urn:ietf:params:oauth:grant-type:device_code"]
    clients = [
        {
            "client_id": CLIENT_ID,
            "client_secret": CLIENT_SECRET,
            "redirect_uris": [redirect],
            "grant_types": grants,
            "token_endpoint_auth_method": "client_secret_basic",
        },
        {
            "client_id": PUBLIC_CLIENT_ID,
            "redirect_uris": [redirect],
            "grant_types": grants,
            "token_endpoint_auth_method": "none",
        },
    ]
    return clients


@pytest.fixture(scope="session")
def oidc_server(callback_port: int) -> Iterator[OidcServer]:
    server = OidcServer(registered_clients(callback_port), ACCESS_TOKEN_TTL)
    yield server
    server.stop()


@pytest.fixture
def own_oidc_server(callback_port: int) -> Iterator[Callable[..., OidcServer]]:
    """Start a server of this test's own, set up by environment variables (TOKEN_DELAY_MS, SPLIT_METADATA:
    see tests/oidc/server.js); it may be stopped mid-test. Each is stopped at the end."""
    started: list[OidcServer] = []

    def start(**env: str) -> OidcServer:
        server = OidcServer(registered_clients(callback_port), ACCESS_TOKEN_TTL, **env)
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


def idp_entry(issuer: str, **extra: Any) -> dict[str, Any]:
    return {
        "issuer": issuer,
        "client_id": CLIENT_ID,
        "client_secret": CLIENT_SECRET,
        "default_scopes": ["openid", "offline_access"],
        # oidc-provider issues a refresh token for offline_access only with prompt=consent.
        "authorization_params": {"prompt": "consent"},
        "env": {"TESTIDP_TOKEN": "{token}"},
        **extra,
    }


@pytest.fixture
def make_settings(tmp_path: Path, callback_port: int) -> Callable[..., Any]:
    """Settings with a private data dir; `auth` entries and `credentials` fields as keyword arguments."""
    from runner.settings import CredentialSettings, ProviderSettings, Settings

    def make(auth: dict[str, dict[str, Any]] | None = None, data_dir: Path | None = None, **credentials: Any) -> Any:
        options = {"callback_port": callback_port, "refresh_margin_seconds": 1.0, **credentials}
        return Settings(
            data_dir=data_dir or tmp_path / "data",
            cache_dir=tmp_path / "cache",
            auth={name: ProviderSettings(**entry) for name, entry in (auth or {}).items()},
            credentials=CredentialSettings(**options),
        )

    return make


@pytest.fixture
def auth_settings(make_settings: Callable[..., Any], oidc_server: OidcServer) -> Any:
    return make_settings({"testidp": idp_entry(oidc_server.issuer)})


@pytest.fixture
def authenticator(auth_settings: Any) -> Iterator[Any]:
    from runner.auth import Authenticator

    auth = Authenticator(auth_settings)
    yield auth
    auth.close()


_FORM = re.compile(r"<form[^>]*action=\"([^\"]+)\"[^>]*>(.*?)</form>", re.S)
_INPUT = re.compile(r"<input([^>]*)>")
_ATTR = re.compile(r"(\w+)=\"([^\"]*)\"")


@dataclass
class Person:
    """Someone at a browser: follows the authorization URL and answers the server's pages."""

    login: str = "alice"
    client: httpx.Client = field(default_factory=lambda: httpx.Client(follow_redirects=False, timeout=10))
    pages: list[str] = field(default_factory=list)

    def authorize(self, url: str, *, deny: bool = False, stop_at: str = "/auth/") -> str:
        """Click through until the server redirects to our callback; return that callback URL (not visited)."""
        for _ in range(20):
            response = self.client.get(url)
            while response.is_redirect:
                target = urljoin(str(response.url), response.headers["location"])
                if urlsplit(target).path.startswith(stop_at) and "/callback" in target:
                    return target
                response = self.client.get(target)
            self.pages.append(response.text)
            if response.status_code != 200:
                raise AssertionError(f"the authorization server answered {response.status_code}: {response.text[:500]}")
            form = _FORM.search(response.text)
            if form is None:
                raise AssertionError(f"no form on the page: {response.text[:500]}")
            action = urljoin(str(response.url), unescape(form.group(1)))
            fields = {}
            for tag in _INPUT.findall(form.group(2)):
                attrs = dict(_ATTR.findall(tag))
                if "name" in attrs:
                    fields[attrs["name"]] = unescape(attrs.get("value", ""))
            if deny:
                abort = re.search(r"href=\"([^\"]*/abort)\"", response.text)
                assert abort, "no cancel link"
                url = urljoin(str(response.url), unescape(abort.group(1)))
                continue
            if fields.get("prompt") == "login":
                fields.update(login=self.login, password="any")
            response = self.client.post(action, data=fields)
            while response.is_redirect:
                target = urljoin(str(response.url), response.headers["location"])
                if urlsplit(target).path.startswith(stop_at) and "/callback" in target:
                    return target
                response = self.client.get(target)
            url = str(response.url)
            if response.status_code == 200 and _FORM.search(response.text):
                self.pages.append(response.text)
                continue
        raise AssertionError("the authorization did not reach the callback in 20 steps")

    def approve_device(self, url: str, *, deny: bool = False) -> str:
        """Open a device grant's verification URL and answer every form; return the final page's text."""
        response = self.client.get(url, follow_redirects=True)
        for _ in range(20):
            form = _FORM.search(response.text)
            if form is None:
                return response.text
            fields = {}
            for tag in _INPUT.findall(form.group(2)):
                attrs = dict(_ATTR.findall(tag))
                if "name" in attrs:
                    fields[attrs["name"]] = unescape(attrs.get("value", ""))
            if fields.get("prompt") == "login":
                fields.update(login=self.login, password="any")
            if deny and fields.get("prompt") == "consent":
                abort = re.search(r"href=\"([^\"]*/abort)\"", response.text)
                assert abort, "no cancel link"
                return self.client.get(urljoin(str(response.url), unescape(abort.group(1))), follow_redirects=True).text
            action = urljoin(str(response.url), unescape(form.group(1)))
            response = self.client.post(action, data=fields, follow_redirects=True)
        raise AssertionError("the device approval did not finish in 20 steps")

    def visit(self, url: str) -> httpx.Response:
        """Open a URL (our callback, our form) as the browser would."""
        return self.client.get(url)


@pytest.fixture
def person() -> Iterator[Person]:
    someone = Person()
    yield someone
    someone.client.close()


# -- a scripted stand-in for provider token endpoints and APIs ---------------------------------


@dataclass
class Recorded:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes

    def form(self) -> dict[str, str]:
        return {k: v[0] for k, v in parse_qs(self.body.decode()).items()}

    def json(self) -> Any:
        return json.loads(self.body)


Route = Callable[[Recorded], tuple[int, dict[str, str], bytes]]


class StandIn:
    """Routes "METHOD /path" to a function returning (status, headers, body); records every request."""

    def __init__(self) -> None:
        self.routes: dict[str, Route] = {}
        self.requests: list[Recorded] = []
        outer = self

        class _Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                return

            def _serve(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                parts = urlsplit(self.path)
                request = Recorded(
                    self.command,
                    parts.path,
                    {k: v[0] for k, v in parse_qs(parts.query).items()},
                    {k.lower(): v for k, v in self.headers.items()},
                    self.rfile.read(length) if length else b"",
                )
                outer.requests.append(request)
                route = outer.routes.get(f"{self.command} {parts.path}")
                status, headers, body = route(request) if route else (404, {"Content-Type": "text/plain"}, b"nope")
                self.send_response(status)
                for key, value in headers.items():
                    self.send_header(key, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = do_DELETE = _serve

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True).start()

    def json(self, method_path: str, payload: Any, status: int = 200) -> None:
        body = json.dumps(payload).encode()
        self.routes[method_path] = lambda _r: (status, {"Content-Type": "application/json"}, body)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def stand_in() -> Iterator[StandIn]:
    server = StandIn()
    yield server
    server.close()


def wait_for(predicate: Callable[[], bool], timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.05)


# -- a real headless browser (Debian's chromium), driven over the DevTools protocol -------------


class Browser:
    """Chromium with `--remote-debugging-pipe`: DevTools messages on fds 3/4, no extra Python package."""

    def __init__(self, executable: str, profile: Path):
        to_chrome_r, self._to_chrome = os.pipe()
        self._from_chrome, from_chrome_w = os.pipe()

        def wire_fds() -> None:  # in the child: fd 3 reads our commands, fd 4 writes the answers
            import fcntl

            read_end = fcntl.fcntl(to_chrome_r, fcntl.F_DUPFD, 10)  # out of the way of 3 and 4 first
            write_end = fcntl.fcntl(from_chrome_w, fcntl.F_DUPFD, 10)
            os.dup2(read_end, 3)
            os.dup2(write_end, 4)

        self.process = subprocess.Popen(
            [
                executable, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-dev-shm-usage",
                f"--user-data-dir={profile}", "--remote-debugging-pipe", "about:blank",
            ],
            pass_fds=(3, 4, to_chrome_r, from_chrome_w),
            preexec_fn=wire_fds,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        os.close(to_chrome_r)
        os.close(from_chrome_w)
        self._buffer = b""
        self._next_id = 0
        target = self.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        self._session = self.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]

    def send(self, method: str, params: dict[str, Any] | None = None, *, session: bool = False) -> dict[str, Any]:
        self._next_id += 1
        message: dict[str, Any] = {"id": self._next_id, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = self._session
        os.write(self._to_chrome, json.dumps(message).encode() + b"\0")
        while True:
            while b"\0" not in self._buffer:
                readable, _, _ = select.select([self._from_chrome], [], [], 30)
                if not readable:
                    raise AssertionError(f"chromium did not answer {method} within 30 s")
                chunk = os.read(self._from_chrome, 1 << 16)
                if not chunk:
                    raise AssertionError("chromium closed the DevTools pipe")
                self._buffer += chunk
            raw, self._buffer = self._buffer.split(b"\0", 1)
            answer = json.loads(raw)
            if answer.get("id") == self._next_id:
                if "error" in answer:
                    raise AssertionError(f"DevTools {method}: {answer['error']}")
                return answer.get("result", {})

    def open(self, url: str) -> None:
        self.send("Page.navigate", {"url": url}, session=True)

    def js(self, expression: str) -> Any:
        result = self.send("Runtime.evaluate", {"expression": expression, "returnByValue": True}, session=True)
        return result.get("result", {}).get("value")

    def wait_for(self, expression: str, timeout: float = 15) -> Any:
        """Poll a JavaScript expression until it is truthy (pages navigate on their own)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                value = self.js(f"(() => {{ const v = ({expression}); return v instanceof Node ? true : v; }})()")
            except AssertionError:
                value = None  # the page is between documents
            if value:
                return value
            time.sleep(0.1)
        raise AssertionError(f"timed out waiting for {expression!r} at {self.js('location.href')}")

    def close(self) -> None:
        try:
            os.write(self._to_chrome, json.dumps({"id": 0, "method": "Browser.close"}).encode() + b"\0")
        except OSError:
            pass
        try:
            self.process.wait(5)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(5)
        os.close(self._to_chrome)
        os.close(self._from_chrome)


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Browser]:
    executable = shutil.which("chromium") or shutil.which("chromium-browser")
    if executable is None:
        pytest.fail("Debian's chromium is needed for the browser page checks: run scripts/setup-test-deps.sh")
    chrome = Browser(executable, tmp_path / "chromium-profile")
    yield chrome
    chrome.close()
