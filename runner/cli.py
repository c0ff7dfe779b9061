"""The `pocket` command: validate, list, invoke and serve tools.

Exit codes: 0 success, 1 the tool failed, 2 bad input or manifest, 3 authorization needed,
130 interrupted (Ctrl-C), 143 terminated (SIGTERM), 141 stdout closed early (`pocket list X | head -1`).
Errors are printed as sentences, never as tracebacks.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from runner import __version__
from runner.errors import ExitCode, ManifestError, PocketError

if TYPE_CHECKING:
    from runner.auth.oauth import DeviceAuthorization, Revocation
    from runner.auth.providers import Provider
    from runner.daemon.protocol import Call, Output
    from runner.invocation import Cancellation, Invocation
    from runner.manifest import AuthSpec
    from runner.pocket import Pocket
    from runner.settings import Settings


_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def _shown(text: str, stream: Any) -> str:
    """Text for `stream`: on a terminal, control characters a tool printed (escape sequences that could move
    the cursor, retitle the window or hide text) are shown as `\\x1b`-style escapes instead of obeyed."""
    try:
        terminal = stream.isatty()
    except (AttributeError, ValueError):  # replaced by something without isatty, or closed
        terminal = False
    if not terminal or not _CONTROL.search(text):
        return text
    return _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", text)


def _say(message: str) -> None:
    print(_shown(f"pocket: {message}", sys.stderr), file=sys.stderr, flush=True)


class _StdoutClosed(Exception):
    """Writing to stdout failed with EPIPE: the reader went away. Not an error of the user, nor ours."""


def _out(text: str) -> None:
    """Print a line of results to stdout, telling a closed pipe apart from any other BrokenPipeError."""
    try:
        print(_shown(text, sys.stdout), flush=True)
    except BrokenPipeError:
        raise _StdoutClosed from None


class _Terminated(SystemExit):
    """SIGTERM: unwinds like Ctrl-C does, so every `with Pocket(...)` closes and removes its containers."""


def _on_sigterm(signum: int, frame: Any) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a second SIGTERM must not cut the cleanup short
    raise _Terminated(ExitCode.TERMINATED)


def _positive_seconds(text: str) -> float:
    """argparse type for a time limit: a positive, finite number of seconds."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, got {text!r}") from None
    if not (value > 0 and math.isfinite(value)):
        raise argparse.ArgumentTypeError(f"expected a positive, finite number of seconds, got {text!r}")
    return value


def _port(text: str) -> int:
    """argparse type for a TCP port to listen on: 1 to 65535."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a port number (1-65535), got {text!r}") from None
    if not 1 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"a port is a number from 1 to 65535, got {value}")
    return value


def _positive_count(text: str) -> int:
    """argparse type for a number of records: 1 or more."""
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number of 1 or more, got {text!r}")
    return int(text)


class _Parser(argparse.ArgumentParser):
    """argparse, but usage errors exit with our bad-input code (2 as well) and a hint."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.print_usage(sys.stderr)
        _say(f"{message} (see `{self.prog} --help`)")
        raise SystemExit(ExitCode.BAD_INPUT)


def _settings(args: argparse.Namespace) -> Any:
    from runner.settings import load_settings

    return load_settings(args.settings, args.secrets)


def _cmd_validate(args: argparse.Namespace) -> int:
    from runner.validation import validate

    checks = validate(args.sources, _settings(args), strict=args.strict, progress=_say)
    for check in checks:
        for problem in (*check.problems, *check.warnings):
            _out(str(problem))
        if args.verbose and check.valid and check.manifest is not None:
            _out(f"ok: {check.manifest.name} ({check.manifest.path})")
    valid = sum(check.valid for check in checks)
    problems, total = len(checks) - valid, len(checks)
    _out(f"{valid} valid tool{'s' if valid != 1 else ''}" + (f", {problems} invalid of {total}" if problems else ""))
    return ExitCode.BAD_INPUT if problems else ExitCode.OK


