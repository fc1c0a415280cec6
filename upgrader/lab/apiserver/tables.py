"""Server-side printing: the ``meta.k8s.io/v1`` Table a client asks for with
``Accept: application/json;as=Table;v=v1;g=meta.k8s.io`` (``kubectl get`` does), with the columns of
kube-apiserver's printers (``pkg/printers/internalversion/printers.go``) for the kinds the lab serves
and its default (Name, Created At) for the rest. Columns of priority 1 are the ones ``-o wide`` adds.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

Row = Callable[[dict[str, Any]], list[Any]]


def wants_table(accept: str) -> bool:
    return any("as=Table" in part and "g=meta.k8s.io" in part for part in accept.split(","))


def age(created: str | None, now: datetime | None = None) -> str:
    """apimachinery's duration.HumanDuration, to the precision kubectl shows."""
    if not created:
        return "<unknown>"
    try:
        then = datetime.strptime(created, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    except ValueError:
        return "<invalid>"
    seconds = max(0, int(((now or datetime.now(UTC)) - then).total_seconds()))
    minutes, hours = seconds // 60, seconds // 3600
    if seconds < 120:
        text = f"{seconds}s"
    elif minutes < 10:
        text = f"{minutes}m{seconds % 60}s" if seconds % 60 else f"{minutes}m"
    elif minutes < 180:
        text = f"{minutes}m"
    else:
        text = f"{hours}h" if hours < 48 else f"{hours // 24}d"
    return text


def _meta(obj: dict[str, Any]) -> dict[str, Any]:
    return obj.get("metadata") or {}


def _node_status(node: dict[str, Any]) -> str:
    conditions = (node.get("status") or {}).get("conditions") or []
    ready = next((c for c in conditions if c.get("type") == "Ready"), None)
    state = "Ready" if ready and ready.get("status") == "True" else "NotReady" if ready else "Unknown"
    return state + (",SchedulingDisabled" if (node.get("spec") or {}).get("unschedulable") else "")


def _roles(node: dict[str, Any]) -> str:
    prefix = "node-role.kubernetes.io/"
    roles = sorted(k[len(prefix) :] for k in (_meta(node).get("labels") or {}) if k.startswith(prefix))
    return ",".join(r for r in roles if r) or "<none>"


def _address(node: dict[str, Any], kind: str) -> str:
    addresses = (node.get("status") or {}).get("addresses") or []
    return next((a.get("address") for a in addresses if a.get("type") == kind), "<none>")


def _node_info(node: dict[str, Any], field: str) -> str:
    return str(((node.get("status") or {}).get("nodeInfo") or {}).get(field) or "<unknown>")


def _pod_ready(pod: dict[str, Any]) -> str:
    containers = (pod.get("spec") or {}).get("containers") or []
    ready = (pod.get("status") or {}).get("containerStatuses")
    if ready is None:  # the lab's kubelet reports the pod's Ready condition, not each container's
        conditions = (pod.get("status") or {}).get("conditions") or []
        is_ready = any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)
        return f"{len(containers) if is_ready else 0}/{len(containers)}"
    return f"{sum(1 for c in ready if c.get('ready'))}/{len(containers)}"


def _pod_status(pod: dict[str, Any]) -> str:
    if _meta(pod).get("deletionTimestamp"):
        return "Terminating"
    return str((pod.get("status") or {}).get("phase") or "Pending")


def _spec(obj: dict[str, Any], field: str, default: Any = "<none>") -> Any:
    value = (obj.get("spec") or {}).get(field)
    return default if value is None else value


def _status(obj: dict[str, Any], field: str) -> Any:
    return (obj.get("status") or {}).get(field, 0)


def _node_selector(daemonset: dict[str, Any]) -> str:
    template = ((daemonset.get("spec") or {}).get("template") or {}).get("spec") or {}
    return ",".join(f"{k}={v}" for k, v in (template.get("nodeSelector") or {}).items()) or "<none>"


NAME = {"name": "Name", "type": "string", "format": "name", "priority": 0}
AGE = {"name": "Age", "type": "string", "format": "", "priority": 0}


def _column(name: str, priority: int = 0, kind: str = "string") -> dict[str, Any]:
    return {"name": name, "type": kind, "format": "", "priority": priority}


