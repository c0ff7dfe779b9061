"""The provider catalog: what the runner knows about each provider, as data.

The catalog ships as `providers.toml` beside this module. Settings may override any key of a catalog
provider and may define new providers, under `[auth.NAME]`, with no code: either explicit URLs or an
`issuer` whose metadata is discovered (RFC 8414 / OpenID Connect Discovery).
"""

from __future__ import annotations

import base64
import tomllib
from functools import cache
from pathlib import Path
from string import Formatter
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError, field_validator

from runner.errors import SettingsError
from runner.manifest import AuthSpec
from runner.settings import Settings

KINDS = ("oauth2", "token", "basic", "keypair")
# The fields a person enters for each non-OAuth kind, with a label and whether it is secret.
FORM_FIELDS: dict[str, tuple[tuple[str, str, bool], ...]] = {
    "token": (("token", "Token or API key", True),),
    "basic": (("username", "Username", False), ("password", "Password", True)),
    "keypair": (("api_key", "API key", True), ("api_secret", "API secret", True)),
}
# Fields whose values are not secret. Any other field of a template (a token, a password, a field this
# catalog does not know) makes its variable secret: masked in a tool's result.
_PLAIN_FIELDS = frozenset(name for fields in FORM_FIELDS.values() for name, _, secret in fields if not secret)
# Fields a template may name that are made from a credential's fields: `{basic_b64}` is base64 of
# `username:password`, as HTTP Basic and hyperpocket's tools (`base64.b64decode(v).split(":")`) read it.
DERIVED_FIELDS = ("basic_b64",)


def derived_fields(values: dict[str, str]) -> dict[str, str]:
    """The DERIVED_FIELDS `values` can make (secret ones: a template naming one makes a secret variable)."""
    if "username" in values and "password" in values:
        pair = f"{values['username']}:{values['password']}".encode()
        return {"basic_b64": base64.b64encode(pair).decode("ascii")}
    return {}


# hyperpocket's handler suffixes that mean one of our kinds.
_KIND_ALIASES = {"basicauth": "basic", "apitoken": "token", "api_token": "token", "bearer": "token", "oauth": "oauth2"}
# Keys of [auth.NAME] that are client credentials or stored secrets, not catalog fields.
SETTINGS_ONLY_KEYS = {"client_id", "client_secret", "token", "username", "password", "api_key", "api_secret"}