def _cmd_list(args: argparse.Namespace) -> int:
    from runner.pocket import load_tools

    manifests = load_tools(args.sources, _settings(args), progress=_say)
    if args.json:
        rows = [
            {
                "name": m.name,
                "description": m.tool.description,
                "auth_provider": m.auth.provider if m.auth else None,
                "auth_handler": m.auth.handler if m.auth else None,
                "scopes": list(m.auth.scopes) if m.auth else [],
                "input_schema": m.tool.input_schema,
                "folder": str(m.folder),
            }
            for m in manifests
        ]
        _out(json.dumps(rows, indent=2, ensure_ascii=False))
        return ExitCode.OK
    for m in manifests:
        auth = f"{m.auth.provider} [{', '.join(m.auth.scopes)}]" if m.auth else "no auth"
        _out(f"{m.name}: {m.tool.description}")
        _out(f"  auth: {auth}")
        fields = m.tool.input_schema.get("properties", {})
        required = set(m.tool.input_schema.get("required", []))
        for field, spec in fields.items():
            kind = spec.get("type", "any") if isinstance(spec, dict) else "any"
            _out(f"  {field}: {kind}{' (required)' if field in required else ''}")
    return ExitCode.OK


def _read_body(raw: str | None) -> Any:
    """The body from --body JSON, --body @file.json, --body - (stdin), or stdin when it is not a terminal."""
    if raw is None:
        if sys.stdin is None or sys.stdin.isatty():  # None: started with stdin closed (`<&-`)
            raise PocketError("no body given: pass --body JSON, --body @file.json, or pipe JSON on stdin")
        raw = "-"
    if raw == "-" and sys.stdin is None:
        raise PocketError("--body - reads the body from stdin, but stdin is closed")
    if raw == "-":
        stdin = getattr(sys.stdin, "buffer", None)  # bytes: we decode them, with a clear error if not UTF-8
        data, source, empty = (stdin.read() if stdin is not None else sys.stdin.read()), "stdin", "the body on stdin"
    elif raw.startswith("@"):
        source, empty = raw[1:], f"the body file {raw[1:]}"
        try:
            data = Path(source).read_bytes()
        except OSError as exc:
            raise PocketError(f"cannot read the body file {source}: {exc.strerror}") from None
    else:
        data, source, empty = raw, "--body", "the body given with --body"
    if isinstance(data, bytes):
        try:
            data = data.decode("utf-8-sig")  # the byte-order mark some editors write is not a JSON error
        except UnicodeDecodeError as exc:
            raise PocketError(
                f"the body from {source} is not UTF-8 text (byte 0x{data[exc.start]:02x} at offset {exc.start}): "
                "JSON must be UTF-8"
            ) from None
    if not data.strip():
        raise PocketError(f"{empty} is empty: give a JSON object, such as {{}}")
    try:
        return json.loads(data)
    except json.JSONDecodeError as exc:
        raise PocketError(
            f"the body from {source} is not valid JSON: {exc.msg} at line {exc.lineno}, column {exc.colno}"
        ) from None
    except RecursionError:
        raise PocketError(f"the body from {source} is nested too deeply to read") from None


def _cmd_invoke(args: argparse.Namespace) -> int:
    from runner.daemon.protocol import Call

    body = _read_body(args.body)
    call = Call(args.source, args.tool, body, args.user, dict(_key_value(v) for v in args.var), args.timeout)
    start_daemon = None
    if not args.no_daemon:
        from runner.daemon.client import invoke

        handed = invoke(call, args.settings, args.secrets, TERMINAL)
        if isinstance(handed, int):
            return handed
        start_daemon = handed.start
    from runner.pocket import Pocket

    settings = _settings(args)
    if start_daemon is not None:  # the settings load: the next command finds a process serving them
        start_daemon()
    with Pocket([call.source], settings=one_shot(settings), progress=_say) as pocket:
        answer = call_tool(pocket, call)
    return show(answer, call, TERMINAL)


def one_shot(settings: Settings) -> Settings:
    """Settings for one call, then exit: a pool of started containers would only be started to be removed."""
    return settings.model_copy(update={"sandbox": settings.sandbox.model_copy(update={"pool_size": 0})})


class Answer(NamedTuple):
    """What `pocket invoke` prints about a call: its result and, when authorization is needed, what to log in to."""

    result: Invocation
    auth: AuthSpec | None
    scopes: tuple[str, ...]  # every scope the loaded tools of the auth provider need


