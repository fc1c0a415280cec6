"""The compatibility catalog: per-minor facts (patches, skew, emulation, etcd, API removals,
container runtime, cgroup policy) and cluster-wide rules, each with its source.

The catalog only answers what it knows: a minor it has no entry for, or a patch it does not list,
is refused with ``errors.Refused``, never guessed. ``load()`` reads the file shipped in this
package; ``load(path)`` reads another one (a newer catalog) in the same format.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

from upgrader import errors
from upgrader.core.versions import Minor, Version

CATALOG_FILE = Path(__file__).with_name("catalog.json")


@dataclass(frozen=True)
class RemovedApi:
    """An API group/version a release stops serving."""

    group: str
    version: str
    resources: tuple[str, ...]
    use_instead: str
    removed_in: Minor

    @property
    def group_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version


@dataclass(frozen=True)
class RuntimePolicy:
    """containerd versions for a Kubernetes minor: each entry is a series (X.Y) and its lowest patch.

    A series older than every listed one fails; a series newer than every listed one passes.
    """

    minimum: tuple[Version, ...] | None  # None: the catalog has no hard minimum for this minor
    recommended: tuple[Version, ...]
    note: str = ""  # said with a below-recommended warning (e.g. when a series loses support)


@dataclass(frozen=True)
class MinorEntry:
    minor: Minor
    patches: tuple[Version, ...]  # latest first
    patches_complete: bool
    kubelet_max_older: int  # the skew policy: how many minors a kubelet may lag this apiserver
    kubeadm_kubelet_max_older: int  # what this minor's `kubeadm upgrade apply` accepts (1 through 1.28)
    kubeadm_etcd: Version
    emulation_min: Minor | None
    removed_apis: tuple[RemovedApi, ...]
    containerd: RuntimePolicy
    refuses_cgroup_v1: bool
    sources: Mapping[str, str]

    @property
    def latest(self) -> Version:
        return self.patches[0]

    def can_emulate(self, emulated: Minor) -> bool:
        """Whether this minor's binaries accept ``--emulated-version=emulated``."""
        return self.emulation_min is not None and self.emulation_min <= emulated <= self.minor


@dataclass(frozen=True)
class Catalog:
    version: str
    minors: Mapping[Minor, MinorEntry]
    incomplete: Mapping[Minor, str]
    etcd_min_patch_before_next_minor: Mapping[Minor, Version]
    sources: Mapping[str, str]
    # the etcd version the reference installer (Kubespray) runs on etcd's own hosts for a Kubernetes minor:
    # an external etcd below it at a hop is moved there first (``checks.etcd_route``); absent: no floor known
    external_etcd: Mapping[Minor, Version] = field(default_factory=dict)
    # a catalog refreshed from a release mirror (``rules.refresh``): based_on, at, source; empty otherwise
    refreshed: Mapping[str, str] = field(default_factory=dict)

    def entry(self, minor: Minor) -> MinorEntry:
        found = self.minors.get(minor)
        if found is not None:
            return found
        if minor in self.incomplete:
            raise errors.Refused(
                f"the rules catalog ({self.version}) is incomplete for {minor}: {self.incomplete[minor]}"
            )
        known = f"{min(self.minors)} to {max(self.minors)}"
        raise errors.Refused(f"Kubernetes {minor} is not in the rules catalog ({self.version}, which covers {known})")

    def resolve(self, target: Version | Minor) -> Version:
        """The exact release a ``--to`` value means; refuses what the catalog does not know."""
        if isinstance(target, Minor):
            return self.entry(target).latest
        entry = self.entry(target.minor_version)
        if target not in entry.patches:
            newest = entry.latest
            hint = (
                f"; the catalog knows up to {newest} and may be out of date: run `upgrader catalog update` (or "
                "use a newer catalog with --catalog)"
                if target > newest
                else ""
            )
            raise errors.Refused(f"Kubernetes {target} is not a release the rules catalog knows{hint}")
        return target

    def removals_crossed(self, after: Minor, upto: Minor) -> list[RemovedApi]:
        """APIs that stop being served by some release r with after < r <= upto."""
        return [
            removed
            for minor, entry in sorted(self.minors.items())
            if after < minor <= upto
            for removed in entry.removed_apis
        ]


