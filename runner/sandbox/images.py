"""Tool images: each tool gets an image `pocket-tool/<name>:<hash16>` (its base image, the tool's files in
/tool, its `entrypoint.build` run once, and our launcher in /pocket), named by a hash of its build context
(`context`) and built once (`build`). When an edited tool is rebuilt, the images its earlier versions built
(same tool, same folder) are removed.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import re
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from runner import telemetry
from runner.errors import SandboxError
from runner.manifest import Manifest
from runner.sandbox.build import Build
from runner.sandbox.context import Context, file_stats, folder_key, missing_code
from runner.sandbox.labels import LABEL_FOLDER, LABEL_TOOL
from runner.sandbox.watch import FolderWatch
from runner.settings import SandboxSettings

if TYPE_CHECKING:
    from runner.sandbox.engine import DockerEngine


def image_repository(tool_name: str) -> str:
    """A Docker repository name for a tool: lower case, [a-z0-9] separated by single `-`."""
    cleaned = re.sub(r"[^a-z0-9]+", "-", tool_name.lower()).strip("-") or "tool"
    return f"pocket-tool/{cleaned[:100]}"


class ImageBuilder:
    """Finds or builds the image of a tool, and removes the images its earlier versions built.

    Caches which tool contents have which tag, by file stats (walked again when `watch` saw the folder change).
    """

    def __init__(self, engine: DockerEngine, settings: SandboxSettings, say: Callable[[str], None]):
        self._engine = engine
        self.settings = settings
        self._say = say
        self._lock = threading.Lock()
        self._images: dict[tuple[Any, ...], str] = {}  # (folder, entrypoint, base, file stats, changes) -> tag
        self._build_locks: dict[str, threading.Lock] = {}
        self._superseded: dict[str, str] = {}  # image id -> name: images of edited tools still in use
        self._ids: dict[str, str] = {}  # tag -> image id
        self._watch = FolderWatch()
        self._looking = threading.Lock()
        self._stats: dict[str, tuple[tuple[tuple[str, int, int, int], ...], int]] = {}  # folder -> _looked_at
        # folder -> (manifest, look, tag) of its last call: a call after it with the folder unchanged compares two
        # objects by identity instead of hashing every file's stats again
        self._last: dict[str, tuple[Manifest, tuple[Any, ...], str]] = {}
        self._build = Build(engine, settings, say, self._image_exists)
        # Removing an edited tool's earlier image (~0.2 s) happens after the build, off the call's path
        self._pruner = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="pocket-prune")

    @property
    def api(self) -> Any:
        return self._engine.api

    def base_image(self, manifest: Manifest) -> str:
        if manifest.base_image:
            return manifest.base_image
        if (manifest.language or "python") == "node":
            return self.settings.node_image
        return self.settings.python_image

    def _base_id(self, base: str, manifest: Manifest) -> str:
        import docker.errors

        try:
            return self.api.inspect_image(base)["Id"]
        except docker.errors.ImageNotFound:
            pass
        self._say(f"pulling base image {base}")
        try:
            self.api.pull(base)
            return self.api.inspect_image(base)["Id"]
        except docker.errors.APIError as exc:
            if manifest.base_image:
                hint = (
                    f"build it (docker build -t {base} ...) or pull it (docker pull {base}) on this machine, "
                    f"or edit the tool's baseImage"
                )
            else:
                setting = "sandbox.node_image" if (manifest.language or "python") == "node" else "sandbox.python_image"
                hint = f"pull or load it, or point {setting} at an image this machine has"
            raise SandboxError(
                f"base image {base!r} is not on this machine and cannot be pulled ({exc.explanation or exc}); {hint}"
            ) from None

    def _looked_at(self, folder: str) -> tuple[tuple[tuple[str, int, int, int], ...], int]:
        """The folder's file stats and how many changes the watch saw in it: walked again only after one (or when
        the watch cannot tell). The count is in the key too, so an edit that keeps a file's size and time still
        makes the contents hashed again. One look at a time: no call takes the stats of before a change another
        call is walking."""
        with self._looking:
            known = self._stats.get(folder)
            changed = self._watch.changed(folder)
            if known is not None and changed is False:
                return known
            self._watch.looked(folder)
            changes = known[1] + bool(changed) if known is not None else 0
            looked = self._stats[folder] = (file_stats(Path(folder)), changes)
            return looked

    def image(self, manifest: Manifest) -> str:
        """The tag of the tool's image, built first when no image holds exactly these contents."""
        folder = str(manifest.folder)
        looked = self._looked_at(folder)
        last = self._last.get(folder)
        if last is not None and last[0] is manifest and last[1] is looked:  # the same look as this tool's last call
            return last[2]
        base = self.base_image(manifest)
        key = (folder, manifest.entrypoint, base, *looked)
        tag = self._images.get(key)
        if tag is None:  # else files unchanged since this runner last used them: a lookup, not worth a span
            with telemetry.span("pocket.image", {"gen_ai.tool.name": manifest.name}) as current:
                tag = self._resolve(manifest, base, key)
                telemetry.annotate(current, {"container.image.name": tag})
            self._images[key] = tag
        self._last[folder] = (manifest, looked, tag)
        return tag

    def _resolve(self, manifest: Manifest, base: str, key: tuple[Any, ...]) -> str:
        """The tag naming these contents (the base image pulled, the files hashed), built unless it exists."""
        missing = missing_code(manifest, [rel for rel, *_ in key[3]])
        if missing:
            raise SandboxError(f"this folder has a pocket.json but no code: {missing}")
        context = Context.of(manifest, self._base_id(base, manifest), self.settings)
        tag = f"{image_repository(manifest.name)}:{context.digest}"
        with self._lock:
            lock = self._build_locks.setdefault(tag, threading.Lock())
        with lock:
            if not self._image_exists(tag):
                attributes = {"gen_ai.tool.name": manifest.name, "container.image.name": tag}
                with telemetry.span("pocket.image.build", attributes):
                    self._build.run(manifest, context, tag)
                try:
                    self._pruner.submit(self._prune_superseded, manifest, tag)
                except RuntimeError:  # closing
                    self._prune_superseded(manifest, tag)
        return tag

    def image_id(self, tag: str) -> str | None:
        """The id (sha256 digest of the config) of the image `tag` names, asked of the engine once per tag."""
        known = self._ids.get(tag)
        if known is None:
            with contextlib.suppress(Exception):
                known = self._ids[tag] = self.api.inspect_image(tag)["Id"]
        return known

    def _prune_superseded(self, manifest: Manifest, keep: str) -> None:
        """Remove the images earlier versions of this tool folder built, so edits do not fill the disk.

        Never forced: an image a container still uses (a pool of this or another runner) stays, and this
        sandbox tries again when it closes.
        """
        filters = {"label": [f"{LABEL_TOOL}={manifest.name}", f"{LABEL_FOLDER}={folder_key(manifest.folder)}"]}
        with contextlib.suppress(Exception):
            for image in self.api.images(filters=filters):
                if keep not in (image.get("RepoTags") or []):
                    self._remove_image(image["Id"], ", ".join(image.get("RepoTags") or []) or image["Id"][:19])

    def _remove_image(self, image_id: str, name: str) -> None:
        try:
            self.api.remove_image(image_id)
        except Exception:
            with self._lock:
                self._superseded[image_id] = name
            return
        with self._lock:
            self._superseded.pop(image_id, None)
        self._say(f"removed the superseded image {name}")

    def _image_exists(self, tag: str) -> bool:
        import docker.errors

        try:
            self.api.inspect_image(tag)
            return True
        except docker.errors.ImageNotFound:
            return False

    def close(self) -> None:
        """Remove the superseded images that were still in use before (their containers are gone now)."""
        self._pruner.shutdown(wait=True)
        self._watch.close()
        with self._lock:
            superseded = list(self._superseded.items())
        for image_id, name in superseded:
            self._remove_image(image_id, name)
