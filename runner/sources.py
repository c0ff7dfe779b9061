"""Tool sources: turn what a user typed (a folder or a git URL) into the folders that hold a pocket.json.

Why this module exists: tools are shared as folders and as git repositories, and a run has to be
reproducible. So a git source is always resolved to one commit, which is reported (users can pin it)
and checked out once into a cache keyed by URL and commit. A checkout is written beside its final
place and renamed into it, so the cache never holds a half-written entry and two processes fetching
the same commit both succeed. A known commit is used without the network; a branch or tag falls back
to its last known commit when the remote cannot be reached, with a warning.

git runs non-interactively (no terminal or askpass prompt, stdin closed, a timeout): a wrong URL or a
private repository fails fast with a short message instead of hanging. Credentials in a URL
(`https://user:token@host/...`) never appear in a message or a progress line.

Sources:
- a folder holding a pocket.json, or a folder searched for every folder below it that holds one;
- a git URL (`https://`, `http://`, `ssh://`, `git://`, `file://`, `user@host:path`), optionally
  pinned as `URL@REF#SUBDIR`, or a `https://HOST/OWNER/REPO/tree/REF/SUBDIR` page URL.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from runner.errors import SourceError
from runner.manifest import MANIFEST_NAME
from runner.redaction import Redactor, url_credentials

GIT_TIMEOUT_SECONDS = 120.0
SKIPPED_DIRS = frozenset({".git", "node_modules", ".venv", "__pycache__"})  # and every hidden folder

_GIT_SCHEMES = ("https://", "http://", "ssh://", "git://", "file://")
_SCP_LIKE = re.compile(r"^[^@/:\s-][^@/:\s]*@[^@/:\s]+:(?!//)")  # git@host:owner/repo.git, never an -option
_FULL_SHA = re.compile(r"^[0-9a-fA-F]{40}$")
_ABBREV_SHA = re.compile(r"^[0-9a-fA-F]{4,39}$")
_TREE_PATH = re.compile(r"^/([^/]+)/([^/]+)/tree/(.+)$")
_MEMORY_FILE = "refs.json"
_STALE_TEMP_SECONDS = 3600.0
# Variables that would point git at another repository than the one we run it in.
_GIT_LOCATION_VARS = frozenset(
    {
        "GIT_DIR",
        "GIT_WORK_TREE",
        "GIT_INDEX_FILE",
        "GIT_OBJECT_DIRECTORY",
        "GIT_ALTERNATE_OBJECT_DIRECTORIES",
        "GIT_COMMON_DIR",
        "GIT_NAMESPACE",
        "GIT_PREFIX",
    }
)


@dataclass(frozen=True)
class ToolFolder:
    path: Path  # folder holding a pocket.json
    source: str  # the source string as the user gave it
    commit: str | None  # resolved git commit (40 hex) for git sources, None for local folders


def find_tool_folders(
    source: str, *, cache_dir: Path, progress: Callable[[str], None] | None = None
) -> list[ToolFolder]:
    """Every folder holding a pocket.json that `source` names, sorted. Raises SourceError.

    Git sources are fetched into `cache_dir / "git"`; `progress` receives one human line per step
    (what is fetched, which commit, cache use, warnings).
    """
    say = progress or (lambda _line: None)
    spec = _parse_git_source(source)
    if spec is None:
        return [ToolFolder(path, source, None) for path in _find_local(source)]
    checkout, commit, subdir = _checkout(spec, Path(cache_dir).expanduser().resolve() / "git", say)
    where = f"{url_credentials(spec.url)} @ {commit[:7]}"
    root = checkout
    if subdir:
        root = (checkout / subdir).resolve()
        if not root.is_relative_to(checkout.resolve()):
            raise SourceError(f"{url_credentials(source)}: folder {subdir!r} points outside the repository.")
        if not root.is_dir():
            raise SourceError(
                f"{url_credentials(source)}: there is no folder {subdir!r} in {where}. "
                f"Check the part after '#' (a path from the repository root). {_cache_note(checkout)}"
            )
    folders = _tool_folders_below(root)
    if not folders:
        inside = f"folder {subdir!r} of {where}" if subdir else where
        raise SourceError(
            f"{url_credentials(source)}: no pocket.json in {inside} or any folder below it. "
            f"Check the repository, ref and folder (`URL@REF#FOLDER`). {_cache_note(checkout)}"
        )
    return [ToolFolder(path, source, commit) for path in folders]


def _cache_note(checkout: Path) -> str:
    return f"(Read from the cached copy {checkout}: delete that folder to fetch it again.)"


# --- local folders ------------------------------------------------------------------------------


def _find_local(source: str) -> list[Path]:
    path = Path(source).expanduser().resolve()  # a relative path is taken from the current directory
    if not path.exists():
        raise SourceError(
            f"tool folder not found: {path} (from source {source!r}). "
            "Give an existing folder, or a git URL such as https://host/owner/repo."
        )
    if not path.is_dir():
        hint = f"give its folder: {path.parent}" if path.name == MANIFEST_NAME else "give a folder"
        raise SourceError(f"{path} is a file, not a folder (from source {source!r}); {hint}.")
    folders = _tool_folders_below(path)
    if not folders:
        raise SourceError(
            f"no pocket.json in {path} or any folder below it (from source {source!r}; skipped: hidden "
            "folders, node_modules, __pycache__). Point at a tool folder or a folder of tool folders."
        )
    return folders


def _tool_folders_below(root: Path) -> list[Path]:
    """`root` if it holds a pocket.json, else every folder below it that does.

    The search does not go into a tool folder: what is inside belongs to that tool (its tests may
    well hold pocket.json fixtures).
    """
    if (root / MANIFEST_NAME).is_file():
        return [root]
    found: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(root):  # does not follow symlinked folders
        if MANIFEST_NAME in filenames and Path(dirpath) != root:
            found.append(Path(dirpath))
            dirnames[:] = []
            continue
        dirnames[:] = sorted(d for d in dirnames if d not in SKIPPED_DIRS and not d.startswith("."))
    return sorted(found)


# --- parsing git sources ------------------------------------------------------------------------


@dataclass(frozen=True)
class _GitSpec:
    url: str  # what git clones (may carry credentials: never show it unredacted)
    ref: str | None
    subdir: str | None
    tree_rest: str | None  # "REF/SUBDIR" of a /tree/ URL, split once the remote's refs are known


def _parse_git_source(source: str) -> _GitSpec | None:
    """`URL@REF#SUBDIR` or a /tree/ URL; None when `source` is not a git URL (then it is a folder)."""
    text = source.strip()
    lowered = text.lower()
    scheme = next((s for s in _GIT_SCHEMES if lowered.startswith(s)), None)
    if scheme is None and not _SCP_LIKE.match(text):
        return None
    text, _, subdir = text.partition("#")
    if scheme is not None:
        authority, slash, path = text[len(scheme) :].partition("/")
        head = text[: len(scheme)] + authority + slash
    else:
        head, _, path = text.partition(":")
        head += ":"
    ref = None
    if "@" in path:
        path, _, ref = path.rpartition("@")
        if not ref:
            raise SourceError(
                f"{url_credentials(source)}: nothing after '@'. Write URL@REF with a branch, tag or commit."
            )
    subdir = subdir.strip("/") or None
    tree = _TREE_PATH.match("/" + path.rstrip("/")) if scheme in ("https://", "http://") else None
    if tree is not None:
        if ref or subdir:
            raise SourceError(
                f"{url_credentials(source)}: a /tree/ URL already names the ref and folder; "
                "drop '@REF' and '#FOLDER', or use the repository URL with them."
            )
        return _GitSpec(f"{head}{tree[1]}/{tree[2]}", None, None, tree[3])
    url = head + path
    if not path.strip("/"):
        raise SourceError(f"{url_credentials(source)}: the URL names no repository.")
    return _GitSpec(url, ref, subdir, None)


def _url_secrets(url: str) -> list[str]:
    """The parts of `url`'s userinfo that could be credentials, to scrub from git's output."""
    match = re.match(r"(?i)^[a-z][a-z0-9+.-]*://([^/@]+)@", url)
    if not match:
        return []
    user, _, password = match[1].partition(":")
    secrets = [password] if password else []
    if url.lower().startswith(("http://", "https://")):
        secrets.append(user)
    return [s for s in secrets if len(s) >= 3]


def _cache_key(url: str) -> str:
    """One folder name per repository: the same repository written slightly differently shares it."""
    normal = url.strip().rstrip("/")
    scheme, sep, rest = normal.partition("://")
    if sep:
        authority, slash, path = rest.partition("/")
        authority = authority.rpartition("@")[2].lower()
        normal = f"{scheme.lower()}://{authority}{slash}{path}"
    normal = normal.removesuffix(".git").rstrip("/")
    name = re.sub(r"[^A-Za-z0-9_.-]+", "-", re.split(r"[/:]", normal)[-1]).strip(".-")[:40] or "repo"
    return f"{name}-{hashlib.sha256(normal.encode()).hexdigest()[:16]}"


# --- running git --------------------------------------------------------------------------------


class _GitError(Exception):
    """git failed; `reason` is short, clear and redacted. `final` means retrying another way won't help."""

    def __init__(self, reason: str, *, final: bool):
        super().__init__(reason)
        self.reason = reason
        self.final = final


