"""How the `pocket` command and the local pocket process meet and talk: the directory and socket, the key a
process serves, and the frames on the socket. Light on purpose: the command imports this before anything else.

The socket lives in a directory of this user's (`$XDG_RUNTIME_DIR/pocket-runner`, else `/tmp/pocket-runner-UID`)
that nobody else may enter (0700, checked), and each end checks the other's uid (SO_PEERCRED).

A process serves one key: the runner's code, the interpreter, the working directory, the settings files'
contents and the environment variables that change results (POCKET_*, DOCKER_*, proxies, HOME ...). Any change
is another key, so another process: a process never serves a call with other settings or code than the command
would have loaded itself. The socket is named by a keyed hash of the key, since socket names are visible to every
user (/proc/net/unix) and the key covers secrets.

A frame is a 4-byte big-endian length and that many bytes of JSON: one object.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import struct
import sys
from pathlib import Path
from typing import Any, NamedTuple, Protocol

PROTOCOL = 1
SETTINGS_FILE, SECRETS_FILE = "settings.toml", ".secrets.toml"  # as runner.settings names them
MAX_FRAME = 256 * 1024 * 1024  # a result is capped by the output limit; this only refuses garbage
_LENGTH = struct.Struct(">I")
_PEERCRED = struct.Struct("3i")  # struct ucred: pid, uid, gid
# What else a call's result depends on besides POCKET_ settings: the engine, the cache and data folders,
# proxies and certificates (OAuth, git, builds), the programs found on PATH.
_ENVIRONMENT_PREFIXES = ("POCKET_", "DOCKER_", "XDG_", "SSL_", "GIT_", "REQUESTS_", "CURL_")
_ENVIRONMENT_NAMES = {"HOME", "PATH", "PYTHONPATH", "TMPDIR", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY"}
_FALSE, _TRUE = {"0", "off", "f", "false", "n", "no"}, {"1", "on", "t", "true", "y", "yes"}  # as pydantic reads


class Unusable(Exception):
    """No local process can serve this command (the reason is said once on stderr, then the call runs here)."""


class Output(Protocol):
    """Where the command's words go: the terminal, or the socket back to the command."""

    def out(self, text: str) -> None:
        """A line of results, on stdout."""

    def say(self, message: str) -> None:
        """A notice or an error, on stderr as `pocket: message`."""

    def err(self, text: str) -> None:
        """What the tool wrote on its stderr, as it is."""


class Call(NamedTuple):
    """One `pocket invoke`, as the command parsed it."""

    source: str
    tool: str
    body: Any
    user: str
    variables: dict[str, str]
    timeout: float | None

    @classmethod
    def of(cls, data: dict[str, Any]) -> Call:
        return cls(**{field: data[field] for field in cls._fields})


class Place(NamedTuple):
    """Where the process serving one key listens, locks and logs."""

    directory: Path
    name: str  # the keyed hash

    @property
    def socket(self) -> str:
        return str(self.directory / f"{self.name}.sock")

    @property
    def lock(self) -> Path:
        return self.directory / f"{self.name}.lock"

    @property
    def log(self) -> Path:
        return self.directory / f"{self.name}.log"


class Key(NamedTuple):
    """What the command would load itself, and whether it hands calls to a local process at all."""

    material: bytes
    files: tuple[Path, ...]  # the settings files read, in order
    enabled: bool | None  # `[cli] daemon` / POCKET_CLI__DAEMON; None: a value the settings will refuse


def directory() -> Path:
    """This user's directory for the sockets, created 0700; Unusable when it is anyone else's or open to them."""
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    # /tmp is shared: the checks below refuse a folder someone else made there first
    path = Path(runtime) / "pocket-runner" if runtime else Path(f"/tmp/pocket-runner-{os.getuid()}")  # noqa: S108
    try:
        path.mkdir(mode=0o700, exist_ok=True)
        status = os.lstat(path)
    except OSError as exc:
        raise Unusable(f"cannot use {path}: {exc.strerror}") from None
    if not os.path.isdir(path) or os.path.islink(path) or status.st_uid != os.getuid():
        raise Unusable(f"{path} is not a folder of this user's")
    if status.st_mode & 0o077:
        raise Unusable(f"{path} is open to other users (mode {status.st_mode & 0o777:o}; it must be 700)")
    return path


