"""Credentials for tools: consent, encrypted storage, refresh, and the variables a tool receives.

`Authenticator` is what `Pocket` and the CLI use:
- `environment(spec, user_id)` -> the variables of one tool call (`SLACK_BOT_TOKEN`, ...), refreshing
  ahead of expiry; raises `AuthRequiredError` carrying the URL the person must open when the user has
  no usable credential (an OAuth authorization URL, or the local form to paste a token), and
  `AuthUnavailableError` when an expired token cannot be refreshed now (the provider is down).
- `secret_values(spec, environment)`: which of those values to mask in the tool's result (a token is,
  a username is not).
- `require_scopes(provider, scopes)`: the scopes the loaded tools need; consent asks for their union.
- `initialize(specs, user_id)`, `authorization_url(...)`, `wait(...)`: start consent and wait for the
  callbacks (hyperpocket's `initialize_tool_auth` / `wait_tool_auth`).
- `login(...)`, `login_with(...)`, `status(...)`, `logout(...)`, `start_device(...)` / `finish_device(...)`:
  the `pocket auth` commands.

This module only re-exports, lazily: importing `runner.auth.providers` does not load the OAuth client.
`authenticator.py` says which module does what. The secret values a tool prints (`secret_values`) are
masked in its result by `runner.invocation.redact`, where Pocket builds every result.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from runner.exports import lazy

if TYPE_CHECKING:
    from runner.auth.authenticator import Authenticator
    from runner.auth.oauth import OAuth2Handler, OAuthHandler, Pending, Revocation, TokenSet
    from runner.auth.providers import token_variables
    from runner.auth.store import Credential
    from runner.errors import AuthRequiredError, AuthUnavailableError, OAuthError

__all__ = [
    "AuthRequiredError",
    "AuthUnavailableError",
    "Authenticator",
    "Credential",
    "OAuth2Handler",
    "OAuthError",
    "OAuthHandler",
    "Pending",
    "Revocation",
    "TokenSet",
    "token_variables",
]

_MODULES = {
    "AuthRequiredError": "runner.errors",
    "AuthUnavailableError": "runner.errors",
    "OAuthError": "runner.errors",
    "Authenticator": "runner.auth.authenticator",
    "Credential": "runner.auth.store",
    "OAuth2Handler": "runner.auth.oauth",
    "OAuthHandler": "runner.auth.oauth",
    "Pending": "runner.auth.oauth",
    "Revocation": "runner.auth.oauth",
    "TokenSet": "runner.auth.oauth",
    "token_variables": "runner.auth.providers",
}

__getattr__ = lazy(__name__, _MODULES)


def __dir__() -> list[str]:
    return sorted(__all__)
