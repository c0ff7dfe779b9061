"""What the tests import is declared (the project's dependencies or its dev extra), and installed.

A test dependency that arrives only through another package (httpx2 through anthropic, anyio through mcp)
can go away with that package's next release; a test that then skipped on its absence would pass unnoticed.
So every third-party module a test imports must come from a declared distribution, no test skips on a
missing import (`pytest.importorskip`), and a missing one fails the run at collection.
"""

from __future__ import annotations

import ast
import re
import sys
import tomllib
from importlib import metadata
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
TESTS = REPO / "tests"
# The tests' own code, not the tool folders under tests/tools (run inside containers) or tests/oidc (node).
SOURCES = sorted(TESTS.glob("*.py"))
PROJECT = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]


def name_of(requirement: str) -> str:
    """The normalized distribution name of a requirement such as `mcp>=2.3,<3` (PEP 503)."""
    return re.sub(r"[-_.]+", "-", re.match(r"[A-Za-z0-9._-]+", requirement).group()).lower()


DECLARED = {name_of(r) for r in PROJECT["dependencies"] + PROJECT["optional-dependencies"]["dev"]}


def imported_modules(path: Path) -> set[str]:
    """The top-level modules `path` imports, at any depth of its code (absolute imports only)."""
    modules = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            modules |= {alias.name.partition(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            modules.add(node.module.partition(".")[0])
    return modules


def third_party(modules: set[str]) -> set[str]:
    return {m for m in modules if m not in sys.stdlib_module_names and m not in {"runner", "tests", "__future__"}}


def test_the_sources_are_found():
    assert len(SOURCES) > 20 and TESTS / "test_specs.py" in SOURCES


def test_every_third_party_module_a_test_imports_comes_from_a_declared_distribution():
    distributions = metadata.packages_distributions()
    undeclared = {}
    for path in SOURCES:
        for module in sorted(third_party(imported_modules(path))):
            names = {name_of(d) for d in distributions.get(module, [])}
            assert names, f"{path.name} imports {module}, which no installed distribution provides"
            if not names & DECLARED:
                undeclared[f"{path.name}: {module}"] = sorted(names)
    assert not undeclared, f"declare these in pyproject.toml's dev extra: {undeclared}"


def test_every_declared_test_dependency_is_installed():
    missing = []
    for requirement in PROJECT["optional-dependencies"]["dev"]:
        try:
            metadata.version(name_of(requirement))
        except metadata.PackageNotFoundError:
            missing.append(requirement)
    assert not missing, f"not installed (pip install -e '.[dev]'): {missing}"


def test_no_test_skips_on_a_missing_import():
    skipping = [p.name for p in SOURCES if p != Path(__file__) and "importorskip" in p.read_text(encoding="utf-8")]
    assert not skipping, f"import test dependencies plainly, so a missing one fails the run: {skipping}"


def test_no_test_module_imports_another():
    """Shared helpers live in tests/helpers.py, tests/auth_helpers.py and the fixture modules."""
    import re
    from pathlib import Path

    crossing = [
        f"{path.name}: {line.strip()}"
        for path in sorted(Path(__file__).parent.glob("test_*.py"))
        for line in path.read_text().splitlines()
        if re.match(r"\s*(from tests\.test_\w+ import|import tests\.test_)", line)
    ]
    assert crossing == []
