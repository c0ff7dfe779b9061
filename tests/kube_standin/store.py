"""The stand-in's object store: objects by (resource, namespace, name) with resource versions, an event log
for watches (`?watch=true&resourceVersion=N` replays what came after N, then follows), label and field
selectors as the API parses them, and Status bodies as the API returns errors."""

from __future__ import annotations

import asyncio
import copy
import datetime
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

LOG_KEEP = 5000  # events kept for watches that resume from a resource version


def now() -> str:
    """An RFC 3339 timestamp, as metav1.Time serialises."""
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def status(code: int, reason: str, message: str, **details: Any) -> dict[str, Any]:
    """A metav1.Status, the body of every API error."""
    body: dict[str, Any] = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                            "message": message, "reason": reason, "code": code}  # fmt: skip
    if details:
        body["details"] = details
    return body


class ApiError(Exception):
    def __init__(self, code: int, reason: str, message: str, **details: Any):
        super().__init__(message)
        self.body = status(code, reason, message, **details)
        self.code = code


def parse_selector(text: str) -> list[tuple[str, str, str]]:
    """`a=b,c!=d,e,!f` as (key, operator, value) terms: =, ==, != with a value; exists and !exists without."""
    terms = []
    for raw in filter(None, (part.strip() for part in text.split(","))):
        if "!=" in raw:
            key, value = raw.split("!=", 1)
            terms.append((key.strip(), "!=", value.strip()))
        elif "=" in raw:
            key, value = raw.split("==", 1) if "==" in raw else raw.split("=", 1)
            terms.append((key.strip(), "=", value.strip()))
        elif raw.startswith("!"):
            terms.append((raw[1:].strip(), "!exists", ""))
        else:
            terms.append((raw, "exists", ""))
    return terms


def matches(terms: list[tuple[str, str, str]], values: dict[str, str]) -> bool:
    for key, operator, value in terms:
        present = key in values
        if operator == "=" and values.get(key) != value:
            return False
        if operator == "!=" and present and values[key] == value:
            return False
        if operator == "exists" and not present:
            return False
        if operator == "!exists" and present:
            return False
    return True


def field_values(obj: dict[str, Any]) -> dict[str, str]:
    meta = obj.get("metadata") or {}
    values = {"metadata.name": meta.get("name", ""), "metadata.namespace": meta.get("namespace", "")}
    if obj.get("kind") == "Pod":
        values["status.phase"] = (obj.get("status") or {}).get("phase", "")
    return values


@dataclass
class Watcher:
    resource: str
    namespace: str
    labels: list[tuple[str, str, str]]
    fields: list[tuple[str, str, str]]
    loop: asyncio.AbstractEventLoop
    queue: asyncio.Queue[dict[str, Any]] = field(default_factory=asyncio.Queue)

    def wants(self, resource: str, obj: dict[str, Any]) -> bool:
        meta = obj["metadata"]
        return (
            resource == self.resource
            and meta.get("namespace") == self.namespace
            and matches(self.labels, meta.get("labels") or {})
            and matches(self.fields, field_values(obj))
        )


class Store:
    """Thread-safe: request handlers and the Pod runners change it; watchers are told on their own loop."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._objects: dict[tuple[str, str, str], dict[str, Any]] = {}
        self._version = 0
        self._log: list[tuple[int, str, str, dict[str, Any]]] = []  # (version, resource, type, object)
        self._watchers: list[Watcher] = []

    def _publish(self, resource: str, kind: str, obj: dict[str, Any]) -> None:
        snapshot = copy.deepcopy(obj)
        self._log.append((int(obj["metadata"]["resourceVersion"]), resource, kind, snapshot))
        del self._log[:-LOG_KEEP]
        for watcher in self._watchers:
            if watcher.wants(resource, snapshot):
                event = {"type": kind, "object": snapshot}
                watcher.loop.call_soon_threadsafe(watcher.queue.put_nowait, event)

    def _bump(self, obj: dict[str, Any]) -> None:
        self._version += 1
        obj["metadata"]["resourceVersion"] = str(self._version)

    def create(self, resource: str, namespace: str, obj: dict[str, Any]) -> dict[str, Any]:
        meta = obj.setdefault("metadata", {})
        name = meta.get("name")
        with self._lock:
            if (resource, namespace, name) in self._objects:
                raise ApiError(409, "AlreadyExists", f'{resource} "{name}" already exists',
                               name=name, kind=resource)  # fmt: skip
            meta.update(namespace=namespace, uid=str(uuid.uuid4()), creationTimestamp=now(), generation=1)
            self._bump(obj)
            self._objects[(resource, namespace, name)] = obj
            self._publish(resource, "ADDED", obj)
            return copy.deepcopy(obj)

    def get(self, resource: str, namespace: str, name: str) -> dict[str, Any]:
        with self._lock:
            obj = self._objects.get((resource, namespace, name))
            if obj is None:
                raise ApiError(404, "NotFound", f'{resource} "{name}" not found', name=name, kind=resource)
            return copy.deepcopy(obj)

    def update(self, resource: str, namespace: str, name: str, change: Callable[[dict[str, Any]], None]) -> bool:
        """Apply `change` to the stored object and publish MODIFIED; False when it is gone."""
        with self._lock:
            obj = self._objects.get((resource, namespace, name))
            if obj is None:
                return False
            change(obj)
            self._bump(obj)
            self._publish(resource, "MODIFIED", obj)
            return True

    def remove(self, resource: str, namespace: str, name: str) -> dict[str, Any] | None:
        with self._lock:
            obj = self._objects.pop((resource, namespace, name), None)
            if obj is not None:
                self._bump(obj)
                self._publish(resource, "DELETED", obj)
            return copy.deepcopy(obj) if obj else None

    def list(self, resource: str, namespace: str, labels: str = "", fields: str = "") -> tuple[list[Any], str]:
        label_terms, field_terms = parse_selector(labels), parse_selector(fields)
        with self._lock:
            items = [
                copy.deepcopy(obj)
                for (res, ns, _), obj in sorted(self._objects.items())
                if res == resource and ns == namespace
                and matches(label_terms, obj["metadata"].get("labels") or {})
                and matches(field_terms, field_values(obj))
            ]  # fmt: skip
            return items, str(self._version)

    def all(self, resource: str) -> list[dict[str, Any]]:
        with self._lock:
            return [copy.deepcopy(obj) for (res, _, _), obj in self._objects.items() if res == resource]

    def watch(self, watcher: Watcher, since: str | None) -> None:
        """Register `watcher`: first the events after `since` (or, without it, every matching object as ADDED)."""
        with self._lock:
            if since:
                for version, resource, kind, obj in self._log:
                    if version > int(since) and watcher.wants(resource, obj):
                        watcher.queue.put_nowait({"type": kind, "object": obj})
            else:
                for (resource, _, _), obj in sorted(self._objects.items()):
                    if watcher.wants(resource, obj):
                        watcher.queue.put_nowait({"type": "ADDED", "object": copy.deepcopy(obj)})
            self._watchers.append(watcher)

    def unwatch(self, watcher: Watcher) -> None:
        with self._lock:
            self._watchers.remove(watcher)
