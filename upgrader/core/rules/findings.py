"""Findings: what a check reports. A blocker stops a plan from being executed; a warning does not.

Each finding has a stable code (automation matches on it), a one-line message that names the nodes
or resources, and what to do about it.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any


class Severity(enum.StrEnum):
    BLOCKER = "blocker"
    WARNING = "warning"


class Code(enum.StrEnum):
    SKEW_APISERVERS = "SKEW_APISERVERS"
    SKEW_KUBELET_TOO_OLD = "SKEW_KUBELET_TOO_OLD"
    KUBELET_NEWER_THAN_APISERVER = "KUBELET_NEWER_THAN_APISERVER"
    KUBELET_NEWER_THAN_EMULATED = "KUBELET_NEWER_THAN_EMULATED"
    EMULATION_OUT_OF_RANGE = "EMULATION_OUT_OF_RANGE"
    API_REMOVED = "API_REMOVED"
    CGROUP_V1 = "CGROUP_V1"
    RUNTIME_BELOW_MINIMUM = "RUNTIME_BELOW_MINIMUM"
    RUNTIME_BELOW_RECOMMENDED = "RUNTIME_BELOW_RECOMMENDED"
    RUNTIME_UNKNOWN = "RUNTIME_UNKNOWN"
    ETCD_SKIPS_MINOR = "ETCD_SKIPS_MINOR"
    ETCD_BELOW_MIN_PATCH = "ETCD_BELOW_MIN_PATCH"  # no longer raised: the plan gets an etcd step instead
    ETCD_IMAGE_TAG_OVERRIDE = "ETCD_IMAGE_TAG_OVERRIDE"
    ETCD_V2_ENABLED = "ETCD_V2_ENABLED"
    ETCD_VERSION_UNKNOWN = "ETCD_VERSION_UNKNOWN"
    ETCD_HOSTS_UNKNOWN = "ETCD_HOSTS_UNKNOWN"
    CATALOG_PATCHES_INCOMPLETE = "CATALOG_PATCHES_INCOMPLETE"


@dataclass(frozen=True)
class Finding:
    code: Code
    severity: Severity
    message: str
    remedy: str
    nodes: tuple[str, ...] = ()
    resources: tuple[str, ...] = ()
    extra: tuple[tuple[str, str], ...] = field(default=())

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"code": self.code.value, "message": self.message, "remedy": self.remedy}
        if self.nodes:
            out["nodes"] = list(self.nodes)
        if self.resources:
            out["resources"] = list(self.resources)
        out.update(dict(self.extra))
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any], severity: Severity) -> Finding:
        """The inverse of ``as_dict`` (a saved plan's findings)."""
        known = {"code", "message", "remedy", "nodes", "resources"}
        return cls(
            code=Code(data["code"]),
            severity=severity,
            message=str(data["message"]),
            remedy=str(data["remedy"]),
            nodes=tuple(data.get("nodes", ())),
            resources=tuple(data.get("resources", ())),
            extra=tuple((k, str(v)) for k, v in data.items() if k not in known),
        )


def names_list(items: tuple[str, ...] | list[str], limit: int = 10) -> str:
    """``a, b, c`` or ``a, b, ... and 40 more`` for long lists, so a message stays one line."""
    shown = ", ".join(items[:limit])
    return shown if len(items) <= limit else f"{shown} and {len(items) - limit} more"
