"""Try every tool of a folder as a user pointing the runner at it would: validate, build, call once.

    .venv/bin/python benchmarks/try_tools.py FOLDER [--jobs 2] [--build-timeout 300] [--call-timeout 60]
                                             [--only SUBSTRING ...] [--body TOOL=JSON ...] [--var TOOL:NAME=VALUE ...]
                                             [--json results.json] [--remove-images]

Each tool found under FOLDER (every folder holding a pocket.json) is
  1. validated (`load_manifest`),
  2. built (`Pocket.prepare`, with `sandbox.build_timeout_seconds` = --build-timeout),
  3. called once with the smallest body its inputSchema accepts (required properties only, each given a
     plain value of its type: its const, first enum value, default or example when it has one) and a dummy
     credential for its auth provider: a `token`, `username`/`password` and `api_key`/`api_secret` under
     `[auth.PROVIDER]`, so every handler kind (oauth2, token, basic, keypair) finds a static credential.
There is no real credential, so no call can succeed against a real API: what is measured is whether a tool
runs its own code up to its API call. Each call is classified from its Invocation (error, stderr, stdout):

  validation failed  the manifest does not load
  build failed       `entrypoint.build` (or the base image) failed: the last lines of the build log say why
  reached API call   the tool ran and failed (or reported, with exit 0) a network error: a host name that does
                     not resolve (offline, or no internet behind the egress proxy: its `502 cannot resolve`),
                     a refused or unreachable connection, or the proxy's `403` for a host not allowed
  ran, returned      the tool exited 0 with no sign of a network error (a tool that needs no API)
  missing module     a module or package the tool imports is not installed (its dependencies, or our build)
  crashed            any other failure before an API call: the last lines of its stderr say where (a tool
                     that crashes with the minimal body is called again with every property given; when
                     that gets further, its result is kept, marked "only with every property given")
  bad input / auth   the runner refused the call: the generated body, or the dummy credential, is at fault

A summary by language (python, golang, node, from `language` / `baseImage`) follows the per-tool table.
Builds get the network (`sandbox.allow_network`, default true); calls get what the runner gives them (a
tool naming an auth provider: that provider's API hosts through the egress proxy). Credentials and tool
state live in a temporary directory removed at the end; built images stay unless --remove-images.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import re
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from runner import Invocation, Outcome, Pocket, PocketError, Settings, load_manifest  # noqa: E402

VALIDATION_FAILED = "validation failed"
BUILD_FAILED = "build failed"
REACHED_API = "reached API call"
RAN = "ran, returned"
MISSING_MODULE = "missing module"
CRASHED = "crashed"
BAD_INPUT = "bad input"
AUTH = "auth"
STATUSES = (VALIDATION_FAILED, BUILD_FAILED, REACHED_API, RAN, MISSING_MODULE, CRASHED, BAD_INPUT, AUTH)

# Dummy credentials shaped as each provider's SDK may expect (a Slack client checks nothing, but a prefix
# costs nothing); any other provider gets `dummy-<provider>-token`.
TOKEN_SHAPES = {"slack": "xoxb-0-0-dummy", "github": "ghp_dummy", "notion": "secret_dummy", "linear": "lin_api_dummy"}

# How a network failure reads in the runtimes tools use (glibc, Python's socket/requests/httpx/aiohttp,
# Node, Go, curl), and in what our egress proxy answers. Checked in order: the first match names the kind.
NETWORK_SIGNS: tuple[tuple[str, re.Pattern[str]], ...] = (
    (
        "proxy refused the host (403)",
        re.compile(r"403 Forbidden|Tunnel connection failed: 403|is not in the tool's allow-list"),
    ),
    (
        "no internet behind the proxy (502)",
        re.compile(r"502 Bad Gateway|Tunnel connection failed: 502|cannot resolve \S+:"),
    ),
    (
        "name resolution failed",
        re.compile(
            r"Temporary failure in name resolution|Name or service not known|No address associated with hostname|"
            r"nodename nor servname|getaddrinfo (ENOTFOUND|EAI_AGAIN)|dial tcp: lookup|no such host|"
            r"Could not resolve host|Failed to resolve|NameResolutionError|gaierror|ENOTFOUND|EAI_AGAIN"
        ),
    ),
    (
        "connection failed",
        re.compile(
            r"Connection refused|ECONNREFUSED|Network is unreachable|ENETUNREACH|Failed to establish a new connection|"
            r"Max retries exceeded|ConnectError|ConnectionError|ProxyError|Cannot connect to host|connect: |"
            r"ConnectTimeout|ETIMEDOUT|fetch failed|failed to send request"
        ),
    ),
)
MISSING_SIGNS = re.compile(
    r"ModuleNotFoundError|No module named|ImportError|Cannot find module|cannot find package|"
    r"command not found|: not found\b|executable file not found"
)


# -- bodies ----------------------------------------------------------------------------------------------


def _resolve(schema: dict[str, Any], root: dict[str, Any]) -> dict[str, Any]:
    """Follow a local `$ref` (`#/$defs/X`, `#/definitions/X`)."""
    seen = 0
    while isinstance(schema, dict) and isinstance(schema.get("$ref"), str) and schema["$ref"].startswith("#/"):
        target: Any = root
        for part in schema["$ref"][2:].split("/"):
            target = target.get(part.replace("~1", "/").replace("~0", "~"), {}) if isinstance(target, dict) else {}
        schema, seen = target, seen + 1
        if seen > 20:
            break
    return schema if isinstance(schema, dict) else {}


def _string(schema: dict[str, Any]) -> str:
    by_format = {
        "date-time": "2025-01-01T00:00:00Z", "date": "2025-01-01", "time": "00:00:00", "email": "user@example.com",
        "uri": "https://example.com", "url": "https://example.com", "uuid": "00000000-0000-4000-8000-000000000000",
    }  # fmt: skip
    value = by_format.get(schema.get("format", ""), "test")
    low, high = schema.get("minLength", 0), schema.get("maxLength")
    value = value.ljust(low, "x")
    return value[:high] if isinstance(high, int) else value


def _number(schema: dict[str, Any], kind: type) -> int | float:
    value: float = 1
    if "minimum" in schema:
        value = max(value, schema["minimum"])
    if "exclusiveMinimum" in schema and isinstance(schema["exclusiveMinimum"], int | float):
        value = max(value, schema["exclusiveMinimum"] + 1)
    if "maximum" in schema:
        value = min(value, schema["maximum"])
    return kind(value)


def sample(schema: Any, root: dict[str, Any] | None = None, depth: int = 0, *, full: bool = False) -> Any:
    """The smallest plain value `schema` accepts, as an agent would send it: required properties only
    (with `full`, every property: for tools whose own checks want more than their schema requires)."""
    if not isinstance(schema, dict):
        return None
    root = schema if root is None else root
    schema = _resolve(schema, root)
    for key in ("const",):
        if key in schema:
            return schema[key]
    if schema.get("enum"):
        return schema["enum"][0]
    if schema.get("default") is not None:
        return schema["default"]
    if schema.get("examples"):
        return schema["examples"][0]
    for key in ("anyOf", "oneOf", "allOf"):
        options = [_resolve(o, root) for o in schema.get(key) or [] if isinstance(o, dict)]
        chosen = [o for o in options if o.get("type") != "null"] or options
        if chosen:
            return sample({**{k: v for k, v in schema.items() if k != key}, **chosen[0]}, root, depth + 1, full=full)
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    if kind is None:
        kind = "object" if "properties" in schema else "array" if "items" in schema else "string"
    if depth > 10:
        return None
    if kind == "object":
        properties = schema.get("properties") or {}
        names = list(properties) if full else schema.get("required") or []
        return {name: sample(properties.get(name, {}), root, depth + 1, full=full) for name in names}
    if kind == "array":
        return [
            sample(schema.get("items") or {}, root, depth + 1, full=full)
            for _ in range(max(1, schema.get("minItems", 1)))
        ]
    if kind == "string":
        return _string(schema)
    if kind == "integer":
        return _number(schema, int)
    if kind == "number":
        return _number(schema, float)
    if kind == "boolean":
        return False
    return None


# -- results ---------------------------------------------------------------------------------------------


@dataclass
class Result:
    folder: str
    name: str = ""
    language: str = "?"
    provider: str = ""
    status: str = ""
    cause: str = ""  # the kind of network failure, or why it failed
    detail: str = ""  # the last lines of the log that says so
    body: Any = None
    build_seconds: float = 0.0
    call_seconds: float = 0.0


def language_of(manifest: Any) -> str:
    if manifest.base_image and manifest.base_image.split(":")[0].rsplit("/", 1)[-1] in ("golang", "go"):
        return "golang"
    return manifest.language or "python"


def _tail(text: str, lines: int = 4, width: int = 400) -> str:
    kept = [line.rstrip() for line in text.strip().splitlines() if line.strip()][-lines:]
    return " | ".join(kept)[-width:]


def _network_sign(text: str) -> str | None:
    for kind, pattern in NETWORK_SIGNS:
        if pattern.search(text):
            return kind
    return None


def classify(invocation: Invocation, result: Result) -> None:
    value = invocation.value if isinstance(invocation.value, str) else json.dumps(invocation.value, default=str)
    text = "\n".join(filter(None, (invocation.error, invocation.stderr, invocation.stdout, value)))
    result.call_seconds = round(invocation.duration_seconds, 1)
    if invocation.outcome is Outcome.BAD_INPUT:
        result.status, result.detail = BAD_INPUT, _tail(invocation.error or "")
    elif invocation.outcome is Outcome.AUTH_REQUIRED:
        result.status, result.detail = AUTH, _tail(invocation.error or "")
    elif (sign := _network_sign(text)) is not None:
        result.status, result.cause = REACHED_API, sign
        result.detail = _tail(invocation.stderr or invocation.stdout or value, 2)
    elif invocation.ok:
        result.status, result.detail = RAN, _tail(value, 2, 200)
    elif MISSING_SIGNS.search(text):
        result.status, result.detail = MISSING_MODULE, _tail(invocation.stderr or invocation.error or "")
    else:
        result.status = CRASHED
        result.detail = _tail(invocation.stderr or invocation.stdout or invocation.error or "")
        if invocation.error and not invocation.error.startswith("the tool exited"):
            result.cause = invocation.error.splitlines()[0][:120]  # timed out, out of memory, ...


def build_cause(message: str) -> str:
    """Why a build failed, in a few words, from its error message (the tail of the build log)."""
    for cause, pattern in (
        ("timed out", r"timed out|build_timeout_seconds = "),
        ("base image cannot be pulled", r"base image .* cannot be pulled"),
        ("Python version", r"requires a different Python"),
        ("Go toolchain too old for go.mod", r"invalid go version"),
        ("Go module download failed", r"proxy\.golang\.org|go: downloading|reading https?://.*@v/"),
        ("npm package not in registry", r"npm ERR! (code )?E?404"),
        ("npm registry unreachable", r"npm ERR! (code|network)|ENOTFOUND registry|EAI_AGAIN"),
        ("playwright browser download", r"playwright|browserFetcher"),
        ("pip: no matching distribution", r"No matching distribution|Could not find a version"),
        ("pip: TLS", r"CERTIFICATE_VERIFY_FAILED|SSLError"),
        ("command not found", r"not found|No such file"),
        ("compiler or headers missing", r"gcc|error: command|fatal error: .*\.h"),
    ):
        if re.search(pattern, message, re.IGNORECASE):
            return cause
    return "other"


# -- the run ---------------------------------------------------------------------------------------------


def settings_for(
    providers: set[str],
    tmp: Path,
    build_timeout: float,
    call_timeout: float,
    variables: dict[str, dict[str, str]] | None = None,
) -> Settings:
    auth = {
        provider: {
            "token": TOKEN_SHAPES.get(provider, f"dummy-{provider}-token"),
            "username": "dummy-user",
            "password": "dummy-password",
            "api_key": f"dummy-{provider}-key",
            "api_secret": "ZHVtbXktc2VjcmV0",  # base64, as Kraken's secret is
        }
        for provider in providers
    }
    return Settings.model_validate({
        "cache_dir": str(tmp / "cache"), "data_dir": str(tmp / "data"), "auth": auth, "variables": variables or {},
        "sandbox": {"build_timeout_seconds": build_timeout, "timeout_seconds": call_timeout, "pool_size": 0},
    })  # fmt: skip


def run(
    folder: Path,
    jobs: int,
    build_timeout: float,
    call_timeout: float,
    only: list[str],
    bodies: dict[str, Any],
    variables: dict[str, dict[str, str]],
) -> list[Result]:
    """Every tool under `folder` (or those whose folder contains one of `only`), `jobs` at a time; a tool named
    in `bodies` is called with that body instead of one made from its schema, and gets `variables[name]`."""
    folders = sorted(p.parent for p in folder.rglob("pocket.json") if ".git" not in p.parts)
    if only:
        folders = [f for f in folders if any(o in str(f.relative_to(folder)) for o in only)]
    results: dict[Path, Result] = {}
    loaded = {}
    for path in folders:
        result = results[path] = Result(str(path.relative_to(folder)))
        try:
            manifest = load_manifest(path)
        except PocketError as exc:
            result.status, result.detail = VALIDATION_FAILED, _tail(str(exc))
            continue
        result.name, result.language = manifest.name, language_of(manifest)
        result.provider = manifest.auth.provider if manifest.auth else ""
        loaded[path] = manifest
    with tempfile.TemporaryDirectory(prefix="try-tools-") as tmp:
        providers = {m.auth.provider for m in loaded.values() if m.auth}
        settings = settings_for(providers, Path(tmp), build_timeout, call_timeout, variables)
        with Pocket(tools=list(loaded), settings=settings) as pocket:

            def one(path: Path) -> None:
                result, manifest = results[path], loaded[path]
                started = time.perf_counter()
                try:
                    pocket.prepare(manifest.name)
                except PocketError as exc:
                    result.build_seconds = round(time.perf_counter() - started, 1)
                    result.status, result.cause, result.detail = BUILD_FAILED, build_cause(str(exc)), _tail(str(exc))
                    return
                result.build_seconds = round(time.perf_counter() - started, 1)
                given = manifest.name in bodies
                result.body = bodies[manifest.name] if given else sample(manifest.tool.input_schema)
                classify(pocket.invoke(manifest.name, result.body, timeout=call_timeout), result)
                full = sample(manifest.tool.input_schema, full=True)
                if result.status == CRASHED and not given and full != result.body:  # its own checks may want more
                    second = Result(result.folder, body=full)
                    classify(pocket.invoke(manifest.name, full, timeout=call_timeout), second)
                    if second.status in (REACHED_API, RAN):
                        second.cause = "; ".join(filter(None, (second.cause, "only with every property given")))
                        second.detail += f" (the minimal body failed: {result.detail[-200:]})"
                        for key in ("status", "cause", "detail", "body", "call_seconds"):
                            setattr(result, key, getattr(second, key))

            def announce(path: Path) -> None:
                try:
                    one(path)
                except Exception as exc:  # a bug of ours or of this driver: say it, go on with the others
                    results[path].status, results[path].detail = CRASHED, f"driver: {type(exc).__name__}: {exc}"
                r = results[path]
                print(f"  {r.folder}: {r.status}{' (' + r.cause + ')' if r.cause else ''} "
                      f"[build {r.build_seconds} s, call {r.call_seconds} s]", file=sys.stderr, flush=True)  # fmt: skip

            pool = concurrent.futures.ThreadPoolExecutor(max_workers=jobs)
            try:
                list(pool.map(announce, loaded))
            except KeyboardInterrupt:  # Ctrl-C: start no other tool; closing the Pocket ends the calls running
                pool.shutdown(wait=False, cancel_futures=True)
                raise
            pool.shutdown()
    return [results[p] for p in folders]


def remove_images(folders: list[Path]) -> None:
    """Remove the images built for these tool folders (labelled with each folder's key by the sandbox)."""
    import docker

    from runner.sandbox.context import folder_key
    from runner.sandbox.labels import LABEL_FOLDER

    api = docker.from_env().api
    for folder in folders:
        for image in api.images(filters={"label": f"{LABEL_FOLDER}={folder_key(folder)}"}):
            try:
                api.remove_image(image["Id"])
            except Exception as exc:
                print(f"cannot remove the image of {folder}: {exc}", file=sys.stderr)


def report(results: list[Result]) -> str:
    lines = []
    width = max([len(r.folder) for r in results] + [4])
    lines.append(f"{'tool':<{width}}  {'lang':<6}  {'status':<17}  cause / detail")
    for r in results:
        note = "; ".join(filter(None, (r.cause, r.detail)))
        lines.append(f"{r.folder:<{width}}  {r.language:<6}  {r.status:<17}  {note[:300]}")
    lines.append("")
    languages = sorted({r.language for r in results})
    header = ["language", "tools", "validated", "built", "reached API", "ran, returned", "failed before"]
    rows = []
    for language in [*languages, "all"]:
        mine = [r for r in results if language in ("all", r.language)]
        validated = [r for r in mine if r.status != VALIDATION_FAILED]
        built = [r for r in validated if r.status != BUILD_FAILED]
        reached = [r for r in built if r.status == REACHED_API]
        ran = [r for r in built if r.status == RAN]
        rows.append([language, len(mine), len(validated), len(built), len(reached), len(ran),
                     len(built) - len(reached) - len(ran)])  # fmt: skip
    widths = [max(len(str(x)) for x in column) for column in zip(header, *rows, strict=True)]
    for row in [header, *rows]:
        lines.append(
            "  ".join(
                str(x).rjust(w) if i else str(x).ljust(w) for i, (x, w) in enumerate(zip(row, widths, strict=True))
            )
        )
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folder", type=Path, help="a folder of tools (each in a folder holding a pocket.json)")
    parser.add_argument("--jobs", type=int, default=2, help="tools built and called at once (default 2)")
    parser.add_argument("--build-timeout", type=float, default=300.0, help="seconds per build (default 300)")
    parser.add_argument("--call-timeout", type=float, default=60.0, help="seconds per call (default 60)")
    parser.add_argument("--only", action="append", default=[], help="only tools whose folder contains this")
    parser.add_argument(
        "--body", action="append", default=[], metavar="TOOL=JSON",
        help="call this tool (by its manifest name) with this body, for tools whose own checks want real values",
    )  # fmt: skip
    parser.add_argument(
        "--var", action="append", default=[], metavar="TOOL:NAME=VALUE",
        help="give this tool this variable (settings' [variables.TOOL]), for tools reading one they do not declare",
    )  # fmt: skip
    parser.add_argument("--json", type=Path, help="also write every result to this file")
    parser.add_argument("--remove-images", action="store_true", help="remove the images built, at the end")
    args = parser.parse_args()
    started = time.perf_counter()
    bodies = {}
    for given in args.body:
        name, _, text = given.partition("=")
        try:
            bodies[name] = json.loads(text)
        except ValueError as exc:
            parser.error(f"--body {name}: not JSON ({exc})")
    variables: dict[str, dict[str, str]] = {}
    for given in args.var:
        tool, _, assignment = given.partition(":")
        name, equals, value = assignment.partition("=")
        if not (tool and name and equals):
            parser.error(f"--var {given!r}: expected TOOL:NAME=VALUE")
        variables.setdefault(tool.lower(), {})[name] = value
    results = run(args.folder.resolve(), args.jobs, args.build_timeout, args.call_timeout, args.only, bodies, variables)
    print(report(results))
    print(f"\n{len(results)} tools in {time.perf_counter() - started:.0f} s")
    if args.json:
        args.json.write_text(json.dumps([asdict(r) for r in results], indent=2, default=str))
    if args.remove_images:
        remove_images([args.folder.resolve() / r.folder for r in results])
    return 0


if __name__ == "__main__":
    sys.exit(main())
