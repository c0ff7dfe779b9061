"""The loopback server that receives OAuth callbacks, and the small pages a person sees there.

It listens on 127.0.0.1 (configurable) and answers three things only:
- `GET /auth/PROVIDER/callback?code=...&state=...` (or `?error=...`): the end of an authorization;
- `GET /auth/PROVIDER/form?state=...`: a form to paste a token, API key, or username and password;
- `POST /auth/PROVIDER/form`: that form's submission.
Every page says what happened in plain words and has no links out (never an open redirect). Requests
naming another Host are refused (DNS rebinding). Request
lines are not logged (they carry authorization codes); pages are sent with `no-store`, no referrer and
a strict content security policy.

Every pocket process of a user shares the one callback port (and so the one redirect URI registered at
providers): the first to need it listens, the others find a pocket server there, hand out their URLs
all the same (the pending requests are shared through the store, see consent.py), and keep trying to
bind in the background so that one of them takes over when the holder exits.
"""

from __future__ import annotations

import errno
import html
import http.client
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, quote, urlsplit

from runner.errors import SettingsError
from runner.settings import CredentialSettings

log = logging.getLogger(__name__)
SERVER_NAME = "pocket-auth"
_TAKE_OVER_EVERY = 0.5  # seconds between attempts to bind a port another pocket process holds


class PortInUse(SettingsError):
    """The callback port is taken (by another pocket process, or by some other program)."""


@dataclass(frozen=True)
class Page:
    status: int
    title: str
    message: str
    kind: str = "info"  # success, failure, form
    form: str = ""  # pre-rendered form HTML (already escaped)


_STYLE = """
body{font-family:system-ui,sans-serif;max-width:36rem;margin:4rem auto;padding:0 1rem;color:#1f2328}
h1{font-size:1.4rem} .success h1{color:#1a7f37} .failure h1{color:#cf222e}
label{display:block;margin:.8rem 0 .2rem} input{width:100%;padding:.4rem;font:inherit;box-sizing:border-box}
button{margin-top:1rem;padding:.5rem 1.2rem;font:inherit}
"""


def render(page: Page) -> bytes:
    body = (
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>"
        "<meta name='viewport' content='width=device-width, initial-scale=1'>"
        f"<title>{html.escape(page.title)} - pocket</title><style>{_STYLE}</style></head>"
        f"<body class='{page.kind}'><main><h1 id='title'>{html.escape(page.title)}</h1>"
        f"<p id='message'>{html.escape(page.message)}</p>{page.form}</main></body></html>"
    )
    return body.encode("utf-8")


def page_headers(length: int) -> list[tuple[str, str]]:
    """The headers every page is sent with: never cached, no referrer, nothing loaded or framed."""
    return [
        ("Content-Type", "text/html; charset=utf-8"),
        ("Content-Length", str(length)),
        ("Cache-Control", "no-store"),
        ("Referrer-Policy", "no-referrer"),
        ("X-Content-Type-Options", "nosniff"),
        ("X-Frame-Options", "DENY"),
        (
            "Content-Security-Policy",
            "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'",
        ),
    ]


def token_form(action: str, state: str, fields: list[tuple[str, str, bool]], help_text: str | None) -> str:
    inputs = "".join(
        f"<label for='{html.escape(name)}'>{html.escape(label)}</label>"
        f"<input id='{html.escape(name)}' name='{html.escape(name)}' type='{'password' if secret else 'text'}' "
        "required autocomplete='off' spellcheck='false'>"
        for name, label, secret in fields
    )
    help_html = f"<p id='help'>{html.escape(help_text)}</p>" if help_text else ""
    return (
        f"{help_html}<form id='credential-form' method='post' action='{html.escape(action)}'>"
        f"<input type='hidden' name='state' value='{html.escape(state)}'>{inputs}"
        "<button type='submit' id='save'>Save</button></form>"
    )