_REASONS: list[tuple[tuple[str, ...], str, bool]] = [  # first match wins
    (("couldn't find remote ref", "not our ref", "no such remote ref", "unadvertised object"), "", False),
    (("shallow", "dumb http transport"), "", False),
    (("repository not found", "does not appear to be a git repository", "not exported", "no such repository",
      "error: 404"), "repository not found", True),
    (("authentication failed", "could not read username", "could not read password", "terminal prompts disabled",
      "permission denied (publickey", "host key verification failed", "error: 403", "error: 401"),
     "authentication required or refused (for a private repository, set up git credentials or an SSH key)", True),
    (("could not resolve host", "name or service not known", "temporary failure in name resolution",
      "nodename nor servname", "unable to look up"), "could not resolve the host name", True),
    (("ssl certificate problem", "server certificate verification failed", "certificate verify failed"),
     "the server's TLS certificate was not accepted (behind a proxy or a private CA? set git's http.sslCAInfo)",
     True),
    (("connection refused", "failed to connect", "unable to connect", "couldn't connect", "timed out",
      "network is unreachable", "no route to host", "connection reset", "could not read from remote"),
     "could not reach host", True),
    (("not found", "does not exist"), "repository not found", True),
]  # fmt: skip


def _explain(stderr: str, secrets: list[str]) -> _GitError:
    text = url_credentials(Redactor.of(secrets)(stderr))
    lower = text.lower()
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.startswith("hint:")]
    last = lines[-1].removeprefix("fatal: ").removeprefix("error: ") if lines else "git failed without a message"
    for needles, reason, final in _REASONS:
        if any(needle in lower for needle in needles):
            return _GitError(reason or last[:300], final=final)
    return _GitError(last[:300], final=False)


