"""pocket-runner: run authenticated tools for AI agents in hardened containers.

The public API is small and imported lazily, so `import runner` stays fast: docker, httpx,
cryptography and jsonschema load only when first needed.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from runner.exports import lazy

__version__ = "0.1.0"

_EXPORTS = {
    "Pocket": "runner.pocket",
    "function_tool": "runner.function_tools",
    "FunctionTool": "runner.function_tools",
    "Invocation": "runner.invocation",
    "Outcome": "runner.invocation",
    "NetworkReceipt": "runner.invocation",
    "NetworkAccess": "runner.invocation",
    "HostTraffic": "runner.invocation",
    "RefusedHost": "runner.invocation",
    "AuditLog": "runner.audit",
    "AuditRecord": "runner.audit",
    "Manifest": "runner.manifest",
    "load_manifest": "runner.manifest",
    "ToolAnnotations": "runner.manifest",
    "Settings": "runner.settings",
    "load_settings": "runner.settings",
    "PocketError": "runner.errors",
    "ManifestError": "runner.errors",
    "SourceError": "runner.errors",
    "SettingsError": "runner.errors",
    "UnreadableCredential": "runner.errors",
    "DatabaseError": "runner.errors",
    "DatabaseUnavailableError": "runner.errors",
    "OAuthError": "runner.errors",
    "AuthRequiredError": "runner.errors",
    "AuthUnavailableError": "runner.errors",
    "ToolFailedError": "runner.errors",
    "SandboxError": "runner.errors",
    "BuildError": "runner.errors",
    "ExitCode": "runner.errors",
    "Problem": "runner.errors",
}

__all__ = [
    "AuditLog",
    "AuditRecord",
    "AuthRequiredError",
    "AuthUnavailableError",
    "BuildError",
    "DatabaseError",
    "DatabaseUnavailableError",
    "ExitCode",
    "FunctionTool",
    "HostTraffic",
    "Invocation",
    "Manifest",
    "ManifestError",
    "NetworkAccess",
    "NetworkReceipt",
    "OAuthError",
    "Outcome",
    "Pocket",
    "PocketError",
    "Problem",
    "RefusedHost",
    "SandboxError",
    "Settings",
    "SettingsError",
    "SourceError",
    "ToolAnnotations",
    "ToolFailedError",
    "UnreadableCredential",
    "__version__",
    "function_tool",
    "load_manifest",
    "load_settings",
]

if TYPE_CHECKING:
    from runner.audit import AuditLog, AuditRecord
    from runner.errors import (
        AuthRequiredError,
        AuthUnavailableError,
        BuildError,
        DatabaseError,
        DatabaseUnavailableError,
        ExitCode,
        ManifestError,
        OAuthError,
        PocketError,
        Problem,
        SandboxError,
        SettingsError,
        SourceError,
        ToolFailedError,
        UnreadableCredential,
    )
    from runner.function_tools import FunctionTool, function_tool
    from runner.invocation import HostTraffic, Invocation, NetworkAccess, NetworkReceipt, Outcome, RefusedHost
    from runner.manifest import Manifest, ToolAnnotations, load_manifest
    from runner.pocket import Pocket
    from runner.settings import Settings, load_settings

__getattr__ = lazy(__name__, _EXPORTS)
