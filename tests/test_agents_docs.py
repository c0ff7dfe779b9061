"""README.md: every Python snippet compiles, and those that need no model API key run."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

DOC = Path(__file__).resolve().parent.parent / "README.md"
BLOCKS = re.findall(r"```python\n(.*?)```", DOC.read_text(encoding="utf-8"), flags=re.DOTALL)
NEEDS_A_MODEL_API = ("from openai import", "import anthropic")


def test_the_doc_has_snippets():
    assert len(BLOCKS) >= 6


@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_snippet(index, tmp_path, monkeypatch, capsys):
    code = compile(BLOCKS[index], f"{DOC}:snippet{index}", "exec")
    if any(marker in BLOCKS[index] for marker in NEEDS_A_MODEL_API):
        return  # compiled only: it calls a model provider (the loops are tested with the SDKs in test_specs)
    monkeypatch.chdir(DOC.parent)
    monkeypatch.setenv("POCKET_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("POCKET_DATA_DIR", str(tmp_path / "data"))
    exec(code, {"__name__": "snippet"})  # noqa: S102
    assert os.getcwd() == str(DOC.parent)
