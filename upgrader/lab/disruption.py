"""What kube-controller-manager's disruption controller computes for a PodDisruptionBudget's status
(``pkg/controller/disruption/disruption.go``: ``getExpectedPodCount``, ``getExpectedScale``,
``countHealthyPods``, ``buildDisruptedPodMap``, ``updatePdbStatus``), as pure functions over objects.

The apiserver's eviction handler trusts this status, never its own count: it refuses while
``observedGeneration`` lags, allows while ``disruptionsAllowed`` > 0 and decrements it with a
compare-and-swap on the budget, so two apiservers cannot both spend the last disruption.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from upgrader.lab.apiserver import labels

DELETION_TIMEOUT = timedelta(minutes=2)  # disruption.go's DeletionTimeout
TIME_FORMAT = "%Y-%m-%dT%H:%M:%SZ"


class NoController(Exception):
    """A selected pod's controller cannot be found: the controller fails safe (disruptionsAllowed 0)."""


def pod_ready(pod: dict[str, Any]) -> bool:
    """apimachinery's IsPodReady, with a pod being deleted never ready."""
    status = pod.get("status") or {}
    if (pod.get("metadata") or {}).get("deletionTimestamp") or status.get("phase") != "Running":
        return False
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in status.get("conditions") or [])


def scaled(value: Any, total: int, *, round_up: bool) -> int:
    """intstr.GetScaledValueFromIntOrPercent."""
    if isinstance(value, str) and value.endswith("%"):
        share = int(value[:-1]) * total
        return -(-share // 100) if round_up else share // 100
    return int(value)


def selected(budget: dict[str, Any], pods: list[dict[str, Any]]) -> list[dict[str, Any]]:
    selector = (budget.get("spec") or {}).get("selector")
    namespace = (budget.get("metadata") or {}).get("namespace")
    return [
        p
        for p in pods
        if (p.get("metadata") or {}).get("namespace") == namespace
        and labels.object_matches(selector, (p.get("metadata") or {}).get("labels") or {})
    ]


def _controller(pod: dict[str, Any]) -> dict[str, Any] | None:
    return next((o for o in (pod.get("metadata") or {}).get("ownerReferences") or [] if o.get("controller")), None)


def expected_scale(pods: list[dict[str, Any]], scale_of: Callable[[str, str, str], int | None]) -> int:
    """The sum of the controllers' replicas (each counted once); ``scale_of(namespace, kind, name)`` is
    None where no such controller exists."""
    scales: dict[tuple[str, str, str], int] = {}
    for pod in pods:
        owner = _controller(pod)
        if owner is None:
            continue  # unmanaged: counted by the integer minAvailable form only
        key = (str(pod["metadata"].get("namespace")), str(owner.get("kind")), str(owner.get("name")))
        if key in scales:
            continue
        found = scale_of(*key)
        if found is None:
            raise NoController(f'found no controllers for pod "{pod["metadata"].get("name")}"')
        scales[key] = found
    return sum(scales.values())


def status(
    budget: dict[str, Any],
    pods: list[dict[str, Any]],
    scale_of: Callable[[str, str, str], int | None],
    now: datetime,
) -> dict[str, Any]:
    """The budget's new status from its pods (already selected) and the controllers' scale."""
    spec = budget.get("spec") or {}
    old = budget.get("status") or {}
    generation = (budget.get("metadata") or {}).get("generation", 1)
    try:
        if spec.get("maxUnavailable") is not None:
            expected = expected_scale(pods, scale_of)
            desired = max(0, expected - scaled(spec["maxUnavailable"], expected, round_up=True))
        elif isinstance(spec.get("minAvailable"), str):
            expected = expected_scale(pods, scale_of)
            desired = scaled(spec["minAvailable"], expected, round_up=True)
        else:
            expected, desired = len(pods), int(spec.get("minAvailable") or 0)
    except NoController as exc:
        failed = _condition(old, False, str(exc), generation, now)
        return {**old, "disruptionsAllowed": 0, "observedGeneration": generation, "conditions": failed}
    disrupted = _disrupted(pods, old.get("disruptedPods") or {}, now)
    healthy = sum(1 for p in pods if p["metadata"].get("name") not in disrupted and pod_ready(p))
    allowed = healthy - desired
    if expected <= 0 or allowed <= 0:
        allowed = 0
    out: dict[str, Any] = {
        "currentHealthy": healthy,
        "desiredHealthy": desired,
        "expectedPods": expected,
        "disruptionsAllowed": allowed,
        "observedGeneration": generation,
        "conditions": _condition(old, allowed > 0, "", generation, now),
    }
    if disrupted:
        out["disruptedPods"] = disrupted
    return out


def _disrupted(pods: list[dict[str, Any]], recorded: dict[str, str], now: datetime) -> dict[str, str]:
    """buildDisruptedPodMap: keep a pod the eviction handler announced while it still exists, is not yet
    being deleted, and its two minutes have not passed.

    A real controller sees every evicted pod terminating (its deletionTimestamp set for the grace
    period) and drops it then, before a StatefulSet can recreate the name. The lab deletes at once, so
    a pod created at or after the announcement is that new pod, and its name is dropped too."""
    kept = {}
    for pod in pods:
        name = pod["metadata"].get("name")
        if pod["metadata"].get("deletionTimestamp") or name not in recorded:
            continue
        if str(pod["metadata"].get("creationTimestamp") or "") >= recorded[name]:
            continue
        try:
            when = datetime.strptime(recorded[name], TIME_FORMAT).replace(tzinfo=UTC)
        except (TypeError, ValueError):
            continue
        if when + DELETION_TIMEOUT > now:
            kept[name] = recorded[name]
    return kept


def _condition(
    old: dict[str, Any], allowed: bool, message: str, generation: int, now: datetime
) -> list[dict[str, Any]]:
    """The DisruptionAllowed condition; its lastTransitionTime moves only when its status does
    (apimachinery's SetStatusCondition)."""
    state = "True" if allowed else "False"
    conditions: list[dict[str, Any]] = old.get("conditions") or []
    before = next((c for c in conditions if c.get("type") == "DisruptionAllowed"), {})
    return [
        {
            "type": "DisruptionAllowed",
            "status": state,
            "reason": "SufficientPods" if allowed else ("SyncFailed" if message else "InsufficientPods"),
            "message": message,
            "observedGeneration": generation,
            "lastTransitionTime": before.get("lastTransitionTime") if before.get("status") == state else stamp(now),
        }
    ]


def stamp(now: datetime) -> str:
    return now.strftime(TIME_FORMAT)
