"""Credentials at rest: rows in a database, every credential encrypted with AES-256-GCM.

- The database (runner/database.py) is an SQLite file in the data directory by default, or the PostgreSQL
  server `credentials.database_url` names, shared by every runner replica given the same URL and key; the
  rows and their sealing are the same in both. With PostgreSQL the key must be `encryption_key` (a key file
  would be one machine's alone).
- One row per (user, provider). The whole credential (tokens, scopes, expiry, extra fields) is one
  JSON document encrypted with AES-256-GCM; the associated data binds it to its (user, provider) row,
  so a ciphertext copied to another row does not decrypt. No token byte is readable in the file.
- The key comes from settings (base64 of 32 bytes) or from a key file generated on first use, created
  with mode 0600 and refused when others can read it. A key file gone missing is not replaced while rows
  sealed with it remain: such rows are `UnreadableCredential`s, as are rows sealed with another key.
- Every write is one transaction: an interrupted one leaves the previous row intact. A database that cannot be
  used (a damaged file, a server refusing the connection or gone mid-operation) is a DatabaseError naming it
  (never the URL's password) and what to do. A key that decrypts none of the other stored rows (a changed
  `encryption_key` or key file) writes nothing: rows under two keys would lose one set for good.
- `database` (public) is the seam for what else is kept beside the credentials, in the same database.
- `lock(user, provider)` serialises refreshes across threads, processes and, with PostgreSQL, machines
  (`Database.lock`: a file lock, or an advisory lock).
- Authorization requests in progress are shared by every process using the database (table `requests`), so
  whichever process receives the callback completes any of them: each row is keyed by a hash of its state
  (the state itself is not stored), its document (with the PKCE code verifier) sealed like a credential;
  `claim_request` takes one exactly once across processes (a conditional UPDATE), `end_request` records its
  outcome for the process that opened it.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import secrets
import stat
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from pydantic import SecretStr

from runner.database import Database, open_database
from runner.errors import SettingsError, UnreadableCredential

STORE_DIR = "credentials"
KEY_FILE = "auth.key"
STORE_FILE = "credentials.sqlite3"
ACTIVE, EXPIRED = "active", "expired"


@dataclass(frozen=True)
class Credential:
    """What the runner holds for one user at one provider. Secrets are SecretStr: never in a repr."""

    user_id: str
    provider: str
    kind: str  # oauth2, token, basic, keypair
    secrets: dict[str, SecretStr]  # token, refresh_token, username, password, api_key, api_secret
    scopes: tuple[str, ...] = ()  # granted scopes, as the provider reported them
    expires_at: float | None = None  # epoch seconds
    obtained_at: float = field(default_factory=time.time)
    status: str = ACTIVE
    extra: dict[str, str] = field(default_factory=dict)  # non-secret response fields (workspace name...)

    def value(self, name: str) -> str | None:
        secret = self.secrets.get(name)
        return secret.get_secret_value() if secret is not None else None

    def values(self) -> dict[str, str]:
        return {name: secret.get_secret_value() for name, secret in self.secrets.items()}

    def expires_within(self, margin: float, now: float | None = None) -> bool:
        """True when the token expires within `margin` seconds. The margin never exceeds half the
        token's lifetime, so a short-lived token is not refreshed on every use."""
        if self.expires_at is None:
            return False
        now = time.time() if now is None else now
        lifetime = max(self.expires_at - self.obtained_at, 0.0)
        return now + min(margin, lifetime / 2) >= self.expires_at

    def to_json(self) -> bytes:
        return json.dumps(
            {
                "kind": self.kind,
                "secrets": self.values(),
                "scopes": list(self.scopes),
                "expires_at": self.expires_at,
                "obtained_at": self.obtained_at,
                "status": self.status,
                "extra": self.extra,
            }
        ).encode()

    @classmethod
    def from_json(cls, user_id: str, provider: str, data: bytes) -> Credential:
        doc = json.loads(data)
        return cls(
            user_id=user_id,
            provider=provider,
            kind=doc["kind"],
            secrets={k: SecretStr(v) for k, v in doc["secrets"].items()},
            scopes=tuple(doc.get("scopes", ())),
            expires_at=doc.get("expires_at"),
            obtained_at=doc.get("obtained_at") or 0.0,
            status=doc.get("status", ACTIVE),
            extra=doc.get("extra", {}),
        )

    def __repr__(self) -> str:
        return (
            f"Credential(user_id={self.user_id!r}, provider={self.provider!r}, kind={self.kind!r}, "
            f"secrets=[{', '.join(sorted(self.secrets))}], scopes={list(self.scopes)!r}, "
            f"expires_at={self.expires_at!r}, status={self.status!r})"
        )

    __str__ = __repr__


