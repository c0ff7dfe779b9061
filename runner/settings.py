"""Settings: `settings.toml`, `.secrets.toml` and `POCKET_*` environment variables, merged and validated.

The files are read with tomllib and merged here, the environment is only read (never changed: other
threads share it); pydantic validates the merged result, so the rest of the runner gets typed values and
a person gets an error that names the key. Later sources win: settings.toml < .secrets.toml < POCKET_
variables (`POCKET_AUTH__SLACK__CLIENT_ID`, `__` nests). Values are literal: no templates, casts or
includes, and no variable but POCKET_ ones is read.
"""

from __future__ import annotations

import enum
import json
import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator

from runner.errors import SettingsError

ENV_PREFIX = "POCKET"
SETTINGS_FILE = "settings.toml"
SECRETS_FILE = ".secrets.toml"


def _default_cache_dir() -> Path:
    import platformdirs

    return Path(platformdirs.user_cache_dir("pocket-runner"))


def _default_data_dir() -> Path:
    import platformdirs

    return Path(platformdirs.user_data_dir("pocket-runner"))


class Runtime(enum.StrEnum):
    """The OCI runtime tool containers run under."""

    RUNC = "runc"  # the engine's default: namespaces and cgroups on the host kernel
    RUNSC = "runsc"  # gVisor: a user-space kernel between the tool and the host's (scripts/setup.sh --gvisor)


def _string_list(value: Any) -> Any:
    """A list setting from a POCKET_ variable arrives as a string: `a,b` or `["a", "b"]`."""
    if isinstance(value, str):
        return (
            json.loads(value) if value.lstrip().startswith("[") else [v.strip() for v in value.split(",") if v.strip()]
        )
    return value


class Backend(enum.StrEnum):
    """Where tool calls run."""

    DOCKER = "docker"  # containers on one Docker engine (DOCKER_HOST or the local socket)
    KUBERNETES = "kubernetes"  # Pods in a Kubernetes namespace ([sandbox.kubernetes], sandbox.registry)


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class KubernetesSettings(_Section):
    """`[sandbox.kubernetes]`: the cluster tool calls run on when `sandbox.backend = "kubernetes"`."""

    namespace: str = "default"
    # None: the in-cluster configuration when the runner itself runs in a Pod, else ~/.kube/config (KUBECONFIG)
    kubeconfig: Path | None = None
    context: str | None = None  # a context of the kubeconfig; None: its current-context
    runtime_class_name: str | None = None  # e.g. "gvisor", where the cluster has that RuntimeClass
    image_pull_secrets: tuple[str, ...] = ()  # Secrets of the namespace the nodes pull tool images with
    # When the runner is itself a Pod of this namespace: its name and uid (from the downward API, e.g.
    # POCKET_SANDBOX__KUBERNETES__RUNNER_POD_UID from metadata.uid). Everything the runner creates is then owned
    # by that Pod, so Kubernetes deletes it with the runner's Pod, whatever happened to the runner.
    runner_pod_name: str | None = None
    runner_pod_uid: str | None = None
    # How long a Pod may take from creation to running (image pull included) before the call fails
    start_timeout_seconds: float = Field(default=120.0, gt=0)
    # Prebuilt images by tool name ("registry/name@sha256:..." or a tag, resolved to its digest): no build, no push
    images: dict[str, str] = Field(default_factory=dict)


class ToolLimits(_Section):
    """`[sandbox.tools.NAME]`: whoever runs the agent sets one tool's limits; wins over its manifest.

    These values are taken as they are, above or below the `[sandbox]` ceilings: this is how an operator
    grants one tool more than the defaults allow.
    """

    timeout_seconds: float | None = Field(default=None, gt=0)
    memory_mb: int | None = Field(default=None, ge=16)
    cpus: float | None = Field(default=None, gt=0)
    pids: int | None = Field(default=None, ge=8)
    output_limit_bytes: int | None = Field(default=None, ge=1024)
    # False: no network, whatever its manifest asks; True: the default bridge; hosts: only those, through the
    # egress proxy ("*.example.com" patterns too).
    network: bool | tuple[str, ...] | None = None
    max_concurrent: int | None = Field(default=None, ge=1)  # this tool's containers at once