def call_tool(pocket: Pocket, call: Call, cancellation: Cancellation | None = None) -> Answer:
    """Run `call` with `pocket` (open until this returns); `cancellation` stops it from another thread."""
    options: dict[str, Any] = {"user_id": call.user, "variables": call.variables, "timeout": call.timeout}
    if cancellation is None:
        result = pocket.invoke(call.tool, call.body, **options)
    else:  # the local pocket process: its command's Ctrl-C kills the call's container (`invoke` takes no Cancellation)
        result = pocket._invoke(call.tool, call.body, cancellation=cancellation, **options)
    auth = pocket.tools[call.tool].auth if call.tool in pocket.tools else None
    # Every scope the loaded tools of that provider need: a login for fewer would be asked again next time.
    scopes = tuple(pocket.authenticator.required_scopes(auth.provider)) if auth is not None else ()
    return Answer(result, auth, scopes)


def show(answer: Answer, call: Call, output: Output) -> int:
    """Print what `pocket invoke` prints about a call; its exit code."""
    from runner.invocation import Outcome

    result, auth = answer.result, answer.auth
    if result.outcome is Outcome.AUTH_REQUIRED and result.auth_url and auth is not None:
        # The URL in the result dies with this process (its callback server stops): log in on its own.
        import shlex

        handler = f" --handler {auth.handler}" if auth.handler else ""
        scope = "".join(f" --scope {shlex.quote(s)}" for s in answer.scopes)
        output.say(
            f"{auth.provider} authorization is needed for user {call.user!r}: run "
            f"`pocket auth login {auth.provider}{handler} --user {call.user}{scope}`, then invoke again"
        )
        return ExitCode.AUTH_REQUIRED
    if result.ok:
        output.out(result.text())
        return ExitCode.OK
    error = result.error or "the tool failed"
    if result.stdout.strip():
        output.out(result.stdout.rstrip("\n"))
    unquoted = _unquoted_stderr(result.stderr, error)
    if unquoted:
        output.err(unquoted)
    output.say(error)
    if result.auth_url:
        output.say(f"open this URL to authorize: {result.auth_url}")
    return result.outcome.exit_code


class _Terminal:
    """The command's own stdout and stderr (an `Output`)."""

    def out(self, text: str) -> None:
        _out(text)

    def say(self, message: str) -> None:
        _say(message)

    def err(self, text: str) -> None:
        print(_shown(text, sys.stderr), file=sys.stderr)


TERMINAL = _Terminal()


def _unquoted_stderr(stderr: str, error: str) -> str:
    """The tool's stderr minus its last lines when the error already quotes them, so nothing shows twice."""
    lines = stderr.rstrip("\n").splitlines()
    for keep in range(len(lines) + 1):
        if "\n".join(lines[keep:]).strip() in error:
            return "\n".join(lines[:keep])
    return "\n".join(lines)


def _read_secret(prompt: str, *, secret: bool) -> str:
    """One value from the terminal (no echo for secrets) or, when stdin is not a terminal, one line of it."""
    if sys.stdin is None:  # started with stdin closed (`<&-`)
        raise PocketError(f"expected a value on stdin for {prompt.rstrip(': ')}, but stdin is closed")
    if sys.stdin.isatty():
        import getpass

        try:
            value = getpass.getpass(prompt, stream=sys.stderr) if secret else input(prompt)
        except EOFError:  # Ctrl-D at the prompt
            print(file=sys.stderr)
            raise PocketError(f"no value entered for {prompt.rstrip(': ')}") from None
    else:
        value = sys.stdin.readline()
        if not value:
            raise PocketError(f"expected a value on stdin for {prompt.rstrip(': ')}")
    return value.strip()  # a pasted token often carries spaces or a newline (the web form strips them too)


