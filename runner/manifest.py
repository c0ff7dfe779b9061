"""pocket.json: read it, validate it (with runner.schema), turn it into a `Manifest`.

Validation reports every problem at once, each with the file and the JSON pointer of the offending
value, so a person can fix a manifest in one pass. After validation the rest of the runner only
sees the typed `Manifest` model.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from runner.errors import ManifestError, Problem
from runner.schema import input_schema_problems, manifest_problems, manifest_schema, pointer

MANIFEST_NAME = "pocket.json"
# Variables the sandbox sets itself: a manifest may not declare them (`pocket_` names are the launcher's own).
RESERVED_VARIABLES = frozenset({"HOME"})
RESERVED_PREFIX = "pocket_"


class ToolAnnotations(BaseModel):
    """MCP's hints about what a tool does, for the host deciding how to show a call or whether to ask first.
    Unset hints are None: MCP's own defaults then apply, and nothing claims what the author did not say."""

    model_config = ConfigDict(frozen=True, populate_by_name=True, extra="forbid")

    read_only: bool | None = Field(default=None, alias="readOnlyHint")
    destructive: bool | None = Field(default=None, alias="destructiveHint")
    idempotent: bool | None = Field(default=None, alias="idempotentHint")
    open_world: bool | None = Field(default=None, alias="openWorldHint")

    def hints(self) -> dict[str, bool]:
        """The hints declared, under their MCP names."""
        return self.model_dump(by_alias=True, exclude_none=True)


class ToolSpec(BaseModel):
    """What the agent sees: name, description and the input schema of the tool; for people and MCP hosts, a
    title and annotations; for structured output, the schema of its result."""

    model_config = ConfigDict(frozen=True, populate_by_name=True, extra="ignore")

    name: str
    description: str
    input_schema: dict[str, Any] = Field(alias="inputSchema")
    output_schema: dict[str, Any] | None = Field(default=None, alias="outputSchema")
    title: str | None = None
    annotations: ToolAnnotations | None = None


class Entrypoint(BaseModel):
    model_config = ConfigDict(frozen=True)

    build: str | None = None
    run: str
    handler: str | None = None  # "module:function", enables warm mode


class AuthSpec(BaseModel):
    """The `auth` block: which provider's credentials the tool needs, obtained how, with which scopes."""

    model_config = ConfigDict(frozen=True, populate_by_name=True)

    provider: str = Field(alias="auth_provider")
    handler: str | None = Field(default=None, alias="auth_handler")
    scopes: tuple[str, ...] = ()


class SandboxSpec(BaseModel):
    """The manifest's own `sandbox` block; `None` means "the settings decide"."""

    model_config = ConfigDict(frozen=True)

    network: bool | tuple[str, ...] = False
    timeout_seconds: float | None = None
    memory_mb: int | None = None
    cpus: float | None = None
    pids: int | None = None
    output_limit_bytes: int | None = None


class Manifest(BaseModel):
    """A validated pocket.json, with the folder it came from."""

    model_config = ConfigDict(frozen=True, populate_by_name=True)

    folder: Path
    tool: ToolSpec
    language: str | None = None
    base_image: str | None = Field(default=None, alias="baseImage")
    entrypoint: Entrypoint
    auth: AuthSpec | None = None
    variables: dict[str, str] = Field(default_factory=dict)
    sandbox: SandboxSpec = SandboxSpec()
    warnings: tuple[Problem, ...] = ()

    @property
    def name(self) -> str:
        return self.tool.name

    @property
    def path(self) -> Path:
        return self.folder / MANIFEST_NAME


def _variable_problems(file: str, document: dict[str, Any]) -> list[Problem]:
    variables = document.get("variables")
    if not isinstance(variables, dict):
        return []
    return [
        Problem(file, pointer(["variables", name]), f"variable {name!r} is reserved for the sandbox; rename it")
        for name in variables
        if name in RESERVED_VARIABLES or name.startswith(RESERVED_PREFIX)
    ]


def _unknown_key_warnings(file: str, document: dict[str, Any]) -> list[Problem]:
    """Keys no schema knows: warnings, so a manifest written for a newer runner still loads."""
    schema = manifest_schema()
    warnings = [
        Problem(file, pointer([key]), f"unknown key {key!r} is ignored", is_warning=True)
        for key in document
        if key not in schema["properties"]
    ]
    tool = document.get("tool")
    if isinstance(tool, dict):
        known = schema["properties"]["tool"]["properties"]
        warnings += [
            Problem(file, pointer(["tool", key]), f"unknown key {key!r} is ignored", is_warning=True)
            for key in tool
            if key not in known
        ]
    return warnings


def validate_document(file: str, document: Any) -> list[Problem]:
    """Every problem with an already parsed pocket.json document, errors and warnings, in document order."""
    problems = manifest_problems(file, document)
    if isinstance(document, dict):
        tool = document.get("tool")
        if isinstance(tool, dict):
            problems += input_schema_problems(file, tool.get("inputSchema"))
            problems += input_schema_problems(file, tool.get("outputSchema"), key="outputSchema")
        problems += _variable_problems(file, document)
        problems += _unknown_key_warnings(file, document)
    return problems


def parse_json(file: str, text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise ManifestError(
            [Problem(file, f"line {exc.lineno}, column {exc.colno}", f"invalid JSON: {exc.msg}")]
        ) from None


def _as_error(problem: Problem) -> Problem:
    """A warning under --strict: an error, saying so rather than "is ignored"."""
    if not problem.is_warning:
        return problem
    return Problem(
        problem.file, problem.pointer, problem.message.replace(" is ignored", " (not allowed with --strict)")
    )


def load_manifest(folder: str | os.PathLike[str], *, strict: bool = False) -> Manifest:
    """Read and validate `folder/pocket.json`. Raises ManifestError listing every problem found.

    With `strict`, warnings (unknown keys) count as errors.
    """
    folder = Path(folder)
    path = folder / MANIFEST_NAME
    file = str(path)
    if path.is_symlink() and not path.resolve().is_relative_to(folder.resolve()):
        # A repository's pocket.json must not make the runner read a file elsewhere on this machine.
        raise ManifestError([Problem(file, "", "pocket.json is a symbolic link to a file outside the tool's folder")])
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ManifestError([Problem(file, "", "no pocket.json in this folder")]) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ManifestError([Problem(file, "", f"cannot read the manifest: {exc}")]) from None
    document = parse_json(file, text)
    problems = validate_document(file, document)
    if any(not p.is_warning or strict for p in problems):
        raise ManifestError([_as_error(p) if strict else p for p in problems])
    return Manifest.model_validate({**document, "folder": folder, "warnings": tuple(problems)})