def _git_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in _GIT_LOCATION_VARS}
    env.update(GIT_TERMINAL_PROMPT="0", GIT_ASKPASS="true", SSH_ASKPASS="true", GCM_INTERACTIVE="never", LC_ALL="C")
    env.pop("LANGUAGE", None)
    if "GIT_SSH_COMMAND" not in env and "GIT_SSH" not in env:
        env["GIT_SSH_COMMAND"] = "ssh -o BatchMode=yes -o ConnectTimeout=30"
    return env


def _git(args: list[str], *, cwd: Path | None = None, secrets: list[str] | tuple[str, ...] = ()) -> str:
    """Run git without any prompt; stdout on success, `_GitError` with a short reason on failure."""
    command = [
        "git",
        "-c", "core.askPass=true",
        "-c", f"core.hooksPath={os.devnull}",
        "-c", "core.fsmonitor=false",
        "-c", "advice.detachedHead=false",
        "-c", "init.defaultBranch=main",
        *args,
    ]  # fmt: skip
    try:
        proc = subprocess.Popen(
            command,
            cwd=cwd,
            env=_git_env(),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            errors="replace",
            start_new_session=sys.platform != "win32",  # so a timeout also ends git's helpers (ssh, remote-http)
        )
    except FileNotFoundError:
        raise SourceError("git is not installed (or not on PATH); install git to use git sources.") from None
    try:
        stdout, stderr = proc.communicate(timeout=GIT_TIMEOUT_SECONDS)
    except subprocess.TimeoutExpired:
        if sys.platform != "win32":
            os.killpg(proc.pid, signal.SIGKILL)
        else:
            proc.kill()
        proc.communicate()
        raise _GitError(f"git gave no answer within {GIT_TIMEOUT_SECONDS:g} s", final=True) from None
    if proc.returncode != 0:
        raise _explain(stderr, list(secrets))
    return stdout