def _cmd_auth(args: argparse.Namespace) -> int:
    import time

    from runner.auth import Authenticator
    from runner.auth.results import GrantState

    auth = Authenticator(_settings(args))
    try:
        if args.auth_command == "status":
            rows = auth.status(None if args.all_users else args.user, args.provider)
            if args.json:
                _out(json.dumps([row.as_json() for row in rows], indent=2))
            elif not rows:
                _out("no stored credentials" + (f" for user {args.user!r}" if not args.all_users else ""))
            for row in rows if not args.json else []:
                if row.problem is not None:
                    _out(f"{row.provider} ({row.user}): unreadable: {row.problem}")
                    continue
                when = "no expiry" if row.expires_at is None else f"expires in {int(row.expires_at - time.time())} s"
                scopes = f" [{', '.join(row.scopes)}]" if row.scopes else ""
                _out(f"{row.provider} ({row.user}): {row.kind}, {row.status}{scopes}, {when}")
            return ExitCode.OK
        if args.auth_command == "logout":
            logout = auth.logout(args.provider, user_id=args.user)
            if not logout.deleted:
                _say(f"no stored {args.provider} credential for user {args.user!r}")
                return ExitCode.OK
            revocation = _revocation(args.provider, logout.revocation)
            _say(f"forgot the {args.provider} credential of user {args.user!r}{revocation}")
            return ExitCode.OK
        login = auth.login(
            args.provider,
            _LoginPrompts(args.user),
            user_id=args.user,
            handler=args.handler,
            device=args.device,
            scopes=args.scope,
            timeout=args.timeout,
        )
        title, outcome = login.provider.title, login.outcome
        if login.kind != "oauth2":
            _say(f"stored the {title} {login.kind} credential of user {args.user!r} (encrypted)")
            return ExitCode.OK
        if outcome.state is GrantState.PARTIAL:
            _say(
                f"{title} is authorized for user {args.user!r}, but not for everything asked ({outcome}): "
                "the tools that need the rest cannot run until it is granted"
            )
            return ExitCode.AUTH_REQUIRED
        if outcome.state is not GrantState.AUTHORIZED:
            _say(f"{title} was not authorized: {outcome}")
            return ExitCode.AUTH_REQUIRED
        _say(f"{title} is authorized for user {args.user!r}")
        return ExitCode.OK
    finally:
        auth.close()


class _LoginPrompts:
    """`Authenticator.login`'s questions and notices, on the terminal: notices to stderr, the URL to stdout."""

    def __init__(self, user: str):
        self._user = user

    def fallback(self, provider: Provider, kind: str, how_to_configure: str) -> None:
        _say(
            f"no OAuth client is configured for {provider.title}, so this asks for a {kind}; "
            f"to sign in with OAuth instead, {how_to_configure}"
        )

    def value(self, provider: Provider, label: str, *, secret: bool) -> str:
        return _read_secret(f"{provider.title} {label.lower()}: ", secret=secret)

    def device_code(self, device: DeviceAuthorization) -> None:
        _say(f"on any device, open {device.verification_uri_complete or device.verification_uri}")
        _say(f"and enter the code {device.user_code}")

    def authorization_url(self, provider: Provider, url: str) -> None:
        _say(f"open this URL to authorize {provider.title} for user {self._user!r}:")
        _out(url)


def _revocation(provider: str, revocation: Revocation) -> str:
    """What logout did at the provider, honestly: a token it did not revoke may still work there."""
    revoked, kept = revocation.revoked, revocation.not_revoked
    if revocation.complete:
        return "; revoked at the provider"
    if not kept:
        return "; the provider was not asked to revoke it"
    which = " and ".join(f"the {token} ({why})" for token, why in kept.items())
    done = f"; revoked the {' and the '.join(revoked)} at the provider, but not " if revoked else "; not revoked: "
    still = "it may still work" if len(kept) == 1 else "they may still work"
    until = "it expires" if len(kept) == 1 else "they expire"
    return f"{done}{which}: {still} at {provider} until {until} or you remove the app's access there"


def _cmd_audit(args: argparse.Namespace) -> int:
    from runner.audit import audit_log, parse_since

    settings = _settings(args)
    since = parse_since(args.since) if args.since is not None else None
    log = audit_log(settings)
    try:
        records = log.read(user=args.user, tool=args.tool, since=since, limit=args.limit)
    finally:
        log.close()
    if args.json:
        _out(json.dumps([record.to_dict() for record in records], indent=2, ensure_ascii=False))
    elif not records:
        _out("no audit records" + (" (audit.enabled is false)" if not settings.audit.enabled else "") + " match")
    for record in records if not args.json else []:
        _out(_audit_line(record))
    return ExitCode.OK


def _audit_line(record: Any) -> str:
    """One record as a line: when, who, what, how it ended, and where it connected."""
    from datetime import UTC, datetime

    when = datetime.fromtimestamp(record.at, UTC).strftime("%Y-%m-%d %H:%M:%SZ")
    parts = [when, record.user, record.tool, record.outcome.value]
    if record.exit_code is not None:
        parts.append(f"exit {record.exit_code}")
    parts += [f"{record.duration_seconds:.3f}s", f"in {record.bytes_in} B", f"out {record.bytes_out} B",
              record.backend, record.surface.value]  # fmt: skip
    if record.commit:
        parts.append(f"{record.source}@{record.commit[:12]}")
    if record.provider:
        parts.append(f"{record.provider}[{' '.join(record.scopes)}]")
    network = record.network
    if network is not None and network.reached:
        reached = (f"{h.host}:{h.port} ({h.bytes_sent} B up, {h.bytes_received} B down)" for h in network.reached)
        parts.append("reached " + ", ".join(reached))
    if network is not None and network.refused:
        parts.append("refused " + ", ".join(f"{r.host or '?'}:{r.port}" for r in network.refused))
    return "  ".join(parts)


