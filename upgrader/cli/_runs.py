"""A run as one JSON-ready document, the same for ``apply -o json``, ``status`` and ``history``."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from upgrader.state import records


def as_dict(run: records.RunRecord) -> dict[str, Any]:
    from upgrader.engine import driver

    return {
        "id": run.id,
        "kind": run.kind.value,
        "plan": run.plan_id,
        "status": run.status.value,
        "created_at": run.created_at,
        "started_at": run.started_at,
        "finished_at": run.finished_at,
        "host": run.host,
        "pid": run.pid,
        "stopped_reason": run.stopped_reason,
        "error": run.error,
        "cordoned_by_upgrader": driver.cordoned_by_us(run),
        "steps": [
            {
                "step": s.position + 1,
                "kind": s.kind,
                "version": s.spec.get("version"),
                "nodes": s.spec.get("nodes", []),
                "status": s.status.value,
                "attempts": s.attempts,
                "seconds": s.seconds,
                "error": s.error,
            }
            for s in run.steps
        ],
    }
