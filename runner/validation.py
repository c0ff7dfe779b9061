"""Checking tool sources without running them (`pocket validate`): each tool folder's manifest against the
schemas, and its `auth` block against the provider catalog and settings (a provider or handler nobody knows
would fail every call)."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from pathlib import Path

from runner.errors import ManifestError, Problem
from runner.manifest import Manifest, load_manifest
from runner.settings import Settings
from runner.sources import find_tool_folders


@dataclass(frozen=True)
class ToolCheck:
    """One tool folder: its manifest when valid, what makes it invalid, and what only warns."""

    folder: Path
    manifest: Manifest | None
    problems: tuple[Problem, ...] = ()
    warnings: tuple[Problem, ...] = ()

    @property
    def valid(self) -> bool:
        return not self.problems


def validate(
    sources: Iterable[str],
    settings: Settings,
    *,
    strict: bool = False,
    progress: Callable[[str], None] | None = None,
) -> list[ToolCheck]:
    """Every tool folder of `sources`, checked. With `strict`, warnings (unknown keys, an unknown auth
    provider or handler) make a tool invalid."""
    checks = []
    for source in sources:
        for folder in find_tool_folders(source, cache_dir=settings.cache_dir, progress=progress):
            checks.append(_check(folder.path, settings, strict))
    return checks


def _check(folder: Path, settings: Settings, strict: bool) -> ToolCheck:
    try:
        manifest = load_manifest(folder, strict=strict)
    except ManifestError as exc:
        return ToolCheck(folder, None, problems=tuple(exc.problems))
    auth = _auth_warning(manifest, settings)
    if auth is not None and strict:
        return ToolCheck(folder, manifest, problems=(replace(auth, is_warning=False),))
    return ToolCheck(folder, manifest, warnings=(*manifest.warnings, *([auth] if auth else [])))


def _auth_warning(manifest: Manifest, settings: Settings) -> Problem | None:
    from runner.auth.providers import auth_problem

    if manifest.auth is None:
        return None
    problem = auth_problem(manifest.auth, settings)
    return Problem(str(manifest.path), "/auth", problem, is_warning=True) if problem else None