class SandboxSettings(_Section):
    """Defaults and ceilings for every tool's container.

    `timeout_seconds`, `memory_mb`, `cpus`, `pids` and `output_limit_bytes` are each the default and
    the ceiling: a manifest's `sandbox` block may ask for less, never more (a larger request is lowered
    to the setting, and said once through progress). A per-call timeout is capped the same way. Only
    `[sandbox.tools.NAME]` (see ToolLimits) raises a limit for one tool.
    """

    python_image: str = "python:3.11-slim"
    node_image: str = "node:20-slim"
    # Defaults and ceilings (a manifest may ask for less; [sandbox.tools.NAME] may grant more):
    timeout_seconds: float = Field(default=60.0, gt=0)
    memory_mb: int = Field(default=512, ge=16)
    cpus: float = Field(default=1.0, gt=0)
    pids: int = Field(default=128, ge=8)
    output_limit_bytes: int = Field(default=4 * 1024 * 1024, ge=1024)
    allow_network: bool = True  # False refuses every tool whose manifest asks for network access
    # A tool that names an auth provider and asks for no network reaches that provider's API hosts (the
    # catalog's api_hosts), and only those, through the egress proxy. False: such tools stay offline.
    provider_egress: bool = True
    pool_size: int = Field(default=2, ge=0)  # containers kept started per tool, waiting for a call
    pool_max: int = Field(default=8, ge=0)  # after a burst of concurrent calls the pool grows to it, up to this
    # Containers of one tool serving or awaiting calls at once; calls beyond it wait (their timeout counting).
    max_concurrent: int = Field(default=16, ge=1)
    ca_bundle: Path | None = None  # CA bundle for builds behind a TLS-inspecting proxy or local CA
    # A PyPI mirror for `pip install` during builds; may carry credentials, so it is a secret: redacted
    # from build errors and never shown in a repr.
    pip_index_url: SecretStr | None = None
    max_context_mb: int = Field(default=100, ge=1)  # largest tool folder (build context) the sandbox sends
    # A tool's image build (`entrypoint.build`, run once before its first call) has its own limits: the call's
    # timeout is the tool's run time, and a build may take longer than any call, but never forever.
    build_timeout_seconds: float = Field(default=600.0, gt=0)
    build_memory_mb: int = Field(default=2048, ge=64)  # memory of the build step, no swap beyond it
    # Tools (by name, or "*") whose `entrypoint.handler` runs in warm mode: loaded once per container and
    # user, then called per request. Opt-in by whoever runs the agent, since state persists between calls.
    warm_tools: tuple[str, ...] = ()
    warm_idle_seconds: float = Field(default=300.0, gt=0)  # a warm container unused this long is removed
    runtime: Runtime = Runtime.RUNC
    backend: Backend = Backend.DOCKER
    # Where the runner pushes tool images for the cluster to pull (host[:port][/path]); a loopback registry
    # needs no TLS (Docker treats 127.0.0.0/8 as insecure)
    registry: str | None = None
    kubernetes: KubernetesSettings = KubernetesSettings()
    # Python tools run as `python FILE` / `python -m MODULE` get their interpreter started in the pooled
    # container before the call (container/prestart.py); false runs every tool through /bin/sh.
    prestart_python: bool = True
    tools: dict[str, ToolLimits] = Field(default_factory=dict)  # per-tool overrides, by tool name

    @field_validator("warm_tools", mode="before")
    @classmethod
    def _list_from_environment(cls, value: Any) -> Any:
        return _string_list(value)


