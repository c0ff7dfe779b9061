"""What the Authenticator answers, as types: callers read fields, never parse text or look up keys."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from enum import Enum

from runner.auth.store import Credential


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
