#!/usr/bin/env python3
"""Mutation testing of the security-relevant modules, by hand (not in CI: too slow), with mutmut.

mutmut changes the code one small step at a time (a `<` for a `<=`, a string emptied, a call dropped) and
runs the tests that reach the changed function; a mutant that no test notices ("survived") is a promise
the suite does not check. Each module is run in a scratch copy of the work tree, so the repository gets
neither a `mutants/` folder nor a mutmut section in pyproject.toml.

    python3 -m venv /tmp/mutvenv && /tmp/mutvenv/bin/pip install '.[dev]' 'mutmut>=3.8,<4'
    /tmp/mutvenv/bin/python scripts/mutate.py                  # the fast modules: redaction, limits
    /tmp/mutvenv/bin/python scripts/mutate.py schema oauth     # chosen modules
    /tmp/mutvenv/bin/python scripts/mutate.py all              # every module below (hours, with Docker)

Then read a survivor with `cd <scratch>/<module> && mutmut show NAME`. The tests marked `docker` are left
out unless `--docker` is given: with it the engine, launcher and stream modules are tested through real
containers, which takes hours on two cores. The venv's install must not be editable (`pip install -e`): an
editable install puts this work tree on sys.path, and the tests would then import it instead of the mutants.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

# module: (file, the tests that check it). mutmut runs, for each mutant, only those of these tests that reach
# the mutated function (it records which do in a first, clean run).
MODULES: dict[str, tuple[str, list[str]]] = {
    "redaction": ("runner/redaction.py", ["tests/test_redaction.py", "tests/test_invocation.py",
                  "tests/test_auth_pocket.py", "tests/test_function_tools.py", "tests/test_tool_compat.py",
                  "tests/test_sources.py", "tests/test_sandbox.py"]),
    "limits": ("runner/sandbox/limits.py", ["tests/test_limits.py", "tests/test_sandbox.py",
               "tests/test_tool_compat.py", "tests/test_settings.py"]),
    "schema": ("runner/schema.py", ["tests/test_invocation.py", "tests/test_pocket.py", "tests/test_manifest.py"]),
    "callback": ("runner/auth/callback.py", ["tests/test_auth_oauth.py", "tests/test_auth_cli.py"]),
    "oauth": ("runner/auth/oauth.py", ["tests/test_auth_oauth.py", "tests/test_auth_providers.py",
              "tests/test_auth_device.py", "tests/test_auth_secrets.py"]),
    "refresh": ("runner/auth/refresh.py", ["tests/test_auth_oauth.py", "tests/test_auth_providers.py"]),
    "engine": ("runner/sandbox/engine.py", ["tests/test_sandbox_hardening.py", "tests/test_sandbox.py"]),
    "launch": ("runner/sandbox/launch.py", ["tests/test_sandbox.py", "tests/test_sandbox_hardening.py"]),
    "stream": ("runner/sandbox/stream.py", ["tests/test_sandbox.py", "tests/test_sandbox_hardening.py"]),
}  # fmt: skip
FAST = ["redaction", "limits"]
# What the tests read besides tests/ and pyproject.toml (mutmut copies those itself).
ALSO_COPY = ["README.md", "schemas", "tools-example", "docs", ".secrets.toml.example", "benchmarks", "scripts"]


def scratch_copy(target: Path) -> None:
    """The work tree as it is (tracked files, with uncommitted changes), without .git or any venv."""
    if target.exists():
        shutil.rmtree(target)
    listed = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True, check=True).stdout
    for name in filter(None, listed.decode().split("\0")):
        source = REPO / name
        if source.is_file():
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target / name)
    node_modules = REPO / "tests" / "oidc" / "node_modules"  # the test authorization server's, not tracked
    if node_modules.is_dir():
        (target / "tests" / "oidc" / "node_modules").symlink_to(node_modules)


def configure(target: Path, path: str, tests: list[str], docker: bool) -> None:
    """mutmut reads setup.cfg when pyproject.toml has no [tool.mutmut]: the scratch copy gets one."""
    present = [t for t in tests if (target / t).exists()]
    lines = [
        "[mutmut]",
        "source_paths = runner",
        f"only_mutate = {path}",
        "also_copy =",
        *(f"    {name}" for name in ALSO_COPY if (target / name).exists()),
        "pytest_add_cli_args_test_selection =",
        *(f"    {t}" for t in present),
        "pytest_add_cli_args =",
        "    -p",
        "    no:cacheprovider",
        *([] if docker else ["    -m", "    not docker"]),
        "",
    ]
    (target / "setup.cfg").write_text("\n".join(lines), encoding="utf-8")


def run(module: str, root: Path, docker: bool, children: int) -> tuple[int, int, list[str]]:
    path, tests = MODULES[module]
    target = root / module
    scratch_copy(target)
    configure(target, path, tests, docker)
    env = {k: v for k, v in os.environ.items() if not k.startswith("POCKET_")}
    # Tests that start `python -m runner.cli` or `pocket` must import the mutated copy, not the installed one.
    env["PYTHONPATH"] = str(target / "mutants")
    (target / "mutants").mkdir()  # before Python starts: a PYTHONPATH folder missing then is never searched
    mutmut = [sys.executable, "-m", "mutmut"]
    print(f"== {module}: mutating {path} in {target}", flush=True)
    subprocess.run([*mutmut, "run", "--max-children", str(children)], cwd=target, env=env, check=True)
    listed = subprocess.run([*mutmut, "results", "--all", "true"], cwd=target, env=env, capture_output=True,
                            text=True, check=True).stdout  # fmt: skip
    results = dict(re.findall(r"^\s*(\S+): (.+)$", listed, flags=re.MULTILINE))
    alive = sorted(name for name, status in results.items() if status.strip() != "killed")
    return len(results), len(results) - len(alive), [f"{name}: {results[name]}" for name in alive]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.partition("\n\n")[0])
    parser.add_argument("modules", nargs="*", help=f"of {', '.join(MODULES)} or all (default: {' '.join(FAST)})")
    parser.add_argument("--docker", action="store_true", help="run the Docker tests too (very slow)")
    parser.add_argument(
        "--dir", type=Path, default=Path(tempfile.gettempdir()) / "pocket-mutation", help="the scratch folder"
    )
    parser.add_argument("--children", type=int, default=2, help="mutants tested at once (default 2)")
    args = parser.parse_args()
    try:
        import mutmut  # noqa: F401
    except ImportError:
        parser.error("mutmut is not installed in this interpreter: see the usage at the top of this script")
    if any(Path(entry).resolve() == REPO for entry in sys.path if entry):
        parser.error(f"{REPO} is on this interpreter's sys.path (an editable install?): use `pip install .`")
    chosen = list(MODULES) if args.modules == ["all"] else args.modules or FAST
    unknown = [m for m in chosen if m not in MODULES]
    if unknown:
        parser.error(f"unknown modules {unknown}: choose among {', '.join(MODULES)}")
    summary = []
    for module in chosen:
        total, killed, alive = run(module, args.dir.resolve(), args.docker, args.children)
        summary.append(f"{module}: {killed}/{total} killed ({100 * killed / max(total, 1):.0f}%)")
        summary += [f"    {line}" for line in alive]
    print("\n".join(["", "== mutation score", *summary]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