Handler = Callable[[str, str, str, dict[str, str]], Page]  # (method, provider, action, params) -> Page


class CallbackServer:
    """A ThreadingHTTPServer on a daemon thread, delegating every request to `handle`."""

    def __init__(self, host: str, port: int, handle: Handler, *, public_hosts: tuple[str, ...] = ()):
        self._handle = handle
        self._public_hosts = {h.lower() for h in public_hosts}
        self._in_flight = 0  # requests being answered: `close` lets them finish (a browser gets its page)
        self._idle = threading.Condition()
        outer = self

        class _RequestHandler(BaseHTTPRequestHandler):
            server_version = SERVER_NAME
            sys_version = ""

            def log_message(
                self, format: str, *args: Any
            ) -> None:  # request lines carry authorization codes: never logged
                return

            def _send(self, page: Page) -> None:
                body = render(page)
                self.send_response(page.status)
                for name, value in page_headers(len(body)):
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(body)

            def _route(self, method: str, params: dict[str, str]) -> None:
                with outer._idle:
                    outer._in_flight += 1
                try:
                    self._answer(method, params)
                finally:
                    with outer._idle:
                        outer._in_flight -= 1
                        outer._idle.notify_all()

            def _answer(self, method: str, params: dict[str, str]) -> None:
                parts = urlsplit(self.path).path.strip("/").split("/")
                if (self.headers.get("Host") or "").lower() not in outer.allowed_hosts:
                    # A page elsewhere reaching the loopback port through DNS rebinding names another host.
                    page = Page(421, "Wrong address", "This server only answers on its own address.", "failure")
                elif len(parts) == 3 and parts[0] == "auth" and parts[2] in ("callback", "form"):
                    try:
                        page = outer._handle(method, parts[1], parts[2], params)
                    except Exception as exc:  # a bug of ours: say so, never a traceback with secrets
                        page = Page(
                            500, "Something went wrong", f"pocket could not finish: {type(exc).__name__}", "failure"
                        )
                else:
                    page = Page(404, "Not found", "There is nothing here.", "failure")
                self._send(page)

            def do_GET(self) -> None:
                query = parse_qs(urlsplit(self.path).query, keep_blank_values=True)
                self._route("GET", {k: v[0] for k, v in query.items()})

            def do_POST(self) -> None:
                declared = self.headers.get("Content-Length") or "0"
                length = int(declared) if declared.isdigit() else -1  # never a negative read (= to EOF)
                if not 0 <= length <= 64 * 1024:
                    self._send(Page(413, "Too large", "That form is too large or has no valid length.", "failure"))
                    return
                raw = self.rfile.read(length).decode("utf-8", "replace")
                form = parse_qs(raw, keep_blank_values=True)
                self._route("POST", {k: v[0] for k, v in form.items()})

        try:
            self._server = ThreadingHTTPServer((host, port), _RequestHandler)
        except OSError as exc:
            kind = PortInUse if exc.errno == errno.EADDRINUSE else SettingsError
            raise kind(
                f"cannot listen for authorization callbacks on {host}:{port}: {exc.strerror}; "
                "set credentials.callback_port to a free port"
            ) from None
        self._server.daemon_threads = True
        self.host, self.port = self._server.server_address[:2]
        names = {str(self.host), "127.0.0.1", "localhost", "[::1]"}
        self.allowed_hosts = {f"{name}:{self.port}" for name in names} | self._public_hosts
        self._thread = threading.Thread(
            target=self._server.serve_forever, args=(0.05,), name="pocket-auth-callback", daemon=True
        )
        self._thread.start()

    def close(self, grace: float = 30.0) -> None:
        """Stop accepting, let the requests being answered finish (up to `grace` seconds), then close."""
        self._server.shutdown()
        with self._idle:
            self._idle.wait_for(lambda: self._in_flight == 0, timeout=grace)
        self._server.server_close()
        self._thread.join(timeout=5)

    def __repr__(self) -> str:
        return f"CallbackServer({self.host}:{self.port})"


