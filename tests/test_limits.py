"""runner.sandbox.limits without an engine: what a call's container may use, and the launcher's lines.

Written against the mutants that survived `scripts/mutate.py limits` (see the README's development section).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from runner.errors import PocketError
from runner.manifest import load_manifest
from runner.sandbox.limits import SENTINEL, launcher_input, resolve_limits
from runner.settings import SandboxSettings, ToolLimits


def manifest(folder: Path, name: str = "Tool", **sandbox: object):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "pocket.json").write_text(json.dumps({
        "tool": {"name": name, "description": "a test tool", "inputSchema": {"type": "object"}},
        "language": "python", "entrypoint": {"run": "true"}, "sandbox": sandbox,
    }))  # fmt: skip
    return load_manifest(folder)


def test_the_nonce_line_comes_first_and_only_with_a_nonce():
    assert launcher_input({"A": "1"}, b"{}", nonce="n0nce").decode().splitlines() == [
        "pocket_nonce=n0nce", "export A=1", f"{SENTINEL} 2", "{}"
    ]  # fmt: skip
    assert launcher_input({}, b"").decode().splitlines() == [f"{SENTINEL} 0"]


def test_a_carriage_return_in_a_value_is_refused_without_showing_the_value():
    with pytest.raises(PocketError, match="newline or NUL") as caught:
        launcher_input({"TOKEN": "secret-part\rexport EVIL=1"}, b"{}")
    assert "secret-part" not in str(caught.value)


def test_tool_settings_are_found_by_the_lowercased_name_too(tmp_path):
    tool = manifest(tmp_path / "t", name="Tool")
    assert resolve_limits(SandboxSettings(tools={"tool": ToolLimits(memory_mb=64)}), tool).memory_mb == 64
    assert resolve_limits(SandboxSettings(tools={"Tool": ToolLimits(memory_mb=32)}), tool).memory_mb == 32


def test_network_refusals_name_the_setting_that_forbids_it(tmp_path):
    wants = manifest(tmp_path / "n", name="net", network=True)
    with pytest.raises(PocketError, match=r"\(sandbox\.allow_network = false\)"):
        resolve_limits(SandboxSettings(allow_network=False), wants)
    with pytest.raises(PocketError, match=r"\(sandbox\.tools\.net\)"):
        resolve_limits(SandboxSettings(tools={"net": ToolLimits(network=False)}), wants)
    granted = resolve_limits(SandboxSettings(tools={"net": ToolLimits(network=True)}), wants)
    assert granted.network is True


def test_asking_for_exactly_the_ceiling_is_not_lowered_and_above_it_says_so(tmp_path):
    settings = SandboxSettings()
    at = resolve_limits(settings, manifest(tmp_path / "a", name="at", memory_mb=settings.memory_mb))
    assert (at.memory_mb, at.lowered) == (settings.memory_mb, ())
    above = resolve_limits(settings, manifest(tmp_path / "b", name="big", memory_mb=settings.memory_mb + 1))
    assert above.memory_mb == settings.memory_mb
    assert above.lowered == (
        f"tool 'big' asks for {settings.memory_mb + 1} MiB; limited to {settings.memory_mb} by sandbox.memory_mb "
        "(raise it in [sandbox.tools.big])",
    )


def test_max_concurrent_comes_from_the_tool_settings_else_the_sandbox(tmp_path):
    tool = manifest(tmp_path / "c", name="c")
    assert resolve_limits(SandboxSettings(max_concurrent=5), tool).max_concurrent == 5
    both = SandboxSettings(max_concurrent=5, tools={"c": ToolLimits(max_concurrent=2)})
    assert resolve_limits(both, tool).max_concurrent == 2
