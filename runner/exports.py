"""Lazy re-exports for the packages' `__init__` files (PEP 562): a name's module is imported when the name is
first used, so importing a package, or one module of it, does not import all of its siblings."""

from __future__ import annotations

import sys
from collections.abc import Callable, Mapping
from importlib import import_module
from typing import Any


def lazy(package: str, modules: Mapping[str, str]) -> Callable[[str], Any]:
    """The module `__getattr__` of `package`, whose public names live in `modules` (name -> module)."""

    def __getattr__(name: str) -> Any:
        module = modules.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(import_module(module), name)
        setattr(sys.modules[package], name, value)  # later lookups do not come here
        return value

    return __getattr__