# --- resolving and fetching ---------------------------------------------------------------------


class _Remote:
    """One repository URL: its cache folder, its refs (listed at most once) and the remembered resolutions."""

    def __init__(self, url: str, git_cache: Path, say: Callable[[str], None]):
        self.url = url
        self.shown = url_credentials(url)
        self.secrets = _url_secrets(url)
        self.dir = git_cache / _cache_key(url)
        self.say = say
        self._refs: dict[str, str] | None = None
        self._error: _GitError | None = None
        try:
            memory = json.loads((self.dir / _MEMORY_FILE).read_text(encoding="utf-8"))["refs"]
            self.memory: dict[str, dict[str, str]] = memory if isinstance(memory, dict) else {}
        except (OSError, ValueError, KeyError, TypeError):
            self.memory = {}

    def refs(self) -> dict[str, str]:
        """The remote's refs (`git ls-remote`), name -> object; tags also as `name^{}` -> commit."""
        if self._error is not None:
            raise self._error
        if self._refs is None:
            try:
                out = _git(["ls-remote", "--", self.url], secrets=self.secrets)
            except _GitError as exc:
                self._error = exc
                raise
            pairs = (line.split("\t", 1) for line in out.splitlines() if "\t" in line)
            self._refs = {name.strip(): sha.strip().lower() for sha, name in pairs}
        return self._refs

    def names(self, prefix: str) -> list[str]:
        refs = self._refs or {}
        return sorted(n.removeprefix(prefix) for n in refs if n.startswith(prefix) and not n.endswith("^{}"))

    def lookup(self, ref: str) -> tuple[str, str] | None:
        """The full name and the commit of `ref`, in git's own order of precedence (tags before branches)."""
        refs = self.refs()
        exact = [ref] if ref == "HEAD" or ref.startswith("refs/") else []
        for name in [*exact, f"refs/{ref}", f"refs/tags/{ref}", f"refs/heads/{ref}"]:
            if name in refs:
                return name, refs.get(name + "^{}", refs[name])
        return None

    def cached(self, commit: str) -> Path | None:
        path = self.dir / commit
        return path if path.is_dir() else None

    def remembered(self, ref: str) -> tuple[str, str] | None:
        entry = self.memory.get(ref)
        if isinstance(entry, dict) and _FULL_SHA.match(str(entry.get("commit", ""))):
            if self.cached(entry["commit"]):
                return entry["commit"], str(entry.get("resolved_at", "an earlier run"))
        return None

    def remember(self, ref: str, commit: str) -> None:
        """Write refs.json (atomically); a lost race with another process only loses that one entry."""
        self.memory[ref] = {"commit": commit, "resolved_at": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")}
        data = json.dumps({"url": self.shown, "refs": self.memory}, indent=2, sort_keys=True)
        tmp = None
        try:
            fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".json", dir=self.dir)
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                handle.write(data)
            os.replace(tmp, self.dir / _MEMORY_FILE)
        except OSError:  # the memory only helps offline runs: never fatal
            if tmp is not None:
                Path(tmp).unlink(missing_ok=True)

    def fail(self, what: str, advice: str = "") -> SourceError:
        return SourceError(f"cannot fetch {self.shown}: {what}." + (f" {advice}" if advice else ""))


