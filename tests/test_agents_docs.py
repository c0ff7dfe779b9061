"""README.md: every Python snippet compiles; those that need no model API key run, and each line they print is
the one the comment beside its `print(...)` promises."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

DOC = Path(__file__).resolve().parent.parent / "README.md"
BLOCKS = re.findall(r"```python\n(.*?)```", DOC.read_text(encoding="utf-8"), flags=re.DOTALL)
NEEDS_A_MODEL_API = {"from openai import": "OpenAI's", "import anthropic": "Anthropic's"}
PRINT = re.compile(r"^\s*print\(.*\)(?:\s+# (?P<expected>.*))?$")
# Comments that describe a printed line instead of quoting it, and the line they describe.
DESCRIBED = {
    "auth_required and where to authorize, until granted": r"auth_required http://127\.0\.0\.1:\d+/auth/slack/form"
    r"\?state=[\w-]{16,}",
}


def promised(block: str) -> list[str]:
    """The comment beside each `print(...)` of `block`, in order; a print without one is a mistake in the doc."""
    comments = [match["expected"] for line in block.splitlines() if (match := PRINT.match(line))]
    assert None not in comments, "a print(...) in the README without the line it prints in a comment beside it"
    return comments


def matches(printed: str, expected: str) -> bool:
    """`...` in a comment stands for anything; a described line must match its pattern in DESCRIBED."""
    if expected in DESCRIBED:
        return re.fullmatch(DESCRIBED[expected], printed) is not None
    pattern = ".*".join(re.escape(part) for part in expected.split("..."))
    return re.fullmatch(pattern, printed) is not None


def test_the_doc_has_snippets():
    assert len(BLOCKS) >= 6
    runs = [block for block in BLOCKS if not any(marker in block for marker in NEEDS_A_MODEL_API)]
    assert sum(len(promised(block)) for block in runs) >= 5  # a model's reply is not promised: those are skipped


def test_the_comparison_tells_a_wrong_line():
    assert matches("[1, '42', 'It is 42.']", "[..., '42', 'It is 42.']")
    assert not matches("[1, '41', 'It is 42.']", "[..., '42', 'It is 42.']")
    assert not matches("auth_required None", "auth_required and where to authorize, until granted")
    assert not matches("4", "3")


@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_snippet(index, tmp_path, monkeypatch, capsys):
    block = BLOCKS[index]
    code = compile(block, f"{DOC}:snippet{index}", "exec")
    for marker, whose in NEEDS_A_MODEL_API.items():
        if marker in block:
            pytest.skip(
                f"compiled only: it calls {whose} API, which needs a key and the network; the same loop runs "
                "against the SDK's own types in tests/test_specs.py"
            )
    monkeypatch.chdir(DOC.parent)
    monkeypatch.setenv("POCKET_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("POCKET_DATA_DIR", str(tmp_path / "data"))
    exec(code, {"__name__": "snippet"})  # noqa: S102
    assert os.getcwd() == str(DOC.parent)
    printed = capsys.readouterr().out.splitlines()
    expected = promised(block)
    assert len(printed) == len(expected), printed
    for line, comment in zip(printed, expected, strict=True):
        assert matches(line, comment), f"printed {line!r}, the README says {comment!r}"
