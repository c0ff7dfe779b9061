"""Hiding secrets in what the runner shows: tool results, errors, build logs and git messages.

Every redaction goes through `Redactor`, so every secret is replaced the same way and by the same marker
(`[redacted]`), longest first, so no part of a longer secret is left behind. A secret a tool was given
is also hidden in the encodings a tool might print it in (`Redactor.of(..., encoded=True)`); a deliberate
leak (a slice, a reversal) is not caught.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

REDACTED = "[redacted]"

_URL_USER = re.compile(r"(?i)\b(https?|ftps?)://[^/\s@]+@")  # a token may be the user name
_URL_PASSWORD = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*)://([^/\s:@]+):[^/\s@]*@")


def encodings(secret: str) -> set[str]:
    """The secret as a tool might print it: itself, base64 (standard and URL-safe, with and without
    padding), hex (either case) and percent-encoded."""
    raw = secret.encode()
    forms = {secret, raw.hex(), raw.hex().upper(), quote(secret, safe="")}
    for encoded in (base64.b64encode(raw), base64.urlsafe_b64encode(raw)):
        forms |= {encoded.decode(), encoded.decode().rstrip("=")}
    return forms


@dataclass(frozen=True)
class Redactor:
    """Replaces each secret by its replacement (usually `REDACTED`), longest secret first."""

    replacements: tuple[tuple[str, str], ...] = ()

    @classmethod
    def of(cls, secrets: Iterable[str], *, encoded: bool = False, replacement: str = REDACTED) -> Redactor:
        """A redactor of `secrets` (empty ones ignored); with `encoded`, of their common encodings too."""
        forms = {form for s in secrets if s for form in (encodings(s) if encoded else {s})}
        return cls.labelled(dict.fromkeys(forms, replacement))

    @classmethod
    def labelled(cls, pairs: Mapping[str, str]) -> Redactor:
        """A redactor replacing each key of `pairs` by its value, for secrets better named than masked."""
        ordered = sorted(((s, r) for s, r in pairs.items() if s), key=lambda pair: -len(pair[0]))
        return cls(tuple(ordered))

    def __or__(self, other: Redactor) -> Redactor:
        return Redactor.labelled(dict(other.replacements) | dict(self.replacements))

    def __bool__(self) -> bool:
        return bool(self.replacements)

    def __call__(self, text: str) -> str:
        for secret, replacement in self.replacements:
            text = text.replace(secret, replacement)
        return text

    def deep(self, value: Any) -> Any:
        """`value` with every string in it redacted, at any depth of lists, tuples and dicts (keys too)."""
        if isinstance(value, str):
            return self(value)
        if isinstance(value, list | tuple):
            return [self.deep(item) for item in value]
        if isinstance(value, dict):
            return {self.deep(k): self.deep(v) for k, v in value.items()}
        return value

    def __repr__(self) -> str:
        return f"Redactor({len(self.replacements)} secrets)"


def url_credentials(text: str) -> str:
    """`text` with the credentials of every URL in it (`user:password@`, or a token as the user) hidden."""
    text = _URL_USER.sub(rf"\1://{REDACTED}@", text)
    return _URL_PASSWORD.sub(rf"\1://\2:{REDACTED}@", text)
