"""Images for the Kubernetes backend: built on the local Docker engine as for the Docker backend, pushed to
`sandbox.registry` (tag = the content hash the build is named by), and handed to Pods by digest, so a node runs
exactly the image that was built. Or, per tool, a prebuilt reference from `[sandbox.kubernetes.images]`."""

from __future__ import annotations

import threading
from collections.abc import Callable

from runner import telemetry
from runner.errors import SandboxError
from runner.manifest import Manifest
from runner.sandbox.engine import DockerEngine
from runner.settings import SandboxSettings


def split_reference(reference: str) -> tuple[str, str]:
    """("repository", "tag") of `name[:tag]` (a registry's `host:port/` is no tag)."""
    slash = reference.rfind("/")
    colon = reference.rfind(":")
    if colon > slash:
        return reference[:colon], reference[colon + 1 :]
    return reference, "latest"


class RegistryImages:
    """Tool images as references by digest in the registry the cluster pulls from. Thread-safe."""

    def __init__(self, builder: DockerEngine, settings: SandboxSettings, say: Callable[[str], None]):
        self._builder = builder  # the local engine the images are built on and pushed from
        self.settings = settings
        self._say = say
        self._lock = threading.Lock()
        self._pushed: dict[str, str] = {}  # local tag -> reference by digest

    def image(self, manifest: Manifest) -> str:
        """The tool's image as `registry/repository@sha256:...`: prebuilt, or built and pushed."""
        prebuilt = self.settings.kubernetes.images.get(manifest.name)
        if prebuilt:
            return self.pinned(prebuilt)
        return self.push(self._builder.image(manifest))

    def _push(self, local: str, remote: str, tag: str, registry: str) -> str:
        """Tag and push; returns the digest the registry reports."""
        api = self._builder.api
        digest = None
        try:
            api.tag(local, remote, tag)
            for line in api.push(remote, tag=tag, stream=True, decode=True):
                if line.get("error"):
                    raise SandboxError(line.get("error"))
                digest = (line.get("aux") or {}).get("Digest") or digest
        except SandboxError as exc:
            raise SandboxError(f"cannot push {local} to sandbox.registry {registry}: {exc}") from None
        except Exception as exc:
            reason = self._builder.failure(exc)
            raise SandboxError(f"cannot push {local} to sandbox.registry {registry}: {reason}") from None
        if not digest:
            raise SandboxError(f"the registry {registry} did not return a digest for {local}")
        return digest

    def pinned(self, reference: str) -> str:
        """`reference` by digest: as it is when it names one, else the digest its tag names now."""
        if "@sha256:" in reference:
            return reference
        with self._lock:
            known = self._pushed.get(reference)
        if known:
            return known
        api = self._builder.api
        repository, tag = split_reference(reference)
        try:
            self._say(f"resolving {reference} to its digest")
            api.pull(repository, tag=tag)
            digests = api.inspect_image(reference).get("RepoDigests") or []
        except Exception as exc:
            raise SandboxError(f"cannot resolve the prebuilt image {reference!r} to a digest: {exc}") from None
        pinned = next((d for d in digests if d.startswith(repository + "@")), None)
        if pinned is None:
            raise SandboxError(f"the prebuilt image {reference!r} has no digest in {repository!r}: push it there")
        with self._lock:
            self._pushed[reference] = pinned
        return pinned

    def push(self, local: str) -> str:
        """Push the local image `local` (name:tag) to sandbox.registry; returns its reference by digest there."""
        with self._lock:
            known = self._pushed.get(local)
        if known:
            return known
        registry = (self.settings.registry or "").rstrip("/")
        if not registry:
            raise SandboxError(
                'sandbox.backend = "kubernetes" needs sandbox.registry, the registry the cluster pulls tool images '
                "from (e.g. registry.example.com/pocket), or a prebuilt image per tool in [sandbox.kubernetes.images]"
            )
        repository, tag = split_reference(local)
        remote = f"{registry}/{repository}"
        self._say(f"pushing {local} to {registry}")
        with telemetry.span("pocket.image.push", {"container.image.name": local, "pocket.registry": registry}):
            digest = self._push(local, remote, tag, registry)
        pinned = f"{remote}@{digest}"
        with self._lock:
            self._pushed[local] = pinned
        return pinned
