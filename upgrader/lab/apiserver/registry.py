"""Object storage over etcd, the way kube-apiserver's etcd3 store keeps it (JSON instead of protobuf).

resourceVersion is the key's mod revision; updates are compare-and-swap on it, so two writers never
silently overwrite each other and a stale client gets 409 Conflict.
"""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from upgrader.etcd import kv


@dataclass(frozen=True)
class Resource:
    plural: str
    kind: str
    group: str
    versions: tuple[str, ...]  # newest first; the first one is the storage version
    namespaced: bool
    key: str  # the registry path segment (nodes are "minions" in kube-apiserver)
    subresources: tuple[str, ...] = ()
    short: tuple[str, ...] = ()  # kubectl's short names (``no``, ``po``, ``pdb``), from discovery
    categories: tuple[str, ...] = ()  # ``all`` for what ``kubectl get all`` lists

    def prefix(self, namespace: str | None = None) -> str:
        base = f"/registry/{self.key}/"
        return f"{base}{namespace}/" if self.namespaced and namespace else base

    def path(self, name: str, namespace: str | None) -> str:
        return f"{self.prefix(namespace)}{name}"


_FLOWCONTROL = ("v1", "v1beta3", "v1beta2", "v1beta1")

RESOURCES = (
    Resource("nodes", "Node", "", ("v1",), False, "minions", ("status",), short=("no",)),
    Resource("pods", "Pod", "", ("v1",), True, "pods", ("status", "eviction"), short=("po",), categories=("all",)),
    Resource("namespaces", "Namespace", "", ("v1",), False, "namespaces", ("status",), short=("ns",)),
    Resource("configmaps", "ConfigMap", "", ("v1",), True, "configmaps", short=("cm",)),
    Resource(
        "poddisruptionbudgets",
        "PodDisruptionBudget",
        "policy",
        ("v1", "v1beta1"),
        True,
        "poddisruptionbudgets",
        ("status",),
        short=("pdb",),
    ),
    Resource("daemonsets", "DaemonSet", "apps", ("v1",), True, "daemonsets", ("status",), ("ds",), ("all",)),
    Resource("replicasets", "ReplicaSet", "apps", ("v1",), True, "replicasets", ("status",), ("rs",), ("all",)),
    Resource("statefulsets", "StatefulSet", "apps", ("v1",), True, "statefulsets", ("status",), ("sts",), ("all",)),
    Resource("jobs", "Job", "batch", ("v1",), True, "jobs", ("status",), categories=("all",)),
    Resource("cronjobs", "CronJob", "batch", ("v1", "v1beta1"), True, "cronjobs", ("status",), ("cj",), ("all",)),
    Resource("leases", "Lease", "coordination.k8s.io", ("v1",), True, "leases"),
    Resource("storageclasses", "StorageClass", "storage.k8s.io", ("v1",), False, "storageclasses", short=("sc",)),
    Resource(
        "flowschemas", "FlowSchema", "flowcontrol.apiserver.k8s.io", _FLOWCONTROL, False, "flowschemas", ("status",)
    ),
    Resource(
        "prioritylevelconfigurations",
        "PriorityLevelConfiguration",
        "flowcontrol.apiserver.k8s.io",
        _FLOWCONTROL,
        False,
        "prioritylevelconfigurations",
        ("status",),
    ),
)


def find(plural: str) -> Resource:
    return next(r for r in RESOURCES if r.plural == plural)


def timestamp() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class NotFound(Exception):
    pass


class AlreadyExists(Exception):
    pass


class Conflict(Exception):
    pass


def _decode(item: kv.Item) -> dict[str, Any]:
    obj: dict[str, Any] = json.loads(item.value)
    obj.setdefault("metadata", {})["resourceVersion"] = str(item.mod_revision)
    return obj


def _encode(obj: dict[str, Any]) -> bytes:
    stored = json.loads(json.dumps(obj))
    stored.get("metadata", {}).pop("resourceVersion", None)
    return json.dumps(stored, separators=(",", ":")).encode()