class ProviderSettings(BaseModel):
    """One provider's entry under `[auth.NAME]`: client credentials, a static credential, or overrides.

    Every value here is cast to a string, so a number written unquoted in a TOML file (`token = 42`) is
    still a string (POCKET_ values are never parsed). Secrets are SecretStr, so they never show in a repr.
    """

    model_config = ConfigDict(extra="allow", frozen=True)

    client_id: str | None = None
    client_secret: SecretStr | None = None
    token: SecretStr | None = None  # a static token or API key for token handlers
    username: str | None = None
    password: SecretStr | None = None
    api_key: SecretStr | None = None  # keypair handlers (e.g. Kraken)
    api_secret: SecretStr | None = None

    @field_validator("*", mode="before")
    @classmethod
    def _as_string(cls, value: Any) -> Any:
        return str(value) if isinstance(value, int | float) and not isinstance(value, bool) else value


class CredentialSettings(_Section):
    """How the runner obtains and keeps credentials: `[credentials]` (providers themselves are `[auth.NAME]`)."""

    model_config = ConfigDict(extra="forbid", frozen=True, hide_input_in_errors=True)  # secrets in its values

    callback_host: str = "127.0.0.1"  # the loopback callback server binds here
    callback_port: int = Field(default=8400, ge=0, le=65535)  # 0: any free port (redirect URIs then vary)
    public_base_url: str | None = None  # e.g. https://agent.example.com when a proxy forwards to the callback
    refresh_margin_seconds: float = Field(default=300.0, ge=0)  # refresh this long before expiry
    encryption_key: SecretStr | None = None  # base64 of 32 bytes; default: a generated key file in data_dir
    # postgresql://USER:PASSWORD@HOST:PORT/DATABASE: the store shared by every runner replica given the same URL
    # (and encryption_key). Unset: an SQLite file in data_dir. A secret (it may carry the password).
    database_url: SecretStr | None = None
    authorization_timeout_seconds: float = Field(default=600.0, gt=0)  # how long a pending authorization lives
    # Each request to an authorization server (token, refresh, revocation, device, discovery) gives up after this.
    http_timeout_seconds: float = Field(default=30.0, gt=0)
    # Headless machines: OAuth providers offering the device grant are authorized with a code the person
    # enters on any device (a phone), instead of a redirect to this machine's callback server.
    device_flow: bool = False

    @field_validator("database_url", mode="before")
    @classmethod
    def _postgres_url(cls, value: Any) -> Any:
        """An empty value is unset; anything else must be a postgresql:// URL (the value is never quoted back)."""
        from runner.database import postgres_url_problem

        raw = value.get_secret_value() if isinstance(value, SecretStr) else value
        if isinstance(raw, str) and not raw.strip():
            return None
        problem = postgres_url_problem(raw) if isinstance(raw, str) else None
        if problem is not None:
            raise ValueError(problem)
        return value


class ServerSettings(_Section):
    """`[server]`: `pocket serve --http` as an OAuth 2.1 resource server (the MCP authorization specification).

    With `issuers` set, every HTTP request must carry an access token one of them issued for `public_url`
    (RFC 8707: its `aud`), and the token's `user_claim` is the user whose credentials its calls use.
    """

    # The MCP endpoint as clients reach it, its canonical resource URI: https://tools.example.com/mcp. Default:
    # http://HOST:PORT/mcp of the listening socket. The consent pages are served beside it (/auth/NAME/callback).
    public_url: str | None = None
    # The authorization servers whose tokens are accepted, by issuer URL (metadata discovered by RFC 8414 / OIDC).
    issuers: tuple[str, ...] = ()
    required_scopes: tuple[str, ...] = ()  # every call's token must carry all of them (else 403 insufficient_scope)
    user_claim: str = "sub"  # the claim naming the user; with several issuers the user is `ISSUER|VALUE`
    # Opaque (non-JWT) tokens are checked by RFC 7662 introspection, as this client of the issuer.
    introspection_client_id: str | None = None
    introspection_client_secret: SecretStr | None = None
    # This server's own OpenID Connect client at the (first) issuer, redirect URI PUBLIC_ORIGIN/auth/login/callback:
    # with it, a consent link asks whoever opens it to log in, and only the user it was made for goes on.
    login_client_id: str | None = None
    login_client_secret: SecretStr | None = None
    clock_skew_seconds: int = Field(default=0, ge=0, le=300)  # tolerated on `exp` and `nbf`
    # A call that asked the user to authorize a provider (URL elicitation) waits this long for the consent.
    consent_wait_seconds: float = Field(default=120.0, gt=0)

    @field_validator("issuers", "required_scopes", mode="before")
    @classmethod
    def _list_from_environment(cls, value: Any) -> Any:
        return _string_list(value)

    @field_validator("public_url", "issuers")
    @classmethod
    def _http_urls(cls, value: Any) -> Any:
        for url in (value,) if isinstance(value, str) else value or ():
            parts = urlsplit(url)
            if parts.scheme not in ("https", "http") or not parts.hostname or parts.fragment or parts.query:
                raise ValueError(f"{url!r} is not an http(s) URL without query or fragment")
        return value