def _checkout(spec: _GitSpec, git_cache: Path, say: Callable[[str], None]) -> tuple[Path, str, str | None]:
    """The cached checkout of the commit `spec` names (fetched when missing), that commit, and the subdir."""
    remote = _Remote(spec.url, git_cache, say)
    ref, subdir = spec.ref, spec.subdir
    if spec.tree_rest is not None:
        ref, subdir = _split_tree(remote, spec.tree_rest)
    label = ref or "HEAD"

    if ref and _FULL_SHA.match(ref):  # a full commit: the cache is enough, no network at all
        commit = ref.lower()
        if remote.cached(commit):
            say(f"using cached {commit[:7]} of {remote.shown}")
        else:
            say(f"fetching {remote.shown} @ {commit[:7]} ...")
            _fetch(remote, commit=commit)
        return remote.dir / commit, commit, subdir

    try:
        found = remote.lookup(label)
    except _GitError as exc:
        known = remote.remembered(label)
        if known is None:
            raise remote.fail(exc.reason, _advice(exc)) from None
        commit, when = known
        say(
            f"warning: {remote.shown}: {exc.reason}; using {_shown_ref(ref)} -> {commit[:7]} "
            f"as last resolved on {when}, which may be out of date"
        )
        return remote.dir / commit, commit, subdir

    if found is None and not remote.refs():
        raise remote.fail("the repository is empty (no branches or tags)")
    if found is None and ref and _ABBREV_SHA.match(ref):
        label = ref.lower()
        commit = _abbreviated(remote, label)
    elif found is None:
        raise remote.fail(f"ref {label!r} not found ({_known_refs(remote)})", "Use a branch, tag or commit after '@'.")
    elif remote.cached(commit := found[1]):
        say(f"using cached {commit[:7]} of {remote.shown} ({_shown_ref(ref)})")
    else:
        say(f"fetching {remote.shown} @ {_shown_ref(ref)} -> {commit[:7]} ...")
        _fetch(remote, commit=commit, ref_name=found[0])
    remote.remember(label, commit)
    return remote.dir / commit, commit, subdir


def _shown_ref(ref: str | None) -> str:
    return ref if ref else "default branch"


def _advice(exc: _GitError) -> str:
    if exc.reason == "repository not found":
        return "Check the URL, and that you have access to the repository."
    if exc.reason.startswith(("could not", "git gave no answer")):
        return "Check the URL and your network connection."
    return ""


def _known_refs(remote: _Remote) -> str:
    def listing(names: list[str]) -> str:
        more = f", and {len(names) - 10} more" if len(names) > 10 else ""
        return ", ".join(names[:10]) + more if names else "none"

    return f"branches: {listing(remote.names('refs/heads/'))}; tags: {listing(remote.names('refs/tags/'))}"


def _split_tree(remote: _Remote, rest: str) -> tuple[str, str | None]:
    """Split the `REF/SUBDIR` of a /tree/ URL: the longest branch or tag that starts it, else a commit."""
    first, _, after = rest.partition("/")
    if _FULL_SHA.match(first):
        return first, after or None
    offline: _GitError | None = None
    try:
        remote.refs()
        names = set(remote.names("refs/heads/")) | set(remote.names("refs/tags/"))
    except _GitError as exc:
        offline, names = exc, {name for name in remote.memory if name != "HEAD"}  # the refs resolved before
    matches = [n for n in names if rest == n or rest.startswith(n + "/")]
    if matches:
        ref = max(matches, key=len)
        return ref, rest[len(ref) :].strip("/") or None
    if _ABBREV_SHA.match(first):
        return first, after or None
    if offline is not None:
        raise remote.fail(offline.reason, _advice(offline))
    raise remote.fail(
        f"no branch, tag or commit starts {rest!r} ({_known_refs(remote)})", "Check the /tree/ part of the URL."
    )


def _abbreviated(remote: _Remote, prefix: str) -> str:
    """The commit an abbreviated hash names: known already, or found in the repository's full history."""
    known = remote.remembered(prefix)
    if known:
        remote.say(f"using cached {known[0][:7]} of {remote.shown} ({prefix})")
        return known[0]
    remote.say(f"fetching {remote.shown} @ {prefix} (whole history, to find the commit) ...")
    commit = _fetch(remote, abbreviated=prefix)
    remote.say(f"{remote.shown} @ {prefix} -> {commit[:7]} (pin {commit} to skip this search)")
    return commit


