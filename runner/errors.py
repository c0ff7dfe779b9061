"""Every error the runner raises on purpose, each with the CLI exit code it maps to.

Messages are written for the person reading them: what was wrong, where, and what to do.
They never contain a token or a secret.

    PocketError                      exit 2 (bad input) unless a subclass says otherwise
    ├── ManifestError                a pocket.json that is missing or invalid (every problem at once)
    ├── SourceError                  a tool folder or repository that cannot be found or fetched
    ├── SettingsError                settings.toml, .secrets.toml or a POCKET_ variable
    │   ├── UnreadableCredential     a stored credential that cannot be decrypted
    │   └── DatabaseError            the store's database cannot be used: damaged, unreachable, refused
    │       └── DatabaseUnavailableError  exit 1: down after it answered, or a lock held too long
    ├── OAuthError                   an authorization server said no
    ├── AuthRequiredError            exit 3: the user must grant access first (carries the URL)
    ├── AuthUnavailableError         exit 1: a credential expired and cannot be refreshed now
    └── ToolFailedError              exit 1: the tool ran and failed
        └── SandboxError             the sandbox could not run the tool
            └── BuildError           the tool's image failed to build
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum


class ExitCode(IntEnum):
    """What `pocket` exits with. Errors and invocation outcomes each name theirs."""

    OK = 0
    TOOL_FAILED = 1
    BAD_INPUT = 2  # a bad body, manifest, source, settings or command line
    AUTH_REQUIRED = 3
    INTERNAL_ERROR = 70  # a bug of ours (EX_SOFTWARE)
    INTERRUPTED = 130  # Ctrl-C
    # Whoever reads our stdout closed it (`pocket list X | head -1`): the status a shell reports for a tool
    # killed by SIGPIPE (128 + 13), so `set -o pipefail` sees the same.
    STDOUT_CLOSED = 141
    TERMINATED = 143  # SIGTERM (128 + 15)


class PocketError(Exception):
    """Base of all runner errors; `exit_code` is what the CLI exits with."""

    exit_code: ExitCode = ExitCode.BAD_INPUT


@dataclass(frozen=True)
class Problem:
    """One thing wrong with an input file: where it is and what was expected."""

    file: str
    pointer: str  # JSON pointer ("" for the whole document), or "line L, column C" for syntax errors
    message: str
    is_warning: bool = False

    def __str__(self) -> str:
        where = f"{self.file}: {self.pointer}" if self.pointer else self.file
        kind = "warning" if self.is_warning else "error"
        return f"{where}: {kind}: {self.message}"


class ManifestError(PocketError):
    """A pocket.json that is missing, unreadable or invalid. Carries every problem found, not just the first."""

    def __init__(self, problems: list[Problem]):
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))


class SourceError(PocketError):
    """A tool source (folder or git repository) that cannot be found or fetched."""


class SettingsError(PocketError):
    """settings.toml, .secrets.toml or a POCKET_ variable that is invalid."""


class ToolFailedError(PocketError):
    """The tool ran and failed (non-zero exit, timeout, killed for memory, build failure)."""

    exit_code = ExitCode.TOOL_FAILED


class AuthRequiredError(PocketError):
    """The tool needs credentials the user has not granted yet; carries the URL to show them."""

    exit_code = ExitCode.AUTH_REQUIRED

    def __init__(self, message: str, *, provider: str, url: str | None = None):
        self.provider = provider
        self.url = url
        super().__init__(message)


class AuthUnavailableError(PocketError):
    """The user's credential expired and the provider cannot refresh it right now (unreachable, 5xx). No
    consent or setting would help: the call fails as a tool failure, and a later one may succeed."""

    exit_code = ExitCode.TOOL_FAILED

    def __init__(self, message: str, *, provider: str):
        self.provider = provider
        super().__init__(message)


class UnreadableCredential(SettingsError):
    """A stored row that cannot be decrypted: its key file is gone, the key changed, or the row was tampered
    with. `pocket auth status` reports it, `logout` forgets it, and a new authorization replaces it."""


class DatabaseError(SettingsError):
    """The database the credentials are kept in cannot be used: an SQLite file damaged or locked, a PostgreSQL
    server that refuses the connection (or its password) or went away mid-operation. Says where (never the
    password) and what to do; what was committed before is kept."""


class DatabaseUnavailableError(DatabaseError):
    """The database worked and does not now: the server stopped answering (or refuses connections) after it
    answered, or another process held a lock past the wait. Nothing to change in the settings: a call fails as a
    tool failure, and a later one may succeed (the next operation reconnects)."""

    exit_code = ExitCode.TOOL_FAILED


class OAuthError(PocketError):
    """An authorization server said no (or answered nonsense). Carries its error code; never a token."""

    DESCRIPTION_LIMIT = 300

    def __init__(self, provider: str, error: str, description: str | None = None, *, status: int | None = None):
        self.provider = provider
        self.error = error
        self.description = (description or "")[: self.DESCRIPTION_LIMIT] or None
        self.status = status
        text = f"{provider}: {error}"
        if self.description:
            text += f" ({self.description})"
        super().__init__(text)


class SandboxError(ToolFailedError):
    """The sandbox could not run the tool: no Docker engine, a missing base image, a failed build."""


class BuildError(SandboxError):
    """A tool image failed to build; the message carries the tail of the build log."""