def place(folder: Path, key: Key) -> Place:
    """The socket of the process serving `key`, named by a hash keyed with this user's secret (made once)."""
    secret_file = folder / "secret"
    try:
        secret = secret_file.read_bytes()
    except FileNotFoundError:
        secret = os.urandom(32)
        try:
            descriptor = os.open(secret_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:  # another command made it first
            secret = secret_file.read_bytes()
        else:
            with os.fdopen(descriptor, "wb") as stream:
                stream.write(secret)
    name = hashlib.blake2b(key.material, key=secret, digest_size=12).hexdigest()
    where = Place(folder, name)
    if len(where.socket.encode()) > 107:  # sun_path holds 108 bytes with its NUL
        raise Unusable(f"the socket path {where.socket} is too long (set XDG_RUNTIME_DIR to a shorter folder)")
    return where


def key(settings_file: str | None, secrets_file: str | None, *, cwd: Path | None = None) -> Key | None:
    """The key of a command run in `cwd` with these files; None when a file given is missing or unreadable (the
    command then reports it as it always has)."""
    try:
        base = cwd or Path.cwd()
    except FileNotFoundError:  # the working folder was removed
        return None
    files, parts = [], [f"protocol {PROTOCOL}", sys.executable, sys.version, str(base), _code()]
    for given, default in ((settings_file, SETTINGS_FILE), (secrets_file, SECRETS_FILE)):
        path = (Path(given) if given is not None else base / default).resolve()
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            if given is not None:
                return None
            continue
        except OSError:
            return None
        files.append((path, data))
        parts.append(f"file {path} {hashlib.blake2b(data).hexdigest()}")
    environ = sorted((k, v) for k, v in os.environ.items() if _counts(k))
    parts.extend(f"env {k}={v}" for k, v in environ)
    return Key("\0".join(parts).encode(errors="surrogateescape"), tuple(p for p, _ in files), _enabled(files))


def _counts(name: str) -> bool:
    return name.startswith(_ENVIRONMENT_PREFIXES) or name.upper() in _ENVIRONMENT_NAMES


def _code() -> str:
    """The runner's own files, by size and modification time: an upgraded or edited runner is another key."""
    package = Path(__file__).resolve().parent.parent
    stats = []
    for root in (package, package.parent / "schemas"):
        for folder, subfolders, names in os.walk(root):
            subfolders[:] = [s for s in subfolders if s != "__pycache__"]
            for name in names:
                status = os.stat(os.path.join(folder, name))
                stats.append(f"{folder}/{name}:{status.st_size}:{status.st_mtime_ns}")
    return hashlib.blake2b("\n".join(sorted(stats)).encode(errors="surrogateescape")).hexdigest()


def _enabled(files: list[tuple[Path, bytes]]) -> bool | None:
    """`[cli] daemon` from the files, POCKET_CLI__DAEMON winning, read as the settings will read it."""
    value: Any = True
    for _, data in files:
        if b"daemon" not in data.lower():  # the common case: no need to parse TOML here
            continue
        import tomllib

        try:
            document = tomllib.loads(data.decode())
        except (UnicodeDecodeError, tomllib.TOMLDecodeError):
            return None
        section = {str(k).lower(): v for k, v in document.items()}.get("cli", {})
        if isinstance(section, dict):
            value = {str(k).lower(): v for k, v in section.items()}.get("daemon", value)
    names = (k for k in os.environ if k.startswith("POCKET_") and k[7:].lower() == "cli__daemon")
    value = next((os.environ[k] for k in names), value)
    if isinstance(value, str):
        value = value.strip().lower()
        return False if value in _FALSE else True if value in _TRUE else None
    return value if isinstance(value, bool) else None


def send(sock: socket.socket, frame: dict[str, Any]) -> None:
    data = json.dumps(frame).encode()
    sock.sendall(_LENGTH.pack(len(data)) + data)


def receive(sock: socket.socket) -> dict[str, Any] | None:
    """The next frame, or None when the other end closed the connection between frames."""
    head = _exactly(sock, _LENGTH.size)
    if head is None:
        return None
    (length,) = _LENGTH.unpack(head)
    if length > MAX_FRAME:
        raise ConnectionError(f"a frame of {length} bytes is over the limit")
    data = _exactly(sock, length)
    if data is None:
        raise ConnectionError("the connection closed in the middle of a frame")
    frame = json.loads(data)
    if not isinstance(frame, dict):
        raise ConnectionError("a frame is not a JSON object")
    return frame


def _exactly(sock: socket.socket, size: int) -> bytes | None:
    chunks, left = [], size
    while left:
        chunk = sock.recv(min(left, 1 << 20))
        if not chunk:
            if left == size:
                return None
            raise ConnectionError("the connection closed in the middle of a frame")
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def peer_uid(sock: socket.socket) -> int:
    """The uid of the process at the other end, as the kernel recorded it when it connected."""
    _, uid, _ = _PEERCRED.unpack(sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _PEERCRED.size))
    return uid
