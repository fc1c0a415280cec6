"""Builders for planner tests: small facts documents and readable views of plans."""

from __future__ import annotations

from typing import Any

from upgrader.core.planner import core, model
from upgrader.core.rules import catalog as catalog_mod
from upgrader.core.rules import facts as facts_mod
from upgrader.core.versions import parse_target

CATALOG = catalog_mod.load()


def make_facts(
    control_plane: list[tuple[str, str, str | None, str]],
    workers: list[tuple[str, str]] = (),  # type: ignore[assignment]
    *,
    etcd: str | None = "3.5.32",
    etcd_setup: dict[str, Any] | None = None,
    apis: list[dict[str, str]] | None = None,
    runtime: str = "containerd://2.1.4",
    cgroup: str = "v2",
) -> facts_mod.Facts:
    """control_plane: (name, apiserver, emulated or None, kubelet); workers: (name, kubelet)."""
    data: dict[str, Any] = {
        "control_plane": [
            {
                "name": n,
                "apiserver": a,
                "kubelet": k,
                "cgroup": cgroup,
                "container_runtime": runtime,
                **({"emulated": e} if e else {}),
            }
            for n, a, e, k in control_plane
        ],
        "nodes": [{"name": n, "kubelet": k, "cgroup": cgroup, "container_runtime": runtime} for n, k in workers],
        "apis_in_use": apis or [],
    }
    if etcd or etcd_setup:
        data["etcd"] = ({"version": etcd} if etcd else {}) | (etcd_setup or {})
    return facts_mod.from_mapping(data)


def make_plan(facts: facts_mod.Facts, to: str, *, two_step: bool = True, max_unavailable: str = "1") -> model.Plan:
    options = model.PlanOptions(two_step=two_step, max_unavailable=model.MaxUnavailable.parse(max_unavailable))
    return core.plan(facts, parse_target(to), options, CATALOG)


def brief(plan: model.Plan) -> list[str]:
    """One short line per step: 'cp 1.31.13 cp-1,cp-2', 'cp 1.32.9~1.31 ...', 'commit 1.32', 'nodes 1.30.14 w-1'."""
    out = []
    for step in plan.steps:
        nodes = ",".join(step.nodes)
        if step.kind is model.StepKind.SNAPSHOT:
            out.append("snap")
        elif step.kind is model.StepKind.CONTROL_PLANE:
            out.append(f"cp {step.version}{'~' + str(step.emulated) if step.emulated else ''} {nodes}")
        elif step.kind is model.StepKind.EMULATION_COMMIT:
            out.append(f"commit {step.emulated} {nodes}")
        elif step.kind is model.StepKind.ETCD:
            out.append(f"etcd {step.version} {nodes}")
        else:
            out.append(f"nodes {step.version} {nodes}")
    return out