# kind -> (columns after Name, a function giving their cells)
PRINTERS: dict[str, tuple[list[dict[str, Any]], Row]] = {
    "Node": (
        [
            _column("Status"),
            _column("Roles"),
            AGE,
            _column("Version"),
            _column("Internal-IP", 1),
            _column("External-IP", 1),
            _column("OS-Image", 1),
            _column("Kernel-Version", 1),
            _column("Container-Runtime", 1),
        ],
        lambda n: [
            _node_status(n),
            _roles(n),
            age(_meta(n).get("creationTimestamp")),
            _node_info(n, "kubeletVersion"),
            _address(n, "InternalIP"),
            _address(n, "ExternalIP"),
            _node_info(n, "osImage"),
            _node_info(n, "kernelVersion"),
            _node_info(n, "containerRuntimeVersion"),
        ],
    ),
    "Pod": (
        [
            _column("Ready"),
            _column("Status"),
            _column("Restarts", kind="string"),
            AGE,
            _column("IP", 1),
            _column("Node", 1),
            _column("Nominated Node", 1),
            _column("Readiness Gates", 1),
        ],
        lambda p: [
            _pod_ready(p),
            _pod_status(p),
            "0",
            age(_meta(p).get("creationTimestamp")),
            (p.get("status") or {}).get("podIP") or "<none>",
            _spec(p, "nodeName"),
            "<none>",
            "<none>",
        ],
    ),
    "Namespace": (
        [_column("Status"), AGE],
        lambda ns: [(ns.get("status") or {}).get("phase", "Active"), age(_meta(ns).get("creationTimestamp"))],
    ),
    "ConfigMap": (
        [_column("Data", kind="integer"), AGE],
        lambda cm: [
            len(cm.get("data") or {}) + len(cm.get("binaryData") or {}),
            age(_meta(cm).get("creationTimestamp")),
        ],
    ),
    "PodDisruptionBudget": (
        [_column("Min Available"), _column("Max Unavailable"), _column("Allowed Disruptions", kind="integer"), AGE],
        lambda b: [
            str(_spec(b, "minAvailable", "N/A")),
            str(_spec(b, "maxUnavailable", "N/A")),
            _status(b, "disruptionsAllowed"),
            age(_meta(b).get("creationTimestamp")),
        ],
    ),
    "DaemonSet": (
        [_column(c, kind="integer") for c in ("Desired", "Current", "Ready", "Up-to-date", "Available")]
        + [_column("Node Selector"), AGE],
        lambda d: [
            _status(d, "desiredNumberScheduled"),
            _status(d, "currentNumberScheduled"),
            _status(d, "numberReady"),
            _status(d, "updatedNumberScheduled"),
            _status(d, "numberAvailable"),
            _node_selector(d),
            age(_meta(d).get("creationTimestamp")),
        ],
    ),
    "ReplicaSet": (
        [_column("Desired", kind="integer"), _column("Current", kind="integer"), _column("Ready", kind="integer"), AGE],
        lambda r: [
            _spec(r, "replicas", 1),
            _status(r, "replicas"),
            _status(r, "readyReplicas"),
            age(_meta(r).get("creationTimestamp")),
        ],
    ),
    "StatefulSet": (
        [_column("Ready"), AGE],
        lambda s: [f"{_status(s, 'readyReplicas')}/{_spec(s, 'replicas', 1)}", age(_meta(s).get("creationTimestamp"))],
    ),
}

DEFAULT: tuple[list[dict[str, Any]], Row] = (
    [{"name": "Created At", "type": "date", "format": "", "priority": 0}],
    lambda o: [_meta(o).get("creationTimestamp")],
)


def table(kind: str, items: list[dict[str, Any]], resource_version: str, include: str) -> dict[str, Any]:
    """``include`` is the request's ``includeObject``: ``Metadata`` (the default), ``Object`` or ``None``."""
    columns, cells = PRINTERS.get(kind, DEFAULT)
    rows = []
    for item in items:
        row: dict[str, Any] = {"cells": [_meta(item).get("name"), *cells(item)]}
        if include == "Object":
            row["object"] = item
        elif include != "None":
            row["object"] = {"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": _meta(item)}
        rows.append(row)
    return {
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": {"resourceVersion": resource_version},
        "columnDefinitions": [
            {**NAME, "description": "Name must be unique within a namespace."},
            *({**c, "description": ""} for c in columns),
        ],
        "rows": rows,
    }