def _configured_key(configured: SecretStr) -> bytes:
    try:
        key = base64.b64decode(configured.get_secret_value(), validate=True)
    except ValueError:
        key = b""
    if len(key) != 32:
        raise SettingsError("credentials.encryption_key must be the base64 encoding of 32 random bytes")
    return key


def _read_key(path: Path) -> bytes:
    mode = path.stat().st_mode
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise SettingsError(f"{path}: the credential key file must be readable by its owner only (chmod 600 {path})")
    try:
        key = base64.b64decode(path.read_bytes().strip(), validate=True)
    except ValueError:
        key = b""
    if len(key) != 32:
        raise SettingsError(f"{path}: not a credential key file (expected base64 of 32 bytes)")
    return key


def _new_key(path: Path) -> bytes:
    """A key file made for a store with no row yet (or none sealed with another key), then read back."""
    # Written whole to a private temporary file, then linked into place: a process that loses the
    # race reads the winner's complete key, never a half-written one.
    temporary = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as file:
            file.write(base64.b64encode(secrets.token_bytes(32)) + b"\n")
            file.flush()
            os.fsync(file.fileno())
        try:
            os.link(temporary, path)
        except FileExistsError:
            pass
    finally:
        temporary.unlink(missing_ok=True)
    return _read_key(path)


def _private_folder(path: Path) -> None:
    """Make the folder, or keep it, private to this user (0700). One this user may not make or chmod
    (another user's folder, a read-only mount) is a settings problem to explain, not a crash."""
    try:
        path.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(path, 0o700)
    except OSError as exc:
        whose = "; it belongs to another user" if path.exists() and path.stat().st_uid != os.geteuid() else ""
        raise SettingsError(
            f"cannot use {path} for credentials: {exc.strerror}{whose}. Set data_dir (in settings.toml, or "
            "POCKET_DATA_DIR) to a folder of this user's own"
        ) from None


def database_path(data_dir: Path) -> Path:
    """The credentials database under `data_dir` (the audit log keeps its table there too), in its private
    folder (as `CredentialStore` makes it)."""
    folder = Path(data_dir) / STORE_DIR
    _private_folder(folder)
    return folder / STORE_FILE


