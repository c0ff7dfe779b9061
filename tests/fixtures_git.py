"""Real git repositories served by real git servers on 127.0.0.1, for the tests of `runner.sources`.

`tool_repo` builds one repository of tools (branches, tags, a branch with a slash) as a bare repository
`o/r.git` (also reachable as `o/r`). `git_remote` serves it for the whole session with `git daemon`
(git://) and a dumb HTTP server (http://, Python's http.server after `git update-server-info`).
`serve_http` starts a server a test may stop itself, to go offline. Every server is stopped at teardown.
"""

from __future__ import annotations

import functools
import json
import os
import signal
import subprocess
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from tests.helpers import free_port, wait_listening

_GIT_ENV = {
    **os.environ,
    "GIT_CONFIG_NOSYSTEM": "1",
    "GIT_CONFIG_GLOBAL": os.devnull,
    "GIT_AUTHOR_NAME": "Test",
    "GIT_AUTHOR_EMAIL": "test@example.com",
    "GIT_COMMITTER_NAME": "Test",
    "GIT_COMMITTER_EMAIL": "test@example.com",
    "LC_ALL": "C",
}


def git(*args: str, cwd: Path) -> str:
    return subprocess.run(
        ["git", *args], cwd=cwd, env=_GIT_ENV, check=True, capture_output=True, text=True, stdin=subprocess.DEVNULL
    ).stdout.strip()


def write_tool(folder: Path, name: str) -> Path:
    """A minimal valid tool folder, whose tool prints its environment."""
    folder.mkdir(parents=True, exist_ok=True)
    manifest = {
        "tool": {"name": name, "description": f"The {name} test tool.", "inputSchema": {"type": "object"}},
        "language": "python",
        "entrypoint": {"run": "python main.py"},
    }
    (folder / "pocket.json").write_text(json.dumps(manifest), encoding="utf-8")
    (folder / "main.py").write_text("import json, os\nprint(json.dumps({'env': dict(os.environ)}))\n", encoding="utf-8")
    return folder


@dataclass(frozen=True)
class ToolRepo:
    """The served tree (`base/o/r.git`, with `base/o/r` linking to it) and the commit of each ref.

    main: tools/alpha, tools/beta, tools/gamma     v1 (annotated tag), feature (tag): tools/alpha, tools/beta, docs
    dev: main + extra/delta                        feature/x (branch): v1 + nested/zeta
    """

    base: Path
    commits: dict[str, str]

    @property
    def bare(self) -> Path:
        return self.base / "o" / "r.git"


@pytest.fixture(scope="session")
def tool_repo(tmp_path_factory: pytest.TempPathFactory) -> ToolRepo:
    root = tmp_path_factory.mktemp("git-remote")
    work = root / "work"
    work.mkdir()
    git("init", "-q", "-b", "main", cwd=work)
    commits: dict[str, str] = {}

    def commit(message: str) -> str:
        git("add", "-A", cwd=work)
        git("commit", "-q", "-m", message, cwd=work)
        return git("rev-parse", "HEAD", cwd=work)

    write_tool(work / "tools" / "alpha", "alpha")
    write_tool(work / "tools" / "beta", "beta")
    (work / "README.md").write_text("test tools\n", encoding="utf-8")
    (work / "docs").mkdir()
    (work / "docs" / "guide.md").write_text("no tools here\n", encoding="utf-8")
    commits["v1"] = commit("alpha and beta")
    git("tag", "-a", "-m", "version 1", "v1", cwd=work)
    git("tag", "feature", cwd=work)  # a tag that is a prefix of the branch feature/x
    write_tool(work / "tools" / "gamma", "gamma")
    commits["main"] = commit("gamma")
    git("checkout", "-q", "-b", "dev", cwd=work)
    write_tool(work / "extra" / "delta", "delta")
    commits["dev"] = commit("delta")
    git("checkout", "-q", "-b", "feature/x", commits["v1"], cwd=work)
    write_tool(work / "nested" / "zeta", "zeta")
    commits["feature/x"] = commit("zeta")
    git("checkout", "-q", "main", cwd=work)

    base = root / "served"
    (base / "o").mkdir(parents=True)
    git("clone", "-q", "--bare", str(work), str(base / "o" / "r.git"), cwd=root)
    git("update-server-info", cwd=base / "o" / "r.git")  # for dumb HTTP
    (base / "o" / "r").symlink_to("r.git")
    return ToolRepo(base, commits)


class GitDaemon:
    """`git daemon` serving `base` on 127.0.0.1; `url` is its root (git://127.0.0.1:PORT)."""

    def __init__(self, base: Path):
        for _attempt in range(5):  # the free port may be taken before the daemon binds it
            self.port = free_port()
            self.process = subprocess.Popen(
                ["git", "daemon", "--reuseaddr", f"--base-path={base}", "--export-all", "--listen=127.0.0.1",
                 f"--port={self.port}", str(base)],
                env=_GIT_ENV, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                start_new_session=True,  # its own process group: stop() also ends the per-connection children
            )  # fmt: skip
            if wait_listening(self.port, self.process):
                self.url = f"git://127.0.0.1:{self.port}"
                return
            self.stop()
        raise RuntimeError("git daemon did not start")

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
        self.process.wait(timeout=10)


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


class DumbHttpServer:
    """A plain static HTTP server on 127.0.0.1 (git's "dumb" protocol); `url` is its root."""

    def __init__(self, base: Path):
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_QuietHandler, directory=str(base)))
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), name="dumb-http", daemon=True)
        self.thread.start()
        self.stopped = False

    def stop(self) -> None:
        if not self.stopped:
            self.stopped = True
            self.server.shutdown()
            self.server.server_close()
            self.thread.join(timeout=10)


@dataclass(frozen=True)
class GitRemote:
    repo: ToolRepo
    daemon: GitDaemon
    http: DumbHttpServer

    @property
    def git_url(self) -> str:
        return f"{self.daemon.url}/o/r.git"

    @property
    def http_url(self) -> str:
        return f"{self.http.url}/o/r"

    @property
    def file_url(self) -> str:
        return self.repo.bare.as_uri()

    @property
    def commits(self) -> dict[str, str]:
        return self.repo.commits


@pytest.fixture(scope="session")
def git_remote(tool_repo: ToolRepo) -> Iterator[GitRemote]:
    """The tool repository served over git:// and dumb http:// for the whole session."""
    daemon = GitDaemon(tool_repo.base)
    try:
        http = DumbHttpServer(tool_repo.base)
    except BaseException:
        daemon.stop()
        raise
    try:
        yield GitRemote(tool_repo, daemon, http)
    finally:
        http.stop()
        daemon.stop()


@pytest.fixture
def serve_http(tool_repo: ToolRepo) -> Iterator[Callable[[], DumbHttpServer]]:
    """Start a dumb HTTP server over the tool repository that the test may `stop()` (to go offline)."""
    servers: list[DumbHttpServer] = []

    def start() -> DumbHttpServer:
        servers.append(DumbHttpServer(tool_repo.base))
        return servers[-1]

    yield start
    for server in servers:
        server.stop()
