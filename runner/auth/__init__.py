"""Credentials for tools: which environment variables carry a provider's token, and where it comes from.

This first version serves static credentials from settings (`[auth.PROVIDER] token = ...`); the OAuth
flows, the encrypted store and refresh build on the same interface.
"""

from __future__ import annotations

from runner.errors import AuthRequiredError
from runner.manifest import AuthSpec
from runner.settings import Settings

# The variable a tool reads its token from, where it is not `<PROVIDER>_TOKEN` (hyperpocket's names).
_TOKEN_VARIABLES = {"slack": "SLACK_BOT_TOKEN"}


def token_variable(provider: str) -> str:
    return _TOKEN_VARIABLES.get(provider, provider.upper().replace("-", "_") + "_TOKEN")


class Authenticator:
    """Resolves the credentials of one tool call for one user."""

    def __init__(self, settings: Settings):
        self._settings = settings

    def environment(self, spec: AuthSpec, user_id: str) -> dict[str, str]:
        """The variables the tool receives. Raises AuthRequiredError when the user has no credential yet."""
        provider = self._settings.auth.get(spec.provider)
        if provider is None or provider.token is None:
            raise AuthRequiredError(
                f"{spec.provider} credentials are needed: set [auth.{spec.provider}] token in .secrets.toml "
                f"or POCKET_AUTH__{spec.provider.upper()}__TOKEN",
                provider=spec.provider,
            )
        return {token_variable(spec.provider): provider.token.get_secret_value()}

    def close(self) -> None:
        """Nothing to release yet; the OAuth callback server will stop here."""