class Registry:
    def __init__(self, store: kv.KV) -> None:
        self.store = store

    def get(self, resource: Resource, name: str, namespace: str | None) -> dict[str, Any]:
        item = self.store.get(resource.path(name, namespace))
        if item is None:
            raise NotFound(name)
        return _decode(item)

    def list(
        self, resource: Resource, namespace: str | None, *, limit: int = 0, after: str | None = None
    ) -> tuple[list[dict[str, Any]], str, str | None]:
        """Objects (sorted by key), the list's resourceVersion, and a continue token if cut by ``limit``."""
        revision = self.store.revision()
        items = self.store.range(resource.prefix(namespace))
        if after:
            items = [i for i in items if i.key > after]
        token = None
        if limit and len(items) > limit:
            items = items[:limit]
            token = base64.urlsafe_b64encode(items[-1].key.encode()).decode()
        return [_decode(i) for i in items], str(revision), token

    def create(
        self, resource: Resource, obj: dict[str, Any], namespace: str | None, *, dry_run: bool = False
    ) -> dict[str, Any]:
        meta = obj.setdefault("metadata", {})
        meta.setdefault("uid", str(uuid.uuid4()))
        meta.setdefault("creationTimestamp", timestamp())
        meta["generation"] = 1  # bumped by every change of spec (the status subresource leaves it)
        if resource.namespaced:
            meta["namespace"] = namespace
        if dry_run:
            if self.store.get(resource.path(meta["name"], namespace)) is not None:
                raise AlreadyExists(meta["name"])
            copied: dict[str, Any] = json.loads(json.dumps(obj))
            return copied
        try:
            item = self.store.create(resource.path(meta["name"], namespace), _encode(obj))
        except kv.Conflict:
            raise AlreadyExists(meta["name"]) from None
        return _decode(item)

    def update(
        self,
        resource: Resource,
        name: str,
        namespace: str | None,
        change: Callable[[dict[str, Any]], dict[str, Any]],
        *,
        retries: int = 5,
        dry_run: bool = False,
    ) -> dict[str, Any]:
        """Reads, applies ``change``, writes back if nothing changed meanwhile (retrying a few times)."""
        key = resource.path(name, namespace)
        for _ in range(retries):
            item = self.store.get(key)
            if item is None:
                raise NotFound(name)
            new = change(_decode(item))
            expected = new.get("metadata", {}).get("resourceVersion")
            if expected is not None and str(expected) != str(item.mod_revision):
                raise Conflict(name)
            if dry_run:
                return {**new, "metadata": {**new.get("metadata", {}), "resourceVersion": str(item.mod_revision)}}
            try:
                return _decode(self.store.update(key, _encode(new), mod_revision=item.mod_revision))
            except kv.Conflict:
                continue
        raise Conflict(name)

    def delete(
        self,
        resource: Resource,
        name: str,
        namespace: str | None,
        *,
        revision: str | None = None,
        uid: str | None = None,
        dry_run: bool = False,
    ) -> dict[str, Any]:
        """Deletes, if the object still has ``revision`` and ``uid`` when given (DeleteOptions'
        preconditions; Conflict otherwise)."""
        key = resource.path(name, namespace)
        item = self.store.get(key)
        if item is None:
            raise NotFound(name)
        found = _decode(item)
        if (revision and str(revision) != str(item.mod_revision)) or (uid and uid != found["metadata"].get("uid")):
            raise Conflict(name)
        if dry_run:
            return found
        try:
            self.store.delete(key, mod_revision=item.mod_revision)
        except kv.Conflict:
            raise Conflict(name) from None
        return _decode(item)


def continue_key(token: str | None) -> str | None:
    if not token:
        return None
    try:
        return base64.urlsafe_b64decode(token.encode()).decode()
    except (ValueError, UnicodeDecodeError):
        return None
