"""The pages of the callback server: the end of an OAuth authorization, and the form to enter a credential.

Each request is matched to its pending request by `state` (single use); whatever happens is recorded in
`Consent` for `wait`, and told to the person in plain words (`callback.render` escapes it).
"""

from __future__ import annotations

from urllib.parse import quote

from runner.auth.admin import credential_from_values
from runner.auth.callback import Page, token_form
from runner.auth.consent import Consent, Expired
from runner.auth.context import AuthContext
from runner.auth.oauth import Pending
from runner.auth.providers import FORM_FIELDS
from runner.auth.refresh import credential_from_tokens
from runner.auth.results import GrantOutcome, GrantState
from runner.errors import OAuthError, SettingsError

_UNKNOWN = Page(
    400,
    "Authorization link not recognised",
    "This link is unknown, was already used, or expired. Ask your agent for a new one.",
    "failure",
)
_EXPIRED = Page(
    400, "Authorization expired", "This authorization took too long. Ask your agent for a new link.", "failure"
)


class Pages:
    """Answers the callback server's requests (`handle` is its handler)."""

    def __init__(self, context: AuthContext, consent: Consent):
        self._context = context
        self._consent = consent

    def handle(self, method: str, provider: str, action: str, params: dict[str, str]) -> Page:
        if action == "callback" and method == "GET":
            return self._oauth_callback(provider, params)
        if action == "form" and method == "GET":
            return self._show_form(provider, params)
        if action == "form" and method == "POST":
            return self._submit_form(provider, params)
        return Page(405, "Not allowed", "That request is not allowed here.", "failure")

    def _take(self, provider: str, params: dict[str, str], kinds: set[str], *, consume: bool) -> Pending | Page:
        """The pending request the state names, or the page saying why there is none."""
        try:
            taken = self._consent.take(provider, params.get("state"), kinds, consume=consume)
        except Expired:
            return _EXPIRED
        return _UNKNOWN if taken is None else taken

    def _oauth_callback(self, provider_name: str, params: dict[str, str]) -> Page:
        pending = self._take(provider_name, params, {"oauth2"}, consume=True)
        if isinstance(pending, Page):
            return pending
        try:
            return self._end_authorization(pending, provider_name, params)
        finally:  # claimed, so still pending: it must end, also when something here raised
            self._consent.release(pending, "pocket could not finish the authorization (an internal error)")

    def _end_authorization(self, pending: Pending, provider_name: str, params: dict[str, str]) -> Page:
        provider = self._context.provider(provider_name)
        if params.get("error"):
            error = params["error"][:100]
            described = params.get("error_description", "")[:300]
            message = "You declined access." if error == "access_denied" else f"The provider answered: {error}."
            self._consent.finish(pending, GrantOutcome.failed(error + (f" ({described})" if described else "")))
            return Page(400, f"{provider.title} was not connected", f"{message} {described}".strip(), "failure")
        issuer = params.get("iss")
        if issuer is None and provider.iss_required:  # RFC 9207: it always names itself, so this is not its answer
            self._consent.finish(
                pending, GrantOutcome.failed("the callback named no issuer, though the provider always does")
            )
            return Page(400, "Authorization refused", "The answer did not say which server sent it.", "failure")
        if issuer is not None and provider.issuer and issuer != provider.issuer:
            self._consent.finish(pending, GrantOutcome.failed("the callback came from another issuer"))
            return Page(400, "Authorization refused", "The answer came from an unexpected server.", "failure")
        code = params.get("code")
        if not code:
            self._consent.finish(pending, GrantOutcome.failed("the callback carried no code"))
            return Page(400, "Authorization failed", "The provider sent no authorization code.", "failure")
        try:
            tokens = self._context.handler(provider).exchange_code(code, pending)
        except (OAuthError, SettingsError) as exc:
            self._consent.finish(pending, GrantOutcome.failed(str(exc)))
            return Page(400, f"{provider.title} was not connected", f"Exchanging the code failed: {exc}", "failure")
        credential = credential_from_tokens(pending.user_id, provider.name, tokens, requested=pending.scopes)
        self._context.save(credential)
        outcome = GrantOutcome.of_grant(pending.scopes, credential)
        self._consent.finish(pending, outcome)
        if outcome.state is GrantState.PARTIAL:
            return Page(
                200,
                f"{provider.title} is connected, but not for everything asked",
                f"{provider.title} did not grant {', '.join(outcome.declined)}. pocket keeps what was granted for "
                f"user {pending.user_id}; the tools that need the rest cannot run until it is. You can close this tab.",
                "info",
            )
        return Page(
            200,
            f"{provider.title} is connected",
            f"pocket can now use {provider.title} for user {pending.user_id}. You can close this tab.",
            "success",
        )

    def _show_form(self, provider_name: str, params: dict[str, str]) -> Page:
        taken = self._take(provider_name, params, set(FORM_FIELDS), consume=False)
        if isinstance(taken, Page):
            return taken
        provider = self._context.provider(provider_name)
        fields = list(FORM_FIELDS[taken.kind])
        help_text = provider.token_help or (f"Create one at {provider.docs_url}" if provider.docs_url else None)
        action = f"/auth/{quote(provider_name, safe='')}/form"
        return Page(
            200,
            f"Connect {provider.title}",
            f"Enter the {provider.title} credential pocket should use for user {taken.user_id}. "
            "It is stored encrypted on this machine.",
            "form",
            form=token_form(action, taken.state, fields, help_text),
        )

    def _submit_form(self, provider_name: str, params: dict[str, str]) -> Page:
        taken = self._take(provider_name, params, set(FORM_FIELDS), consume=False)
        if isinstance(taken, Page):
            return taken
        values = {name: params.get(name, "").strip() for name, _, _ in FORM_FIELDS[taken.kind]}
        provider = self._context.provider(provider_name)
        if not all(values.values()):
            return Page(
                400, f"Connect {provider.title}", "Every field is required. Go back and fill them all in.", "failure"
            )
        if not self._consent.discard(taken):  # single use, even for two concurrent posts
            return Page(400, "Authorization link not recognised", "This form was already submitted.", "failure")
        self._context.save(credential_from_values(provider, values, user_id=taken.user_id, kind=taken.kind))
        self._consent.finish(taken, GrantOutcome(GrantState.AUTHORIZED))
        return Page(
            200,
            f"{provider.title} is connected",
            f"pocket will use this credential for user {taken.user_id}. You can close this tab.",
            "success",
        )
