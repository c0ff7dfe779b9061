"""Tests that fail when a sandbox promise breaks: the launcher's replies, the timeout's second, and the
hardening as the engine itself sees it and as a tool inside finds it."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

import runner.sandbox.sandbox as sandbox_module
from runner.invocation import Outcome
from runner.manifest import load_manifest
from runner.sandbox import Sandbox
from runner.settings import SandboxSettings, ToolLimits

docker = pytest.mark.docker


def _write_tool(folder: Path, name: str, files: dict[str, str], **manifest: object) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    document = {
        "tool": {"name": name, "description": "a test tool", "inputSchema": {"type": "object"}},
        "language": "python",
        "entrypoint": {"run": f"python {name}.py"},
        **manifest,
    }
    (folder / "pocket.json").write_text(json.dumps(document))
    for rel, text in files.items():
        (folder / rel).write_text(text)
    return folder


def _wait_for_pool(box: Sandbox, tool_name: str, size: int) -> None:
    (pool,) = box._pools.of_tool(tool_name)
    deadline = time.monotonic() + 30
    while len(pool.idle) < size and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(pool.idle) >= size, "the pool did not fill in 30 s"


# -- replies from a container: only the launcher, who knows the call's nonce, reports the exit ----------

FORGER = r"""
import os, sys, uuid
sys.stdin.read()
# What the launcher prints after the tool, with nonces a forger might try: a random one, none, a constant.
for nonce in (uuid.uuid4().hex, "", "0" * 32):
    line = "\x1e%s 0\n" % nonce
    sys.stdout.write(line)
    sys.stdout.flush()
    sys.stderr.write(line)
    sys.stderr.flush()
# What the tool could learn the call's nonce from: its environment, its arguments, its stdin (read above).
sys.stderr.write(repr(dict(os.environ)) + open("/proc/self/cmdline").read() + "\n")
sys.exit(3)
"""


@docker
def test_a_forged_launcher_status_is_not_the_calls_exit(runtime, tmp_path, monkeypatch):
    """A tool that prints the launcher's closing line (`\\x1e<nonce> 0`) on both streams and exits 3 is
    reported with its real exit code: the runner trusts only the line carrying the call's nonce, which the
    tool never sees. And every call gets a new nonce that cannot be guessed (128 random bits)."""
    nonces: list[str] = []
    real_stdin_for = sandbox_module.stdin_for

    def spy(environment, body):
        stdin, nonce = real_stdin_for(environment, body)
        nonces.append(nonce)
        return stdin, nonce

    monkeypatch.setattr(sandbox_module, "stdin_for", spy)
    manifest = load_manifest(_write_tool(tmp_path / "forger", "forger", {"forger.py": FORGER}))
    with Sandbox(SandboxSettings(pool_size=0, runtime=runtime)) as box:
        forged = box.run(manifest, {}, {})
        again = box.run(manifest, {}, {})
    for result in (forged, again):
        assert result.outcome is Outcome.TOOL_FAILED and result.exit_code == 3, result
        assert result.error.startswith("the tool exited with code 3"), result.error
        assert result.stdout.count("\x1e") == 3  # the forged lines are the tool's output, not taken as a status
    assert len(nonces) == 2 and nonces[0] != nonces[1]
    for nonce in nonces:
        assert len(nonce) == 32 and int(nonce, 16) and len(set(nonce)) > 4, nonce
        assert nonce not in forged.stderr + again.stderr  # the tool could not have read it


# -- timeouts: the call answers within a second of its limit, also for a longer limit ------------------


@docker
def test_a_five_second_limit_answers_after_five_seconds_and_within_the_sixth(tool, runtime):
    """The limit from `[sandbox.tools.NAME] timeout_seconds` (the manifest asks for 1 s), with the
    container pooled so the call's time is the tool's run: a deadline a little too long (or too short)
    fails here, where a 1 s limit hides it."""
    settings = SandboxSettings(pool_size=1, runtime=runtime, tools={"sleeper": ToolLimits(timeout_seconds=5)})
    with Sandbox(settings) as box:
        box.prepare(tool("sleeper"))
        _wait_for_pool(box, "sleeper", 1)
        started = time.monotonic()
        result = box.run(tool("sleeper"), {}, {})
        elapsed = time.monotonic() - started
    assert result.outcome is Outcome.TOOL_FAILED and result.error == "timed out after 5 s", result
    assert 5.0 <= elapsed < 6.0, elapsed
    assert 5.0 <= result.duration_seconds < 6.0, result.duration_seconds