def _cmd_serve(args: argparse.Namespace) -> int:
    try:
        from runner.server import mcp as mcp_server
    except ImportError as exc:
        raise PocketError(str(exc)) from None
    from runner.pocket import Pocket

    settings = _settings(args)
    if not args.http:
        user = args.user or "default"
        with Pocket(args.sources, settings=settings, progress=_say) as pocket:
            _say(f"serving {_count(pocket)} over MCP on stdio, calling as user {user!r}")
            mcp_server.serve(pocket, transport="stdio", user_id=user)
        return ExitCode.OK
    if args.user is not None and not args.no_auth:
        raise PocketError("--user with --http needs --no-auth: an authenticated server calls as each token's user")
    user_id = (args.user or "default") if args.no_auth else None
    mcp_server.check_http_mode(settings.server, args.host, user_id)  # before loading tools or binding
    with Pocket(args.sources, settings=settings, progress=_say) as pocket:
        sock = mcp_server.listen(args.host, args.port)  # a port in use is an error before the banner
        host = f"[{args.host}]" if ":" in args.host else args.host
        url = settings.server.public_url or f"http://{host}:{args.port}/mcp"
        who = (
            f"calling as user {user_id!r}, without authentication"
            if user_id is not None
            else f"calling as each access token's user (issuers: {', '.join(settings.server.issuers)})"
        )
        _say(f"serving {_count(pocket)} over MCP at {url}, {who} (Ctrl-C stops)")
        if settings.server.issuers and not settings.server.login_client_id:
            _say(
                "warning: consent links are not checked against who opens them (a forwarded link grants the "
                "opener's account to the link's user): set [server] login_client_id and login_client_secret"
            )
        mcp_server.serve(pocket, transport="http", host=args.host, port=args.port, user_id=user_id, sock=sock)
    return ExitCode.OK


def _count(pocket: Any) -> str:
    return f"{len(pocket.tools)} tool{'s' if len(pocket.tools) != 1 else ''}"


