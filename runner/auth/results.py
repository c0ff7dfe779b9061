"""What the Authenticator answers, as types: callers read fields, never parse text or look up keys."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import Enum
from typing import TYPE_CHECKING, Any, Protocol

from runner.auth.store import ACTIVE, Credential

if TYPE_CHECKING:
    from runner.auth.oauth import DeviceAuthorization, Revocation
    from runner.auth.providers import Provider

UNREADABLE = "unreadable"


class GrantState(Enum):
    AUTHORIZED = "authorized"
    PARTIAL = "partial"  # a grant was stored without every scope asked for
    FAILED = "failed"
    PENDING = "pending"


@dataclass(frozen=True)
class GrantOutcome:
    """How one authorization request ended. `str()` is the text `Authenticator.wait` reports."""

    state: GrantState
    declined: tuple[str, ...] = ()  # PARTIAL: the scopes the provider did not grant
    reason: str = ""  # FAILED: why

    @classmethod
    def of_grant(cls, requested: Iterable[str], credential: Credential) -> GrantOutcome:
        """A stored grant's answer to a request. The provider may drop scopes it does not know, or the person
        may untick some: a tool needing one would ask for consent again."""
        declined = tuple(sorted(set(requested) - set(credential.scopes)))
        return cls(GrantState.PARTIAL, declined=declined) if declined else cls(GrantState.AUTHORIZED)

    @classmethod
    def failed(cls, reason: str) -> GrantOutcome:
        return cls(GrantState.FAILED, reason=reason)

    @property
    def granted(self) -> bool:
        """A grant was stored (perhaps without every scope)."""
        return self.state in (GrantState.AUTHORIZED, GrantState.PARTIAL)

    def __str__(self) -> str:
        if self.state is GrantState.PARTIAL:
            return f"partial: declined {', '.join(self.declined)}"
        if self.state is GrantState.FAILED:
            return f"failed: {self.reason}"
        return self.state.value


@dataclass(frozen=True)
class LoginResult:
    """What `Authenticator.login` did: a credential of `kind` entered and stored, or an OAuth grant's outcome."""

    provider: Provider
    user_id: str
    kind: str  # "oauth2" for a sign-in (browser or device), else the kind of credential entered
    outcome: GrantOutcome


class LoginPrompts(Protocol):
    """What `Authenticator.login` needs from whoever drives it (the CLI): values to read, things to show."""

    def fallback(self, provider: Provider, kind: str, how_to_configure: str) -> None:
        """The provider signs in with OAuth, but no client is configured: a `kind` credential is asked instead."""

    def value(self, provider: Provider, label: str, *, secret: bool) -> str:
        """One field of the credential (a secret is read without echo)."""
        ...

    def device_code(self, device: DeviceAuthorization) -> None:
        """Where to go on another device, and the code to enter there."""

    def authorization_url(self, provider: Provider, url: str) -> None:
        """The URL to open in a browser to sign in."""


@dataclass(frozen=True)
class CredentialStatus:
    """A token-free summary of one credential: stored, written in settings (`kind` "settings", user "*"), or
    stored but unreadable (`status` "unreadable", `problem` says why)."""

    user: str
    provider: str
    status: str  # active, expired, unreadable
    kind: str | None = None
    scopes: tuple[str, ...] = ()
    expires_at: float | None = None
    refreshable: bool = False
    details: dict[str, str] = field(default_factory=dict)  # non-secret fields of the grant (workspace name...)
    problem: str | None = None

    @classmethod
    def of(cls, credential: Credential) -> CredentialStatus:
        return cls(
            user=credential.user_id,
            provider=credential.provider,
            status=credential.status,
            kind=credential.kind,
            scopes=credential.scopes,
            expires_at=credential.expires_at,
            refreshable="refresh_token" in credential.secrets,
            details=dict(credential.extra),
        )

    @classmethod
    def unreadable(cls, user: str, provider: str, problem: str) -> CredentialStatus:
        return cls(user=user, provider=provider, status=UNREADABLE, problem=problem)

    @classmethod
    def in_settings(cls, provider: str) -> CredentialStatus:
        return cls(user="*", provider=provider, status=ACTIVE, kind="settings")

    def as_json(self) -> dict[str, Any]:
        """The object `pocket auth status --json` prints for this row: only the keys that apply to it."""
        if self.status == UNREADABLE:
            return {"user": self.user, "provider": self.provider, "status": self.status, "problem": self.problem}
        row: dict[str, Any] = {
            "user": self.user,
            "provider": self.provider,
            "kind": self.kind,
            "status": self.status,
            "scopes": list(self.scopes),
        }
        if self.kind == "settings":
            return row
        row |= {"expires_at": self.expires_at, "refreshable": self.refreshable}
        return row | ({"details": dict(self.details)} if self.details else {})


@dataclass(frozen=True)
class LogoutResult:
    """Whether a stored credential was forgotten, and what revoking it at the provider did, token by token."""

    deleted: bool
    revocation: Revocation
