""".secrets.toml.example documents every settings key, and uncommented it is valid settings."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

from pydantic import BaseModel

from runner.settings import ProviderSettings, Settings, ToolLimits

EXAMPLE = Path(__file__).resolve().parent.parent / ".secrets.toml.example"
SETTING_LINE = re.compile(r"^# ((\[[^\]]+\])|([A-Za-z_][A-Za-z0-9_]* = .*))$")


def uncommented() -> dict:
    lines = [m.group(1) for m in map(SETTING_LINE.match, EXAMPLE.read_text().splitlines()) if m]
    return tomllib.loads("\n".join(lines))


def keys(model: type[BaseModel], prefix: str = "") -> set[str]:
    found = set()
    for name, field in model.model_fields.items():
        found.add(prefix + name)
        if isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel):
            found |= keys(field.annotation, f"{prefix}{name}.")
    return found


def flatten(data: dict, prefix: str = "") -> set[str]:
    found = set()
    for key, value in data.items():
        found.add(prefix + key)
        if isinstance(value, dict):
            found |= flatten(value, f"{prefix}{key}.")
    return found


def test_uncommented_the_example_is_valid_settings():
    settings = Settings.model_validate(uncommented())
    assert "slack" in settings.auth and "hello" in settings.sandbox.tools


def test_every_settings_key_is_documented():
    documented = flatten(uncommented())
    top_level = keys(Settings)
    assert top_level - documented == set()
    tool_keys = {f"sandbox.tools.hello.{k}" for k in keys(ToolLimits)}
    assert tool_keys - documented == set()
    provider_fields = set(ProviderSettings.model_fields)
    documented_provider_fields = {k.split(".")[2] for k in documented if k.startswith("auth.") and k.count(".") == 2}
    assert provider_fields - documented_provider_fields == set()
