"""What an apiserver at a given (emulated) minor serves: group/versions and their resources.

A group/version is served from the release that introduced it until the release that stops serving
it. The removals come from upgrader's rules catalog (so the lab and the planner agree); the
introductions are listed here for the few groups the lab serves or advertises.
"""

from __future__ import annotations

from typing import Any

from upgrader.core.rules import catalog as catalog_mod
from upgrader.core.versions import Minor
from upgrader.lab.apiserver import registry

# group/version -> the minor that introduced it (only what the lab serves or advertises)
INTRODUCED = {
    "v1": Minor(1, 0),
    "apps/v1": Minor(1, 9),
    "batch/v1": Minor(1, 0),
    "batch/v1beta1": Minor(1, 8),
    "coordination.k8s.io/v1": Minor(1, 14),
    "policy/v1": Minor(1, 21),
    "policy/v1beta1": Minor(1, 5),
    "flowcontrol.apiserver.k8s.io/v1beta1": Minor(1, 20),
    "flowcontrol.apiserver.k8s.io/v1beta2": Minor(1, 23),
    "flowcontrol.apiserver.k8s.io/v1beta3": Minor(1, 26),
    "flowcontrol.apiserver.k8s.io/v1": Minor(1, 29),
    "storage.k8s.io/v1": Minor(1, 6),
}


def removals() -> dict[str, Minor]:
    """group/version -> the minor that stops serving it, from the rules catalog."""
    out: dict[str, Minor] = {}
    for minor, entry in catalog_mod.load().minors.items():
        for removed in entry.removed_apis:
            out.setdefault(removed.group_version, minor)
    return out


class Discovery:
    def __init__(self, emulated: Minor) -> None:
        self.emulated = emulated
        self._removed = removals()

    def served(self, group_version: str) -> bool:
        introduced = INTRODUCED.get(group_version)
        removed = self._removed.get(group_version)
        return introduced is not None and introduced <= self.emulated and (removed is None or self.emulated < removed)

    def removed_in(self, group_version: str) -> Minor | None:
        return self._removed.get(group_version)

    def deprecated(self, group_version: str) -> bool:
        """Served now, and a later release stops serving it."""
        removed = self._removed.get(group_version)
        return self.served(group_version) and removed is not None and self.emulated < removed

    def group_versions(self, group: str) -> list[str]:
        prefix = f"{group}/" if group else ""
        found = [gv for gv in INTRODUCED if self.served(gv) and (gv.startswith(prefix) if group else "/" not in gv)]
        return sorted(found, key=_preference)

    def groups(self) -> list[str]:
        return sorted({gv.split("/")[0] for gv in INTRODUCED if "/" in gv and self.served(gv)})

    def resource(self, group: str, version: str, plural: str) -> registry.Resource | None:
        gv = f"{group}/{version}" if group else version
        if not self.served(gv):
            return None
        for resource in registry.RESOURCES:
            if resource.group == group and resource.plural == plural and version in resource.versions:
                return resource
        return None

    def api_group_list(self) -> dict[str, Any]:
        groups = []
        for group in self.groups():
            versions = [{"groupVersion": gv, "version": gv.split("/")[1]} for gv in self.group_versions(group)]
            groups.append({"name": group, "versions": versions, "preferredVersion": versions[0]})
        return {"kind": "APIGroupList", "apiVersion": "v1", "groups": groups}

    def resource_list(self, group: str, version: str) -> dict[str, Any] | None:
        gv = f"{group}/{version}" if group else version
        if not self.served(gv):
            return None
        resources = []
        for resource in registry.RESOURCES:
            if resource.group != group or version not in resource.versions:
                continue
            # No "watch" and no "deletecollection": the lab serves neither, so it does not advertise them.
            entry: dict[str, Any] = {
                "name": resource.plural,
                "singularName": resource.kind.lower(),
                "kind": resource.kind,
                "namespaced": resource.namespaced,
                "verbs": ["create", "delete", "get", "list", "patch", "update"],
            }
            if resource.short:
                entry["shortNames"] = list(resource.short)
            if resource.categories:
                entry["categories"] = list(resource.categories)
            resources.append(entry)
            for sub in resource.subresources:
                sub_entry: dict[str, Any] = {
                    "name": f"{resource.plural}/{sub}",
                    "singularName": "",
                    "kind": resource.kind,
                    "namespaced": resource.namespaced,
                    "verbs": ["get", "patch", "update"],
                }
                if sub == "eviction":
                    # The group and version of the Eviction kind, as kube-apiserver's discovery names them;
                    # kubectl drain reads them (CheckEvictionSupport) and deletes pods outright without.
                    sub_entry.update(kind="Eviction", group="policy", version="v1", verbs=["create"])
                resources.append(sub_entry)
        return {"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": resources}


def _preference(group_version: str) -> tuple[int, int, int]:
    """v1 before v1beta3 before v1beta1 before v1alpha1 (Kubernetes' version priority)."""
    version = group_version.rsplit("/", 1)[-1]
    major = int("".join(c for c in version[1:].split("beta")[0].split("alpha")[0] if c.isdigit()) or 0)
    stage, number = (2, 0)
    if "beta" in version:
        stage, number = 1, int(version.split("beta")[1] or 0)
    elif "alpha" in version:
        stage, number = 0, int(version.split("alpha")[1] or 0)
    return (-stage, -major, -number)
