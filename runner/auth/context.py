"""What every part of the Authenticator shares: the settings, one HTTP client, the store, resolved providers.

Kept apart so the parts (refresh, consent, device, pages, admin) depend on it and not on each other's state.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
import time
from collections.abc import Iterable
from typing import Any

import httpx

from runner.auth.oauth import Client, OAuthHandler, apply_metadata, fetch_metadata, make_handler
from runner.auth.providers import Provider, configured, unknown_provider
from runner.auth.store import Credential, CredentialStore
from runner.errors import AuthUnavailableError, SettingsError
from runner.settings import CredentialSettings, Settings

DISCOVERY_MAX_AGE = 24 * 3600.0  # discovered metadata is fetched again after a day (kept if that fails)
DISCOVERY_DIR = "discovery"


class AuthContext:
    """The settings, HTTP client and store of one Authenticator, and the providers resolved from them."""

    def __init__(self, settings: Settings, http: httpx.Client | None = None):
        self.settings: Settings = settings
        self.config: CredentialSettings = settings.credentials
        # Never follow a redirect: a token request carries secrets (the client's, the refresh token) that a 307
        # would resend to wherever it points.
        self.http: httpx.Client = (
            http if http is not None else httpx.Client(timeout=self.config.http_timeout_seconds, follow_redirects=False)
        )
        self._owns_http = http is None
        self._store: CredentialStore | None = None
        self._providers: dict[str, tuple[Provider, float]] = {}  # name -> (provider, until when it holds)
        self._required: dict[str, set[str]] = {}
        self._lock = threading.Lock()

    @property
    def store(self) -> CredentialStore:
        """Opened on first use: a Pocket whose tools need no credential never creates the key file."""
        with self._lock:
            if self._store is None:
                self._store = CredentialStore(
                    self.settings.data_dir, self.config.encryption_key, database_url=self.config.database_url
                )
            return self._store

    def save(self, credential: Credential) -> None:
        """Store a credential under its (user, provider) lock, as every writer must."""
        with self.store.lock(credential.user_id, credential.provider):
            self.store.put(credential)

    def provider(self, name: str) -> Provider:
        """The catalog entry with settings applied, endpoints discovered when only an issuer is given."""
        with self._lock:
            cached = self._providers.get(name)
        if cached is not None and time.time() < cached[1]:
            return cached[0]
        provider = configured(self.settings, name)
        if provider is None:
            raise unknown_provider(name)
        until = float("inf")
        if "oauth2" in provider.handlers and provider.issuer and not provider.is_oauth_ready:
            metadata, fetched_at = self._metadata(provider)
            provider, until = apply_metadata(provider, metadata), fetched_at + DISCOVERY_MAX_AGE
        with self._lock:
            self._providers[name] = (provider, until)
        return provider

    def _metadata(self, provider: Provider) -> tuple[dict[str, Any], float]:
        """The issuer's metadata and when it was fetched: kept in DATA_DIR/discovery with its time, fetched
        again once DISCOVERY_MAX_AGE old. A server down then (or at start, in a new process) leaves the kept
        copy in use, so calls fail only where the server is needed (a refresh), keeping the grant."""
        assert provider.issuer
        digest = hashlib.sha256(json.dumps([provider.name, provider.issuer]).encode()).hexdigest()[:32]
        path = self.settings.data_dir / DISCOVERY_DIR / f"{digest}.json"
        kept: dict[str, Any] | None = None
        try:
            kept = json.loads(path.read_text())
            if not (isinstance(kept, dict) and kept.get("issuer") == provider.issuer):
                kept = None
        except (OSError, ValueError):
            kept = None
        now = time.time()
        if kept is not None and 0 <= now - float(kept.get("fetched_at", 0)) < DISCOVERY_MAX_AGE:
            return kept["metadata"], float(kept["fetched_at"])
        try:
            metadata = fetch_metadata(provider, self.http)
        except AuthUnavailableError:
            if kept is None:
                raise
            return kept["metadata"], now - DISCOVERY_MAX_AGE + 60  # try the server again in a minute
        try:
            path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            temporary = path.with_name(f".{path.name}.{os.getpid()}")
            temporary.write_text(json.dumps({"issuer": provider.issuer, "fetched_at": now, "metadata": metadata}))
            os.replace(temporary, path)
        except OSError:
            pass  # kept only in memory: discovered again by the next process
        return metadata, now

    def client(self, provider: Provider) -> Client | None:
        """The OAuth client registered for the provider in settings, or None."""
        entry = self.settings.auth.get(provider.name)
        if entry is None or not entry.client_id:
            return None
        return Client(str(entry.client_id), entry.client_secret)

    def handler(self, provider: Provider) -> OAuthHandler:
        client = self.client(provider)
        if client is None:
            raise SettingsError(
                f"no OAuth client for {provider.title}: set [auth.{provider.name}] client_id and client_secret "
                f"in .secrets.toml (or POCKET_AUTH__{provider.name.upper()}__CLIENT_ID / __CLIENT_SECRET)"
            )
        return make_handler(provider, client, self.http)

    def require_scopes(self, provider: str, scopes: Iterable[str]) -> None:
        with self._lock:
            self._required.setdefault(provider, set()).update(scopes)

    def required_scopes(self, provider: str) -> tuple[str, ...]:
        with self._lock:
            return tuple(sorted(self._required.get(provider, ())))

    def close(self) -> None:
        if self._owns_http:
            self.http.close()
        with self._lock:
            store = self._store
        if store is not None:
            store.close()