class CliSettings(_Section):
    """`[cli]`: how the `pocket` command runs calls."""

    # `pocket invoke` hands its call to a local pocket process of this user that keeps the runner loaded and
    # the tools' containers started (started by the first command, see runner/daemon); false: every command
    # runs its call itself, as `--no-daemon` does.
    daemon: bool = True
    daemon_idle_seconds: float = Field(default=300.0, gt=0)  # that process exits after this long without a call


class AuditSettings(_Section):
    """The audit log of every invocation, in the credentials database: `[audit]`."""

    enabled: bool = True
    retention_days: float = Field(default=90.0, ge=0)  # records older than this are deleted; 0: kept for good


class Settings(BaseModel):
    """All settings: settings.toml, then .secrets.toml, then POCKET_ variables (see load_settings), validated."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    cache_dir: Path = Field(default_factory=_default_cache_dir)
    data_dir: Path = Field(default_factory=_default_data_dir)
    sandbox: SandboxSettings = SandboxSettings()
    auth: dict[str, ProviderSettings] = Field(default_factory=dict)
    credentials: CredentialSettings = CredentialSettings()
    server: ServerSettings = ServerSettings()
    cli: CliSettings = CliSettings()
    audit: AuditSettings = AuditSettings()
    # Per-tool variable overrides: [variables.TOOL_NAME] VAR = "value" (tool names are matched in lower case)
    variables: dict[str, dict[str, str]] = Field(default_factory=dict)

    @field_validator("variables", mode="before")
    @classmethod
    def _variables_as_strings(cls, value: Any) -> Any:
        if isinstance(value, Mapping):
            return {
                tool: {k: str(v) for k, v in vars_.items()} if isinstance(vars_, Mapping) else vars_
                for tool, vars_ in value.items()
            }
        return value


def _env_path(name: str) -> list[str]:
    """POCKET_AUTH__SLACK__CLIENT_ID -> [auth, slack, client_id]; names a person writes keep their case.

    [variables.TOOL] NAME: the tool name is lower-cased like every key, the variable name is not.
    [auth.NAME] FIELD.NAME or FIELD.KIND.NAME (POCKET_AUTH__CORP__ENV__CORP_TOKEN): the provider, the field
    and a kind are lower-cased, the last name (a variable, a request parameter) is not.
    """
    parts = name[len(ENV_PREFIX) + 1 :].split("__")
    keep = len(parts)
    if parts[0].lower() == "variables":
        keep = 2
    elif parts[0].lower() == "auth" and len(parts) > 3:
        keep = len(parts) - 1
    return [p.lower() for p in parts[:keep]] + parts[keep:]


def _merge(old: Any, new: Any) -> Any:
    """`new` over `old`: tables merge key by key, arrays are joined, the rest is replaced (as with dynaconf,
    which read the files before: keys match in any case, so POCKET_VARIABLES__T__NAME overrides `Name`)."""
    if isinstance(old, dict) and isinstance(new, dict):
        merged = dict(old)
        spelled = {str(key).lower(): key for key in old}
        for key, value in new.items():
            key = spelled.get(str(key).lower(), key)
            merged[key] = _merge(merged[key], value) if key in merged else value
        return merged
    if isinstance(old, list) and isinstance(new, list) and old != new:
        return old + new
    return new


def _lower_keys(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k).lower(): _lower_keys(v) for k, v in value.items()}
    return value


def _tables_lowered(value: Any) -> Any:
    """Below a field of [auth.NAME]: a key naming a table (a kind, `env.token`) in lower case; a key naming a
    value (a variable `CORP_TOKEN`, a request parameter) as the person wrote it."""
    if isinstance(value, Mapping):
        return {(str(k).lower() if isinstance(v, Mapping) else str(k)): _tables_lowered(v) for k, v in value.items()}
    return value


def _auth_keys(value: Any) -> Any:
    """[auth.NAME] FIELD: provider names and fields in lower case (matched in any case); what a field's table
    names keeps the case the tool or the provider reads it in (`env = { CORP_TOKEN = "{token}" }`)."""
    if not isinstance(value, Mapping):
        return _lower_keys(value)
    return {
        str(name).lower(): (
            {str(k).lower(): _tables_lowered(v) for k, v in entry.items()} if isinstance(entry, Mapping) else entry
        )
        for name, entry in value.items()
    }


def _normalise(data: Mapping[str, Any]) -> dict[str, Any]:
    """Keys in lower case, as the models name them; variable names keep their case."""
    normal = {}
    for key, value in data.items():
        key = str(key).lower()
        if key == "variables" and isinstance(value, Mapping):
            normal[key] = {str(tool).lower(): variables for tool, variables in value.items()}
        elif key == "auth":
            normal[key] = _auth_keys(value)
        else:
            normal[key] = _lower_keys(value)
    return normal


def _read_layers(files: list[Path], environ: Mapping[str, str]) -> dict[str, Any]:
    """The files in order, then the POCKET_ variables of `environ` (only read: other threads share it)."""
    data: dict[str, Any] = {}
    for file in files:
        with file.open("rb") as stream:
            data = _merge(data, _normalise(tomllib.load(stream)))
    for name, value in environ.items():
        if name.startswith(ENV_PREFIX + "_") and len(name) > len(ENV_PREFIX) + 1:
            # Kept as the raw string (no TOML parsing: a secret like "0042" must stay "0042");
            # pydantic converts where a number or a boolean is expected.
            layer: Any = value
            for part in reversed(_env_path(name)):
                layer = {part: layer}
            data = _merge(data, layer)
    return data


def load_settings(
    settings_file: Path | str | None = None,
    secrets_file: Path | str | None = None,
    *,
    directory: Path | str | None = None,
) -> Settings:
    """Load and validate settings.

    Files given explicitly must exist; otherwise `settings.toml` and `.secrets.toml` are read from
    `directory` (the current directory by default) when they are there.
    """
    base = Path(directory) if directory is not None else Path.cwd()
    files: list[Path] = []
    for given, default in ((settings_file, SETTINGS_FILE), (secrets_file, SECRETS_FILE)):
        path = (Path(given) if given is not None else base / default).resolve()
        if given is not None and not path.is_file():
            raise SettingsError(f"{path}: settings file not found")
        if path.is_file():
            files.append(path)
    try:
        data = _read_layers(files, os.environ)
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        where = ", ".join(map(str, files)) or "the environment"
        raise SettingsError(f"cannot read settings from {where}: {exc}") from None
    try:
        return Settings.model_validate(data)
    except ValidationError as exc:
        raise SettingsError(_describe(exc, files)) from None


def _describe(exc: ValidationError, files: list[Path]) -> str:
    lines = [f"invalid settings (from {', '.join(map(str, files)) or 'defaults'} and {ENV_PREFIX}_ variables):"]
    for error in exc.errors(include_input=False):  # never echo the input: it may be a secret
        key = ".".join(str(part) for part in error["loc"])
        env = f"{ENV_PREFIX}_" + "__".join(str(part).upper() for part in error["loc"])
        lines.append(f"  {key} (or {env}): {error['msg']}")
    return "\n".join(lines)