def _versions(values: list[str] | None, what: str) -> tuple[Version, ...] | None:
    if values is None:
        return None
    return tuple(Version.parse(v, what=what) for v in values)


def _entry(key: str, raw: Mapping[str, Any]) -> MinorEntry:
    minor = Minor.parse(key, what="catalog minor")
    patches = _versions(raw["patches"], f"patch of {key}") or ()
    if not patches or list(patches) != sorted(patches, reverse=True):
        raise errors.InputError(f"rules catalog: {key}: patches must be non-empty, latest first")
    if any(p.minor_version != minor for p in patches):
        raise errors.InputError(f"rules catalog: {key}: a patch of another minor is listed")
    removed = tuple(
        RemovedApi(
            group=item["group"],
            version=item["version"],
            resources=tuple(item["resources"]),
            use_instead=item["use_instead"],
            removed_in=minor,
        )
        for item in raw["removed_apis"]
    )
    runtime = raw["containerd"]
    return MinorEntry(
        minor=minor,
        patches=patches,
        patches_complete=bool(raw["patches_complete"]),
        kubelet_max_older=int(raw["kubelet_max_older"]),
        # a catalog written before this was kept: the skew policy's number (kubeadm's own check may be stricter)
        kubeadm_kubelet_max_older=int(raw.get("kubeadm_kubelet_max_older", raw["kubelet_max_older"])),
        kubeadm_etcd=Version.parse(raw["kubeadm_etcd"], what=f"etcd version of {key}"),
        emulation_min=Minor.parse(raw["emulation_min"]) if raw["emulation_min"] else None,
        removed_apis=removed,
        containerd=RuntimePolicy(
            minimum=_versions(runtime["minimum"], "containerd version"),
            recommended=_versions(runtime["recommended"], "containerd version") or (),
            note=str(runtime.get("note", "")),
        ),
        refuses_cgroup_v1=bool(raw["kubelet_refuses_cgroup_v1"]),
        sources=dict(raw["sources"]),
    )


def parse(data: Mapping[str, Any]) -> Catalog:
    try:
        minors = {entry.minor: entry for entry in (_entry(k, v) for k, v in data["minors"].items())}
        rules = data["rules"]
        etcd_min = {Minor.parse(k): Version.parse(v) for k, v in rules["etcd"]["min_patch_before_next_minor"].items()}
        sources = {name: str(rule["source"]) for name, rule in rules.items()}
        external = {
            Minor.parse(k): Version.parse(v, what=f"external etcd version of {k}")
            for k, v in dict(rules.get("external_etcd", {}).get("versions", {})).items()
        }
        incomplete = {Minor.parse(k): str(v) for k, v in data.get("incomplete_minors", {}).items()}
        refreshed = {str(k): str(v) for k, v in dict(data.get("refreshed") or {}).items()}
        return Catalog(
            version=str(data["catalog_version"]),
            minors=minors,
            incomplete=incomplete,
            etcd_min_patch_before_next_minor=etcd_min,
            sources=sources,
            external_etcd=external,
            refreshed=refreshed,
        )
    except (KeyError, TypeError, ValueError, errors.InputError) as exc:
        raise errors.InputError(f"rules catalog is malformed: {exc}") from exc


def shipped_document() -> dict[str, Any]:
    """The shipped catalog as its JSON document, a fresh copy to derive another catalog from."""
    data: dict[str, Any] = json.loads(CATALOG_FILE.read_text(encoding="utf-8"))
    return data


def load(path: Path | None = None) -> Catalog:
    """The shipped catalog (cached), or the one at ``path``."""
    if path is None:
        return _shipped()
    return _read(path)


@cache
def _shipped() -> Catalog:
    return _read(CATALOG_FILE)


def _read(path: Path) -> Catalog:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise errors.InputError(f"rules catalog not found: {path}") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise errors.InputError(f"cannot read rules catalog {path}: {exc}") from exc
    if not isinstance(data, dict):
        raise errors.InputError(f"rules catalog {path} is not a JSON object")
    return parse(data)