def _key_value(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise PocketError(f"--var expects NAME=VALUE, got {text!r}")
    return key, value


EXAMPLES = {
    "validate": """examples:
  pocket validate tools-example/hello
  pocket validate ../shared/corpus/hyperpocket          # every pocket.json below the folder
  pocket validate https://github.com/OWNER/REPO@v1.2#tools --strict""",
    "list": """examples:
  pocket list tools-example
  pocket list tools-example --json | jq '.[].name'""",
    "invoke": """examples:
  pocket invoke tools-example/hello hello --body '{"name": "Ada"}'
  pocket invoke tools-example/hello hello --body @body.json
  echo '{"name": "Ada"}' | pocket invoke tools-example/hello hello
  pocket invoke ./tools slack_get_messages --body '{"channel": "C1", "limit": 5}' --user alice

--timeout limits the tool's run; a first call builds the tool's image before, under its own limit
(sandbox.build_timeout_seconds), showing the build's progress on stderr.

The call runs in a local pocket process of yours when one serves these settings (the first command starts it;
it exits after [cli] daemon_idle_seconds without a call); --no-daemon runs it in this process.

exit codes: 0 success, 1 the tool failed, 2 bad input or manifest, 3 authorization needed""",
    "auth": """examples:
  pocket auth login slack                      # OAuth in the browser (client id/secret in .secrets.toml)
  pocket auth login github --device            # authorize from a phone (device grant)
  pocket auth login serpapi --user alice       # prompts for the API key without echo
  printf '%s\\n' "$KEY" | pocket auth login serpapi  # or reads it from stdin
  pocket auth status --all-users
  pocket auth logout slack --user alice        # revokes at the provider where it can

exit codes: 0 done, 2 bad input or settings, 3 authorization not granted""",
    "serve": """examples:
  pocket serve tools-example                            # MCP on stdio, for a client to launch
  pocket serve ./tools https://github.com/OWNER/REPO@v1 --user alice
  pocket serve tools-example --http --no-auth --port 8765   # one user, loopback: http://127.0.0.1:8765/mcp
  pocket serve ./tools --http --host 0.0.0.0           # OAuth resource server: [server] issuers in settings

over HTTP, with [server] issuers and public_url set, every request needs an access token from one of the
issuers, and calls run as the user it names; consent pages are served at PUBLIC_URL/auth/NAME/callback.

an MCP client config (stdio):
  {"mcpServers": {"pocket": {"command": "pocket", "args": ["serve", "/path/to/tools"]}}}

needs the mcp extra: pip install 'pocket-runner[mcp]'""",
    "audit": """examples:
  pocket audit --since 1h
  pocket audit --user alice --tool slack_get_messages --since 7d
  pocket audit --since 2026-12-06T10:00:00Z --json | jq '.[] | select(.outcome != "ok")'

--since takes a duration back from now (90s, 15m, 1h, 7d, 2w) or an ISO 8601 time (UTC when no zone)""",
}


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="pocket",
        description="Run authenticated tools for AI agents in hardened containers.",
        epilog="""examples:
  pocket validate tools-example
  pocket list tools-example --json
  pocket invoke tools-example/hello hello --body '{"name": "Ada"}'
  pocket auth login slack --user alice
  pocket serve tools-example --http --no-auth --port 8765

SOURCE is a tool folder, a folder of tool folders, or a git URL (URL[@REF][#SUBDIR]).
Run `pocket COMMAND --help` for a command's options and examples.""",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"pocket-runner {__version__}")

    def files(where: argparse.ArgumentParser, default: Any = None) -> None:
        where.add_argument(
            "--settings", metavar="FILE", default=default, help="settings file (default: ./settings.toml if present)"
        )
        where.add_argument(
            "--secrets", metavar="FILE", default=default, help="secrets file (default: ./.secrets.toml if present)"
        )

    files(parser)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    commands.required = True

    def command(name: str, help_text: str, group: Any = commands, examples: str = "") -> argparse.ArgumentParser:
        return group.add_parser(
            name, help=help_text, description=help_text, epilog=EXAMPLES[examples or name],
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )  # fmt: skip

    validate = command("validate", "Check pocket.json manifests against the schema; exit 2 if any is invalid.")
    validate.add_argument("sources", nargs="+", metavar="SOURCE")
    validate.add_argument("--strict", action="store_true", help="treat warnings (unknown keys) as errors")
    validate.add_argument("-v", "--verbose", action="store_true", help="also name every valid tool")
    validate.set_defaults(run=_cmd_validate)

    list_ = command("list", "Show the tools the sources provide.")
    list_.add_argument("sources", nargs="+", metavar="SOURCE")
    list_.add_argument("--json", action="store_true", help="print machine-readable JSON")
    list_.set_defaults(run=_cmd_list)

    invoke = command("invoke", "Run one tool in its sandbox and print its result.")
    invoke.add_argument("source", metavar="SOURCE")
    invoke.add_argument("tool", metavar="TOOL_NAME")
    invoke.add_argument("--body", metavar="JSON", help="the body: JSON, @file.json, or - for stdin (default: stdin)")
    invoke.add_argument("--user", default="default", help="whose credentials to use (default: %(default)s)")
    invoke.add_argument("--var", action="append", default=[], metavar="NAME=VALUE", help="override a variable")
    invoke.add_argument("--timeout", type=_positive_seconds, metavar="SECONDS", help="wall-clock limit of the run")
    invoke.add_argument(
        "--no-daemon", action="store_true", help="run the call in this process, not in a local pocket process"
    )
    invoke.set_defaults(run=_cmd_invoke)

    auth = command("auth", "Sign in to providers, show and remove stored credentials.")
    auth_commands = auth.add_subparsers(dest="auth_command", metavar="ACTION", parser_class=_Parser)
    auth_commands.required = True
    login = command("login", "authorize PROVIDER (OAuth, device grant, or a token)", auth_commands, examples="auth")
    login.add_argument("provider", metavar="PROVIDER")
    login.add_argument("--handler", help="oauth2, token, basic, keypair (or hyperpocket's PROVIDER-KIND)")
    login.add_argument("--scope", action="append", default=[], help="a scope to ask for (repeatable)")
    login.add_argument("--device", action="store_true", help="use the device grant (no browser on this machine)")
    login.add_argument(
        "--timeout", type=_positive_seconds, default=600, metavar="SECONDS", help="how long to wait for consent"
    )
    status = command("status", "show stored credentials (never their values)", auth_commands, examples="auth")
    status.add_argument("provider", metavar="PROVIDER", nargs="?")
    status.add_argument("--all-users", action="store_true", help="every user, not only --user")
    status.add_argument("--json", action="store_true", help="print machine-readable JSON")
    logout = command(
        "logout", "revoke (where the provider allows) and forget a credential", auth_commands, examples="auth"
    )
    logout.add_argument("provider", metavar="PROVIDER")
    for sub in (login, status, logout):
        sub.add_argument("--user", default="default", help="whose credentials (default: %(default)s)")
    auth.set_defaults(run=_cmd_auth)

    serve = command("serve", "Serve every tool the sources provide over the Model Context Protocol (MCP).")
    serve.add_argument("sources", nargs="+", metavar="SOURCE")
    serve.add_argument("--http", action="store_true", help="serve streamable HTTP instead of stdio")
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on with --http (default: %(default)s)")
    serve.add_argument("--port", type=_port, default=8000, help="port to listen on with --http (default: %(default)s)")
    serve.add_argument("--user", help="whose credentials tool calls use, on stdio or with --no-auth (default: default)")
    serve.add_argument(
        "--no-auth",
        action="store_true",
        help="serve HTTP without authentication, as --user, on loopback only (else [server] issuers are needed)",
    )
    serve.set_defaults(run=_cmd_serve)

    audit = command("audit", "Show the audit log: who ran which tool, how it ended, where it connected.")
    audit.add_argument("--user", help="only this user's calls")
    audit.add_argument("--tool", metavar="TOOL_NAME", help="only this tool's calls")
    audit.add_argument("--since", metavar="WHEN", help="only calls since: 1h, 7d, or an ISO 8601 time")
    audit.add_argument("--limit", type=_positive_count, default=1000, help="the latest N (default: %(default)s)")
    audit.add_argument("--json", action="store_true", help="print machine-readable JSON")
    audit.set_defaults(run=_cmd_audit)
    # --settings and --secrets work after the command as well as before it: SUPPRESS keeps a subcommand
    # from overwriting the value given before it with its own default.
    for sub in (validate, list_, invoke, auth, login, status, logout, serve, audit):
        files(sub, argparse.SUPPRESS)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    import threading

    # Only the main thread may set a signal handler (main() called from a thread just goes without).
    in_main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _on_sigterm) if in_main_thread else None
    try:
        return _main(argv)
    except (_StdoutClosed, BrokenPipeError):  # BrokenPipeError: argparse printing --help into a closed pipe
        # The Python docs' recipe: point stdout at devnull so the final flush at exit cannot fail again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return ExitCode.STDOUT_CLOSED
    finally:
        if in_main_thread:
            signal.signal(signal.SIGTERM, previous)