class CredentialStore:
    """Encrypted credentials per (user, provider), in an SQLite file or a shared PostgreSQL database."""

    def __init__(
        self,
        data_dir: Path,
        encryption_key: SecretStr | None = None,
        *,
        database_url: SecretStr | None = None,
        path: Path | None = None,
    ):
        if database_url is not None and encryption_key is None:
            raise SettingsError(
                "credentials.database_url keeps the credentials in a database every runner replica shares: set "
                "credentials.encryption_key too (base64 of 32 random bytes, the same on every replica; in "
                ".secrets.toml or POCKET_CREDENTIALS__ENCRYPTION_KEY), since a generated key file would be this "
                "machine's alone"
            )
        # Locally, a private folder: the key file, the database with its WAL and shared-memory files, the locks.
        self._dir = Path(data_dir) / STORE_DIR
        if database_url is None:
            _private_folder(self._dir)
        self.database: Database = open_database(
            database_url,
            path=Path(path) if path is not None else self._dir / STORE_FILE,
            label="credentials",
            recovery="sign in again with `pocket auth login PROVIDER`",
        )
        self._guard = threading.Lock()
        self._key_checked = False  # the key decrypts the rows already stored (see require_key)
        blob = self.database.blob
        self.database.create(
            {
                "credentials": [
                    f"CREATE TABLE IF NOT EXISTS credentials (user_id TEXT NOT NULL, provider TEXT NOT NULL, sealed"
                    f" {blob} NOT NULL, updated_at DOUBLE PRECISION NOT NULL, PRIMARY KEY (user_id, provider))"
                ],
                "requests": [
                    f"CREATE TABLE IF NOT EXISTS requests (key TEXT PRIMARY KEY, user_id TEXT NOT NULL, provider TEXT"
                    f" NOT NULL, sealed {blob} NOT NULL, expires_at DOUBLE PRECISION NOT NULL, claimed INTEGER NOT"
                    " NULL DEFAULT 0, outcome TEXT)"
                ],
            }
        )
        self._key_file = self._dir / KEY_FILE
        self._aead: AESGCM | None = None
        self._key_file_unused = encryption_key is not None
        if encryption_key is not None:
            self._aead = AESGCM(_configured_key(encryption_key))
        elif self._key_file.exists():
            self._aead = AESGCM(_read_key(self._key_file))
        elif not self.entries():  # rows without their key file wait for it: see require_key
            self._aead = AESGCM(_new_key(self._key_file))

    @property
    def where(self) -> str:
        """The file or the database URL (without its password) the credentials are kept in."""
        return self.database.where

    def require_key(self, user_id: str, provider: str) -> None:
        """Make sure a credential of (user, provider) can be stored, before a person is asked to consent.

        A lost key file is replaced only when no other row was sealed with it: a new key would leave
        those rows unreadable for good, even once the file is restored. Otherwise a SettingsError says
        what to do."""
        with self._guard:
            if self._aead is not None:
                self._check_key(user_id, provider)
                return
            others = [entry for entry in self.entries() if entry != (user_id, provider)]
            if others:
                count = f"{len(others)} stored credential{'s were' if len(others) > 1 else ' was'}"
                raise SettingsError(
                    f"cannot store a {provider} credential for user {user_id!r}: the key file {self._key_file} "
                    f"is missing, and {count} encrypted with it. Restore the key file, or forget them with "
                    "`pocket auth logout PROVIDER --user USER` (`pocket auth status --all-users` lists them); "
                    "a new key is made once none is left"
                )
            self._aead = AESGCM(_new_key(self._key_file))

    def _check_key(self, user_id: str, provider: str) -> None:
        """Refuse to write with a key that decrypts no stored row while rows of others (user, provider) exist:
        it is not the key they were sealed with, and rows under two keys would leave one set unreadable for
        good. A row that alone fails to decrypt (tampered with) does not stop the others from being written,
        nor does the writer's own unreadable row when it is the only one (it is being replaced)."""
        if self._key_checked:
            return
        with self.database.read() as db:
            stored = db.execute("SELECT user_id, provider, sealed FROM credentials").fetchall()
        for user, name, sealed in stored:
            try:
                self._decrypt(bytes(sealed), self._aad(user, name))
            except InvalidTag:
                continue
            self._key_checked = True
            return
        others = [(user, name) for user, name, _ in stored if (user, name) != (user_id, provider)]
        if not others:
            return  # nothing to agree with yet
        where = "credentials.encryption_key" if self._key_file_unused else f"the key file {self._key_file}"
        count = f"{len(others)} stored credential{'s' if len(others) > 1 else ''}"
        raise SettingsError(
            f"cannot store a {provider} credential for user {user_id!r}: the encryption key ({where}) decrypts "
            f"none of the {count} in {self.where}, so it is not the key they were sealed with. Use that key "
            "again, or forget them with `pocket auth logout PROVIDER --user USER` (`pocket auth status "
            "--all-users` lists them) before storing new ones"
        )

    def _encrypt(self, plain: bytes, aad: bytes) -> bytes:
        assert self._aead is not None
        nonce = secrets.token_bytes(12)
        return nonce + self._aead.encrypt(nonce, plain, aad)

    def _decrypt(self, sealed: bytes, aad: bytes) -> bytes:
        """Raises InvalidTag for another key's (or a tampered) row."""
        assert self._aead is not None
        return self._aead.decrypt(sealed[:12], sealed[12:], aad)

    @staticmethod
    def _aad(user_id: str, provider: str) -> bytes:
        return json.dumps(["pocket-runner credential v1", user_id, provider]).encode()

    def _seal(self, credential: Credential) -> bytes:
        self.require_key(credential.user_id, credential.provider)
        return self._encrypt(credential.to_json(), self._aad(credential.user_id, credential.provider))

    def _open(self, user_id: str, provider: str, sealed: bytes) -> Credential:
        if self._aead is None:
            raise UnreadableCredential(
                f"the stored {provider} credential of user {user_id!r} cannot be read: the key file "
                f"{self._key_file} is missing (deleted, or another data_dir?). Restore it, or forget this "
                f"credential with `pocket auth logout {provider} --user {user_id}`"
            )
        try:
            plain = self._decrypt(sealed, self._aad(user_id, provider))
        except InvalidTag:
            raise UnreadableCredential(
                f"the stored {provider} credential of user {user_id!r} cannot be decrypted: wrong key or tampered "
                f"row ({self.where}); replace it with `pocket auth login {provider} --user {user_id}`, or forget "
                f"it with `pocket auth logout {provider} --user {user_id}`"
            ) from None
        return Credential.from_json(user_id, provider, plain)

    def get(self, user_id: str, provider: str) -> Credential | None:
        with self.database.read() as db:
            row = db.execute(
                "SELECT sealed FROM credentials WHERE user_id = ? AND provider = ?", (user_id, provider)
            ).fetchone()
        return self._open(user_id, provider, bytes(row[0])) if row else None

    def put(self, credential: Credential) -> None:
        sealed = self._seal(credential)
        self.database.execute(
            "INSERT INTO credentials (user_id, provider, sealed, updated_at) VALUES (?, ?, ?, ?) "
            "ON CONFLICT (user_id, provider) DO UPDATE SET sealed = excluded.sealed, updated_at = excluded.updated_at",
            (credential.user_id, credential.provider, sealed, time.time()),
        )

    def delete(self, user_id: str, provider: str) -> bool:
        query = "DELETE FROM credentials WHERE user_id = ? AND provider = ?"
        return self.database.execute(query, (user_id, provider)).rowcount > 0

    def entries(self, user_id: str | None = None) -> list[tuple[str, str]]:
        """(user, provider) pairs stored, optionally for one user."""
        query, args = "SELECT user_id, provider FROM credentials", ()
        if user_id is not None:
            query, args = query + " WHERE user_id = ?", (user_id,)
        with self.database.read() as db:
            return [(u, p) for u, p in db.execute(query + " ORDER BY user_id, provider", args)]

    # -- authorization requests in progress, shared by the processes using this database ---------------

    @staticmethod
    def _request_aad(key: str) -> bytes:
        return json.dumps(["pocket-runner request v1", key]).encode()

    @staticmethod
    def _request_key(state: str) -> str:
        return hashlib.sha256(b"pocket-runner request v1\0" + state.encode()).hexdigest()

    def put_request(self, state: str, user_id: str, provider: str, document: bytes, expires_at: float) -> None:
        """Share a request just opened; `document` (what the callback needs, the code verifier too) is sealed.
        Rows ended or expired a day ago are dropped on the way."""
        self.require_key(user_id, provider)
        key = self._request_key(state)
        sealed = self._encrypt(document, self._request_aad(key))
        with self.database.transaction() as db:
            db.execute("DELETE FROM requests WHERE expires_at < ?", (time.time() - 86400,))
            db.execute(
                "INSERT INTO requests (key, user_id, provider, sealed, expires_at) VALUES (?, ?, ?, ?, ?) "
                "ON CONFLICT (key) DO UPDATE SET user_id = excluded.user_id, provider = excluded.provider, "
                "sealed = excluded.sealed, expires_at = excluded.expires_at, claimed = 0, outcome = NULL",
                (key, user_id, provider, sealed, expires_at),
            )

    def _open_request(self, key: str, sealed: bytes) -> bytes | None:
        if self._aead is None or not sealed:
            return None
        try:
            return self._decrypt(sealed, self._request_aad(key))
        except InvalidTag:
            return None  # sealed with another key: not a request this process can complete

    def peek_request(self, state: str) -> bytes | None:
        """The document of a request neither claimed nor ended, or None."""
        key = self._request_key(state)
        with self.database.read() as db:
            row = db.execute(
                "SELECT sealed FROM requests WHERE key = ? AND claimed = 0 AND outcome IS NULL", (key,)
            ).fetchone()
        return self._open_request(key, bytes(row[0])) if row else None

    def claim_request(self, state: str) -> bytes | None:
        """Take a request for its callback: once only, across every process and machine. None when it is
        unknown, or was claimed or ended already."""
        document = self.peek_request(state)
        if document is None:
            return None
        cursor = self.database.execute(  # whoever's UPDATE changes the row has it
            "UPDATE requests SET claimed = 1 WHERE key = ? AND claimed = 0 AND outcome IS NULL",
            (self._request_key(state),),
        )
        return document if cursor.rowcount == 1 else None

    def end_request(self, state: str, outcome: str) -> None:
        """Record how a request ended (for the process that opened it), and wipe its code verifier."""
        self.database.execute(
            "UPDATE requests SET claimed = 1, outcome = ?, sealed = ? WHERE key = ?",
            (outcome, b"", self._request_key(state)),
        )

    def request_progress(self, state: str) -> tuple[bool, str | None] | None:
        """(claimed, outcome) of a shared request, None when there is no such row."""
        with self.database.read() as db:
            row = db.execute(
                "SELECT claimed, outcome FROM requests WHERE key = ?", (self._request_key(state),)
            ).fetchone()
        return (bool(row[0]), row[1]) if row else None

    def forget_request(self, state: str) -> None:
        self.database.execute("DELETE FROM requests WHERE key = ?", (self._request_key(state),))

    @contextmanager
    def lock(self, user_id: str, provider: str) -> Iterator[None]:
        """Exclusive per (user, provider) across threads, processes and (PostgreSQL) machines."""
        with self.database.lock(json.dumps(["credential", user_id, provider])):
            yield

    def close(self) -> None:
        """Close the database connections kept open; the store opens new ones if used again."""
        self.database.close()

    def __repr__(self) -> str:
        return f"CredentialStore({self.where!r})"
