"""Tokens out of text: what a tool prints is returned to the agent, so injected secrets are masked."""

from __future__ import annotations

import base64
from collections.abc import Iterable
from typing import Any

MASK = "[REDACTED]"
_MIN_LENGTH = 6  # shorter values (a username such as "bob") would mask ordinary words


def _forms(secret: str) -> list[str]:
    """The secret and the encodings a tool commonly prints it in (Basic auth header, base64)."""
    forms = [secret]
    encoded = base64.b64encode(secret.encode()).decode()
    forms.append(encoded.rstrip("="))
    return forms


def redact(value: Any, secrets: Iterable[str]) -> Any:
    """`value` (a string, or JSON-like data) with every secret replaced by [REDACTED], recursively."""
    patterns = sorted({f for s in secrets if s and len(s) >= _MIN_LENGTH for f in _forms(s)}, key=len, reverse=True)
    if not patterns:
        return value
    return _apply(value, patterns)


def _apply(value: Any, patterns: list[str]) -> Any:
    if isinstance(value, str):
        for pattern in patterns:
            if pattern in value:
                value = value.replace(pattern, MASK)
        return value
    if isinstance(value, dict):
        return {_apply(k, patterns): _apply(v, patterns) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(_apply(v, patterns) for v in value)
    return value


def redact_invocation(invocation: Any, secrets: Iterable[str]) -> Any:
    """An `Invocation` with every secret masked in its value, error and stderr."""
    from dataclasses import replace

    secrets = list(secrets)
    return replace(
        invocation,
        value=redact(invocation.value, secrets),
        error=redact(invocation.error, secrets),
        stderr=redact(invocation.stderr, secrets),
    )