def internal_error(exc: Exception) -> str:
    return f"internal error: {type(exc).__name__}: {exc} (please report this)"


def _main(argv: Sequence[str] | None) -> int:
    from runner.audit import Surface, called_from

    args = build_parser().parse_args(argv)
    try:
        with called_from(Surface.CLI):  # audit records of `pocket invoke` say so (MCP's calls say MCP)
            code = int(args.run(args))
        try:
            sys.stdout.flush()
        except BrokenPipeError:
            raise _StdoutClosed from None
        return code
    except ManifestError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        if args.run is not _cmd_validate:
            sources = " ".join(map(str, getattr(args, "sources", None) or [getattr(args, "source", "SOURCE")]))
            _say(f"fix the manifest first; `pocket validate {sources}` checks every tool at once")
        return ExitCode.BAD_INPUT
    except PocketError as exc:
        _say(str(exc))
        return exc.exit_code
    except _Terminated:
        _say("terminated")
        return ExitCode.TERMINATED
    except KeyboardInterrupt:
        _say("interrupted")
        return ExitCode.INTERRUPTED
    except _StdoutClosed:
        raise
    except Exception as exc:  # a bug of ours: say so in one line, never a traceback
        _say(internal_error(exc))
        return ExitCode.INTERNAL_ERROR


if __name__ == "__main__":
    raise SystemExit(main())