class Provider(BaseModel):
    """One provider's entry: endpoints, quirks, handlers and the variables its tools read. Validated from
    providers.toml and `[auth.NAME]` settings; `build_provider` turns a validation error into a SettingsError."""

    model_config = ConfigDict(frozen=True, extra="forbid", coerce_numbers_to_str=True)

    name: str
    display_name: str = ""
    handlers: tuple[str, ...] = ("token",)
    env: dict[str, dict[str, str]] = {}
    docs_url: str | None = None
    token_help: str | None = None
    issuer: str | None = None
    authorization_url: str | None = None
    token_url: str | None = None
    revocation_url: str | None = None
    device_authorization_url: str | None = None
    scope_separator: str = " "
    scope_param: str = "scope"
    default_scopes: tuple[str, ...] = ()
    authorization_params: dict[str, str] = {}
    token_params: dict[str, str] = {}
    refresh_params: dict[str, str] = {}
    token_request_auth_method: str = "client_secret_post"
    token_request_format: str = "form"
    pkce: bool = True
    access_token_path: str = "access_token"
    refresh_token_path: str = "refresh_token"
    expires_in_path: str = "expires_in"
    scope_path: str = "scope"
    refresh_access_token_path: str = "access_token"
    refresh_refresh_token_path: str = "refresh_token"
    refresh_expires_in_path: str = "expires_in"
    refresh_scope_path: str = "scope"
    extra_fields: tuple[str, ...] = ()
    ok_field: str | None = None
    refresh: bool = True
    revocation_method: str = "rfc7009"
    handler_class: str | None = None  # "module:Class" implementing runner.auth.oauth.OAuthHandler
    iss_required: bool = False  # its authorization responses carry `iss` (RFC 9207): one without it is refused
    api_hosts: tuple[str, ...] = ()  # where its tools may connect by default ("*.googleapis.com" patterns too)

    @field_validator("handlers", "default_scopes", "extra_fields", "api_hosts", mode="before")
    @classmethod
    def _one_or_many(cls, value: Any) -> Any:
        """`handlers = "token"` means `["token"]`."""
        return [value] if isinstance(value, str) else value

    @field_validator("env", mode="before")
    @classmethod
    def _env_per_kind(cls, value: Any) -> Any:
        """`env = { VAR = "{token}" }` applies to every kind; `env.token = {...}` to one kind."""
        if not isinstance(value, dict):
            raise ValueError("env must be a table")
        if value and all(isinstance(v, str) for v in value.values()):
            return {kind: value for kind in KINDS}
        return value

    @field_validator("handlers")
    @classmethod
    def _known_kinds(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for kind in value:
            if kind not in KINDS:
                raise ValueError(f"handlers: unknown kind {kind!r} (known: {', '.join(KINDS)})")
        return value

    @field_validator("token_request_auth_method")
    @classmethod
    def _known_auth_method(cls, value: str) -> str:
        if value not in ("client_secret_post", "client_secret_basic", "none"):
            raise ValueError("token_request_auth_method must be client_secret_post, client_secret_basic or none")
        return value

    @field_validator("token_request_format")
    @classmethod
    def _known_format(cls, value: str) -> str:
        if value not in ("form", "json"):
            raise ValueError("token_request_format must be form or json")
        return value

    @property
    def title(self) -> str:
        return self.display_name or self.name

    @property
    def default_kind(self) -> str:
        return self.handlers[0]

    def kind_of(self, handler: str | None) -> str:
        """The credential kind a manifest's `auth_handler` names ("notion-token" -> "token")."""
        if not handler:
            return self.default_kind
        name = handler.lower()
        if name.startswith(self.name + "-"):
            name = name[len(self.name) + 1 :]
        name = _KIND_ALIASES.get(name, name)
        if name not in self.handlers:
            raise SettingsError(
                f"provider {self.name!r} has no auth handler {handler!r}; it offers "
                + ", ".join(f"{self.name}-{k}" for k in self.handlers)
            )
        return name

    def env_templates(self, kind: str) -> dict[str, str]:
        templates = self.env.get(kind)
        if not templates and kind in ("oauth2", "token"):  # an OAuth token and a pasted one go to the same place
            templates = self.env.get("token" if kind == "oauth2" else "oauth2")
        if templates:
            return templates
        if kind == "keypair":
            prefix = _env_prefix(self.name)
            return {f"{prefix}_API_KEY": "{api_key}", f"{prefix}_API_SECRET": "{api_secret}"}
        if kind == "basic":
            prefix = _env_prefix(self.name)
            return {f"{prefix}_USERNAME": "{username}", f"{prefix}_PASSWORD": "{password}"}
        return {f"{_env_prefix(self.name)}_TOKEN": "{token}"}

    def plain_variables(self, kind: str) -> set[str]:
        """The variables of `kind` made from no secret field (`LINKEDIN_USERNAME`): a tool's result need not
        hide them, and masking a short common value would mangle it ("Canada" for the user "ada")."""
        return {
            variable
            for variable, template in self.env_templates(kind).items()
            if {field for _, field, _, _ in Formatter().parse(template) if field} <= _PLAIN_FIELDS
        }

    def environment(self, kind: str, values: dict[str, str]) -> dict[str, str]:
        """The variables a tool receives, from a credential's field values and the fields made from them
        (DERIVED_FIELDS: `{basic_b64}`)."""
        values = {**derived_fields(values), **values}
        try:
            return {variable: template.format_map(values) for variable, template in self.env_templates(kind).items()}
        except KeyError as exc:
            raise SettingsError(f"provider {self.name!r}: env template names an unknown field {exc}") from None

    @property
    def is_oauth_ready(self) -> bool:
        return bool(self.authorization_url and self.token_url)


def _env_prefix(name: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in name).upper()


_FIELD_NAMES = set(Provider.model_fields)


def build_provider(name: str, data: dict[str, Any]) -> Provider:
    """The provider `[auth.NAME]` (or the catalog) describes; a SettingsError naming the entry when invalid."""
    unknown = set(data) - _FIELD_NAMES - SETTINGS_ONLY_KEYS - {"name"}
    if unknown:
        raise SettingsError(f"[auth.{name}]: unknown key(s) {', '.join(sorted(unknown))}")
    values = {key: value for key, value in data.items() if key in _FIELD_NAMES and key != "name"}
    try:
        return Provider(name=name, **values)
    except ValidationError as exc:
        raise SettingsError("; ".join(_problem(name, error) for error in exc.errors())) from None


def _problem(name: str, error: Any) -> str:
    """One validation error as a person reads it: our validators' messages as they are, pydantic's with the key."""
    if error["type"] == "value_error":
        return f"[auth.{name}] {error['ctx']['error']}"
    return f"[auth.{name}] {'.'.join(map(str, error['loc']))}: {error['msg']}"


@cache
def catalog() -> dict[str, Provider]:
    """The providers shipped with the runner."""
    data = tomllib.loads((Path(__file__).with_name("providers.toml")).read_text(encoding="utf-8"))
    return {name: build_provider(name, entry) for name, entry in data.items()}


def token_variables(provider: str, handler: str | None = None) -> tuple[str, ...]:
    """Every variable a tool of `provider` receives with `handler`'s kind of credential, the main one first
    (`KRAKEN_API_KEY`, `KRAKEN_API_SECRET`). From the catalog alone: a provider defined only in settings
    gets the default names."""
    entry = catalog().get(provider) or Provider(name=provider)
    return tuple(entry.env_templates(entry.kind_of(handler)))


def unknown_provider(name: str) -> SettingsError:
    return SettingsError(
        f"unknown auth provider {name!r}: add it under [auth.{name}] in settings "
        "(an `issuer` for discovery, or `authorization_url` and `token_url`, or just a `token`)"
    )


def configured(settings: Settings, name: str) -> Provider | None:
    """The catalog entry for `name` with the settings' `[auth.NAME]` applied (see `resolve`)."""
    overrides = settings.auth.get(name)
    return resolve(name, overrides.model_dump() if overrides is not None else None)


def auth_problem(spec: AuthSpec, settings: Settings) -> str | None:
    """Why no credential could ever satisfy a manifest's `auth` block (unknown provider or handler), or None.
    From the catalog and settings alone: nothing is fetched."""
    provider = configured(settings, spec.provider)
    if provider is None:
        return str(unknown_provider(spec.provider))
    try:
        provider.kind_of(spec.handler)
    except SettingsError as exc:
        return str(exc)
    return None


def resolve(name: str, overrides: dict[str, Any] | None) -> Provider | None:
    """The catalog entry for `name` with the settings' overrides applied, or a provider defined in
    settings only. None when neither the catalog nor the settings know it."""
    base = catalog().get(name)
    extra = {k: v for k, v in (overrides or {}).items() if k not in SETTINGS_ONLY_KEYS and v is not None}
    if base is None:
        if not extra:
            # Settings with only a token still define a usable token provider.
            return build_provider(name, {}) if overrides and overrides.get("token") is not None else None
        if "handlers" not in extra:
            oauth = any(k in extra for k in ("issuer", "authorization_url", "token_url"))
            extra["handlers"] = ["oauth2", "token"] if oauth else ["token"]
        return build_provider(name, extra)
    if not extra:
        return base
    merged = build_provider(name, extra | {"handlers": extra.get("handlers", list(base.handlers))})
    changes = {key: getattr(merged, key) for key in extra if key in _FIELD_NAMES}
    if "env" in changes:
        changes["env"] = {**base.env, **changes["env"]}
    return base.model_copy(update=changes)
