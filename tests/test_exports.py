"""The packages' public names: each one resolves, and importing one part does not import the world."""

from __future__ import annotations

import importlib
import subprocess
import sys

import pytest

PACKAGES = ["runner", "runner.sandbox", "runner.auth"]


@pytest.mark.parametrize("package", PACKAGES)
def test_every_exported_name_resolves(package):
    module = importlib.import_module(package)
    missing = [name for name in module.__all__ if not hasattr(module, name)]
    assert missing == []
    with pytest.raises(AttributeError, match="no attribute 'Nope'"):
        module.Nope  # noqa: B018


@pytest.mark.parametrize(
    ("module", "not_loaded"),
    [
        ("runner", ["pydantic", "docker", "httpx", "runner.sandbox"]),
        ("runner.sandbox.stream", ["pydantic", "docker", "runner.sandbox.sandbox", "runner.settings"]),
        ("runner.sandbox.container.egress_proxy", ["pydantic", "runner.sandbox.sandbox"]),
        ("runner.auth.providers", ["httpx", "docker", "runner.auth.oauth", "runner.auth.authenticator"]),
    ],
)
def test_importing_one_part_does_not_import_the_rest(module, not_loaded):
    code = f"import sys, {module}; print(' '.join(m for m in {not_loaded!r} if m in sys.modules))"
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert loaded == []