def pocket_listens(host: str, port: int) -> bool:
    """Whether a pocket callback server answers on host:port (so it can complete this process's requests)."""
    connection = http.client.HTTPConnection(host, port, timeout=2)
    try:
        connection.request("GET", "/auth/", headers={"Host": f"{host}:{port}"})
        response = connection.getresponse()
        response.read()
        return (response.getheader("Server") or "").startswith(SERVER_NAME)
    except (OSError, http.client.HTTPException):
        return False
    finally:
        connection.close()


class CallbackSite:
    """The callback server, started on first need, and the URLs that reach it (through a proxy when
    `public_base_url` is set). When another pocket process holds the port, its server receives this
    process's callbacks, and this one takes the port over once it is free."""

    def __init__(self, config: CredentialSettings, handle: Handler):
        self._config = config
        self._handle = handle
        self._server: CallbackServer | None = None
        self._standby: threading.Thread | None = None  # trying to bind while another process holds the port
        self._closing = threading.Event()
        self._lock = threading.Lock()
        self._elsewhere: str | None = None  # the base URL of another server of this process serving the pages

    def hand_over(self, base_url: str) -> None:
        """Callbacks land at another HTTP server of this process (the MCP server's, at `base_url`): no loopback
        server is started, and URLs name that one."""
        with self._lock:
            self._elsewhere = base_url.rstrip("/")

    def _start(self) -> CallbackServer:
        public = urlsplit(self._config.public_base_url).netloc if self._config.public_base_url else ""
        return CallbackServer(
            self._config.callback_host,
            self._config.callback_port,
            self._handle,
            public_hosts=(public,) if public else (),
        )

    def listen(self) -> CallbackServer | None:
        """Make sure callbacks have somewhere to land before a URL is shown: this process's server (returned),
        or (None) another pocket process's on the same port. A port another program holds is a SettingsError."""
        with self._lock:
            if self._server is None and self._standby is None and self._elsewhere is None:
                try:
                    self._server = self._start()
                except PortInUse:
                    host, port = self._config.callback_host, self._config.callback_port
                    if not port or not pocket_listens(host, port):
                        raise
                    log.info("another pocket process receives authorization callbacks on %s:%s", host, port)
                    self._closing.clear()
                    self._standby = threading.Thread(target=self._take_over, name="pocket-auth-standby", daemon=True)
                    self._standby.start()
            return self._server

    def _take_over(self) -> None:
        """Bind the port once the process holding it lets it go, so callbacks keep landing somewhere."""
        while not self._closing.wait(_TAKE_OVER_EVERY):
            try:
                server = self._start()
            except SettingsError:
                continue
            with self._lock:
                closing = self._closing.is_set()
                if not closing:
                    self._server, self._standby = server, None
            if closing:  # closed while binding
                server.close()
            else:
                log.info("now receiving authorization callbacks on %s", server)
            return

    def holds_port(self) -> bool:
        """Whether this process's own server listens (rather than another pocket process's)."""
        with self._lock:
            return self._server is not None

    def base_url(self) -> str:
        if self._elsewhere:
            return self._elsewhere
        if self._config.public_base_url:
            return self._config.public_base_url.rstrip("/")
        server = self.listen()
        host, port = (server.host, server.port) if server else (self._config.callback_host, self._config.callback_port)
        host = f"[{host}]" if ":" in str(host) else host
        return f"http://{host}:{port}"

    def url(self, provider: str, action: str) -> str:
        """Where the callback server answers `action` ("callback", "form") for `provider`."""
        return f"{self.base_url()}/auth/{quote(provider, safe='')}/{action}"

    def close(self) -> None:
        self._closing.set()
        with self._lock:
            server, self._server = self._server, None
            standby, self._standby = self._standby, None
        if standby is not None:
            standby.join(timeout=5)
        if server is not None:
            server.close()