def _fetch(remote: _Remote, *, commit: str | None = None, ref_name: str | None = None, abbreviated: str = "") -> str:
    """Check the commit out into `remote.dir/COMMIT`, atomically; return the commit. Leaves nothing on failure."""
    tmp: Path | None = None
    try:
        for _attempt in range(5):  # a concurrent failed fetch may remove the (then empty) folder meanwhile
            remote.dir.mkdir(parents=True, exist_ok=True)
            try:
                tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=remote.dir))
                break
            except FileNotFoundError:
                continue
        else:
            raise OSError(f"{remote.dir} keeps disappearing")
        _sweep_stale_temps(remote.dir)
        _git(["init", "-q", "--template=", str(tmp)])
        commit = _fetch_objects(remote, tmp, commit, ref_name, abbreviated)
        final = remote.dir / commit
        if final.is_dir():  # found by an abbreviated hash, or another process was quicker
            return commit
        try:
            _git(["checkout", "-q", "--detach", commit], cwd=tmp)
            head = _git(["rev-parse", "HEAD"], cwd=tmp).strip()
        except _GitError as exc:
            raise remote.fail(f"cannot check out {commit[:7]}: {exc.reason}") from None
        if head != commit:
            raise remote.fail(f"checked out {head[:7]} instead of {commit[:7]}")
        shutil.rmtree(tmp / ".git")
        try:
            os.rename(tmp, final)
            tmp = None
        except OSError:
            if not final.is_dir():  # not a lost race with another fetch of the same commit
                raise
        return commit
    except _GitError as exc:  # a local git step (init) failed
        raise remote.fail(exc.reason) from None
    except OSError as exc:
        raise SourceError(f"cannot write the git cache in {remote.dir}: {exc.strerror or exc}") from None
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
        try:
            remote.dir.rmdir()  # only when empty: a failed first fetch leaves no folder behind
        except OSError:
            pass


def _fetch_objects(remote: _Remote, repo: Path, commit: str | None, ref_name: str | None, abbreviated: str) -> str:
    """Fetch as little as the server allows: the commit alone, else the ref alone, else everything."""
    everything = ["+refs/heads/*:refs/remotes/origin/*", "+refs/tags/*:refs/tags/*"]
    shallow = ["--depth", "1"]
    attempts: list[tuple[list[str], list[str]]] = []  # (options, refspecs)
    if commit:
        attempts.append((shallow, [commit]))
        if ref_name:
            attempts.append((shallow, [ref_name]))  # servers that refuse fetching by hash
    attempts.append(([], everything))  # dumb HTTP servers refuse shallow fetches; abbreviated hashes need history
    error: _GitError | None = None
    for options, refspecs in attempts:
        if options and error is not None and "shallow" in error.reason:
            continue  # the server cannot do shallow fetches at all (dumb HTTP)
        if not options and (repo / ".git" / "shallow").exists():
            options = ["--unshallow"]  # the ref moved since ls-remote: the commit is further back
        try:
            # Options before `--`: after it, git takes every word as a refspec (`--depth` included).
            _git(["fetch", "-q", "--no-tags", *options, "--", remote.url, *refspecs], cwd=repo, secrets=remote.secrets)
            error = None
        except _GitError as exc:
            if exc.final:
                raise remote.fail(exc.reason, _advice(exc)) from None
            error = exc
            continue
        target = commit or abbreviated
        try:
            found = _git(["rev-parse", "--verify", "-q", f"{target}^{{commit}}"], cwd=repo).strip()
        except _GitError:
            continue
        if commit is None or found == commit:
            return found
    what = f"commit {commit}" if commit else f"no commit starting with {abbreviated!r}"
    detail = f" (git: {error.reason})" if error and commit else ""
    if commit:
        raise remote.fail(f"{what} is not in the repository{detail}", "Check the hash; it may be on a deleted branch.")
    raise remote.fail(f"{what} and no such branch or tag", f"Check the ref ({_known_refs(remote)}).")


def _sweep_stale_temps(folder: Path) -> None:
    """Remove temp folders a killed process left behind (a live fetch never takes an hour)."""
    cutoff = time.time() - _STALE_TEMP_SECONDS
    for entry in folder.glob(".tmp-*"):
        try:
            if entry.stat().st_mtime < cutoff:
                shutil.rmtree(entry) if entry.is_dir() else entry.unlink()
        except OSError:
            pass
