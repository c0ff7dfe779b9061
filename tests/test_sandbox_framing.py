"""The launcher's framing: the body travels length-prefixed, so no launcher waits for the end of stdin (which
Kubernetes' older attach protocol cannot send), and the tool still reads exactly the body on its stdin, then EOF.

Driven below the facade, with bytes no JSON encoder would produce (newlines, no trailing newline, NUL, several
MB), through both launchers: launch.sh (any command) and prestart.py (`python FILE`, interpreter started ahead).
"""

from __future__ import annotations

import hashlib
import json
import time
import uuid

import pytest

from runner.manifest import Manifest, load_manifest
from runner.sandbox.engine import DockerEngine, Spec
from runner.sandbox.labels import owner_label
from runner.sandbox.launch import Ending, Launched, launch, python_command
from runner.sandbox.limits import launcher_input, resolve_limits
from runner.settings import SandboxSettings

docker = pytest.mark.docker

# Reads its stdin to the end (unless READ=no) and says what it got: the end must come right after the body.
READER = """
import hashlib, json, os, sys
data = b"" if os.environ.get("READ") == "no" else sys.stdin.buffer.read()
print(json.dumps({"size": len(data), "sha256": hashlib.sha256(data).hexdigest(), "head": data[:40].decode("latin-1"),
                  "token": os.environ.get("TOKEN")}))
"""

BODIES = {
    "json-no-trailing-newline": b'{"name": "Ada"}',
    "newlines-and-trailing-newline": b"line one\nline two\n\n__pocket_body_follows__ 3\nexport X=1\n",
    "empty": b"",
    "binary-with-nul": bytes(range(256)) * 4,
    "several-mb": (b"0123456789abcdef\n" * 200_000),  # 3.4 MB: more than any pipe or socket buffer holds
}
LAUNCHERS = {"launch.sh": "exec python reader.py", "prestart.py": "python reader.py"}


@pytest.fixture(scope="module")
def reader_tools(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    manifests = {}
    for launcher, run in LAUNCHERS.items():
        folder = tmp_path_factory.mktemp("reader")
        (folder / "reader.py").write_text(READER)
        (folder / "pocket.json").write_text(json.dumps({
            "tool": {"name": "reader", "description": "reads stdin", "inputSchema": {"type": "object"}},
            "language": "python", "entrypoint": {"run": run},
        }))  # fmt: skip
        manifests[launcher] = load_manifest(folder)
    return manifests


@docker
@pytest.mark.parametrize("launcher", sorted(LAUNCHERS))
@pytest.mark.parametrize("body", sorted(BODIES))
def test_the_tool_reads_exactly_the_body_then_eof_with_stdin_never_closed(reader_tools, launcher, body, runtime):
    manifest = reader_tools[launcher]
    settings = SandboxSettings(runtime=runtime)
    data = BODIES[body]
    assert (python_command(manifest.entrypoint.run) is None) == (launcher == "launch.sh")
    launched = _launch(manifest, settings, data, {"TOKEN": "t0ken"})
    assert launched.ending is Ending.EXITED and launched.reported, launched
    assert launched.exit_code == 0, launched.stderr
    seen = json.loads(launched.stdout)
    assert seen["size"] == len(data) and seen["sha256"] == hashlib.sha256(data).hexdigest()
    assert seen["head"] == data[:40].decode("latin-1") and seen["token"] == "t0ken"


@docker
@pytest.mark.parametrize("launcher", sorted(LAUNCHERS))
def test_a_tool_that_succeeds_without_reading_a_big_body_answers_at_once(reader_tools, launcher):
    """The runner stops writing the body once the tool has answered: it does not wait for its timeout (the
    answer is the same either way; only when it comes tells them apart)."""
    started = time.monotonic()
    launched = _launch(reader_tools[launcher], SandboxSettings(), BODIES["several-mb"], {"READ": "no"}, timeout=30)
    assert time.monotonic() - started < 30, "the call waited for its timeout"
    assert launched.ending is Ending.EXITED and launched.exit_code == 0, launched
    assert json.loads(launched.stdout)["size"] == 0


def _launch(
    manifest: Manifest,
    settings: SandboxSettings,
    body: bytes,
    environment: dict[str, str],
    *,
    timeout: float = 60,
) -> Launched:
    """One call of `manifest` in a fresh container, `body` framed as the runner frames it (its stdin never
    closed: the runner does not close it, as an older attach protocol cannot)."""
    command = python_command(manifest.entrypoint.run) or ("/bin/sh", "/pocket/launch.sh")
    engine = DockerEngine(settings, uuid.uuid4().hex[:12], owner_label(), lambda _: None)
    try:
        limits = resolve_limits(settings, manifest, timeout=timeout)
        started = engine.start(Spec(engine.image(manifest), "reader", limits.container_key, command, "call"))
        nonce = uuid.uuid4().hex
        return launch(engine, started, launcher_input(environment, body, nonce), nonce, limits)
    finally:
        engine.close()
