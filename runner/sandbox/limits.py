"""What one call's container may use (settings, manifest and call options combined), and what the launcher
(`container/launch.sh`) reads for a call: environment lines, then the body framed by its length."""

from __future__ import annotations

import re
import shlex
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from runner.errors import PocketError
from runner.manifest import RESERVED_PREFIX, RESERVED_VARIABLES, Manifest
from runner.settings import SandboxSettings, ToolLimits

SENTINEL = "__pocket_body_follows__"  # followed by a space and the body's length in bytes
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


@dataclass(frozen=True)
class Limits:
    """What one call's container may use, after settings, manifest and call options are combined."""

    timeout: float
    memory_mb: int
    cpus: float
    pids: int
    output_limit: int
    network: bool | tuple[str, ...]  # a tuple: only these hosts, through the egress proxy
    max_concurrent: int  # the tool's containers at once
    # What the manifest asked for above the settings' ceilings, said once through progress
    lowered: tuple[str, ...] = field(default=(), compare=False)
    waited: float = field(default=0.0, compare=False)  # seconds the call waited for a container: part of its timeout

    def after(self, waited: float) -> Limits:
        """These limits for a call that waited `waited` seconds for a container (dataclasses.replace: 20 us)."""
        return Limits(self.timeout, self.memory_mb, self.cpus, self.pids, self.output_limit, self.network,
                      self.max_concurrent, self.lowered, waited)  # fmt: skip

    @property
    def time_left(self) -> float:
        return max(self.timeout - self.waited, 0.0)

    @property
    def container_key(self) -> tuple[Any, ...]:
        """The limits that are fixed when a container is created (pools are keyed by them)."""
        return (self.memory_mb, self.cpus, self.pids, self.network)


_LIMIT_UNITS = {"timeout_seconds": "s", "memory_mb": "MiB", "cpus": "CPUs", "pids": "processes",
                "output_limit_bytes": "bytes"}  # fmt: skip


def resolve_limits(
    settings: SandboxSettings, manifest: Manifest, timeout: float | None = None, provider_hosts: tuple[str, ...] = ()
) -> Limits:
    """`[sandbox.tools.NAME]` in settings wins as it is; otherwise the manifest's `sandbox` block may ask for
    less than the settings' values, which are both the defaults and the ceilings. A call's timeout is
    capped by the resulting timeout.

    A manifest that asks for network access is refused when `sandbox.allow_network` is false or the
    tool's settings say `network = false`. A list of hosts means only those hosts, through the egress
    proxy (HTTP and HTTPS via HTTP_PROXY/HTTPS_PROXY). `[sandbox.tools.NAME] network = true` grants the
    default bridge. A tool whose manifest asks for no network but names an auth provider may reach
    `provider_hosts`, its provider's API hosts, through the proxy (unless `sandbox.provider_egress` is off).
    """
    spec = manifest.sandbox
    override = settings.tools.get(manifest.name) or settings.tools.get(manifest.name.lower()) or ToolLimits()
    # `[sandbox.tools.NAME] network = true` grants a tool whose manifest asks for none the default network
    wants_network = bool(spec.network) or bool(override.network)
    if wants_network and (not settings.allow_network or override.network is False):
        where = "sandbox.allow_network = false" if not settings.allow_network else f"sandbox.tools.{manifest.name}"
        raise PocketError(f"tool {manifest.name!r} asks for network access and settings forbid it ({where})")
    lowered: list[str] = []

    def pick(name: str) -> Any:
        granted = getattr(override, name)
        if granted is not None:
            return granted
        ceiling, asked = getattr(settings, name), getattr(spec, name)
        if asked is None or asked <= ceiling:
            return asked if asked is not None else ceiling
        lowered.append(
            f"tool {manifest.name!r} asks for {asked:g} {_LIMIT_UNITS[name]}; limited to {ceiling:g} by "
            f"sandbox.{name} (raise it in [sandbox.tools.{manifest.name}])"
        )
        return ceiling

    limit = float(pick("timeout_seconds"))
    return Limits(
        timeout=min(float(timeout), limit) if timeout else limit,
        memory_mb=pick("memory_mb"),
        cpus=pick("cpus"),
        pids=pick("pids"),
        output_limit=pick("output_limit_bytes"),
        network=_network(settings, spec.network, override.network, provider_hosts),
        max_concurrent=override.max_concurrent or settings.max_concurrent,
        lowered=tuple(lowered),
    )


def _network(
    settings: SandboxSettings,
    asked: bool | tuple[str, ...],
    granted: bool | tuple[str, ...] | None,
    provider_hosts: tuple[str, ...],
) -> bool | tuple[str, ...]:
    """False (none), True (the default bridge) or the hosts reachable through the egress proxy."""
    if granted is False or isinstance(granted, tuple):
        return granted or False  # the operator's word: no network, or exactly these hosts
    if asked:
        return asked  # a host list stays a host list, also when settings grant network
    if granted or not (provider_hosts and settings.provider_egress and settings.allow_network):
        return bool(granted)
    return tuple(provider_hosts)


def check_environment(environment: Mapping[str, str]) -> None:
    """Raise PocketError for a variable no transport of a call can pass (see `launcher_input`), naming it,
    never its value."""
    for name, value in environment.items():
        if not _ENV_NAME.match(name) or name.startswith(RESERVED_PREFIX):
            raise PocketError(f"variable name {name!r} is not a valid environment variable name")
        if name in RESERVED_VARIABLES:
            raise PocketError(f"variable {name!r} is reserved for the sandbox")
        value = str(value)
        if "\n" in value or "\r" in value or "\0" in value:
            raise PocketError(f"variable {name!r} contains a newline or NUL byte, which the sandbox cannot pass")


def launcher_input(environment: Mapping[str, str], body: bytes, nonce: str = "") -> bytes:
    """What the launcher reads for a call: the nonce, the `export` lines, the sentinel with the body's length
    in bytes, then the body.

    The body is framed by its length, so the launcher never waits for the end of stdin: not every transport
    can close a container's stdin (Kubernetes' attach before v5.channel.k8s.io cannot). Names must be shell
    identifiers; values may hold anything but NUL and newlines (the launcher reads one line per variable).
    Errors name the variable, never its value.
    """
    check_environment(environment)
    lines = [f"pocket_nonce={nonce}\n"] if nonce else []
    lines += [f"export {name}={shlex.quote(str(value))}\n" for name, value in environment.items()]
    lines.append(f"{SENTINEL} {len(body)}\n")
    return "".join(lines).encode() + body
