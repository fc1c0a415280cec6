"""What the cluster looks like after each step of a plan, computed from the plan's facts and steps.

The gate after a step compares the live cluster with this; on resume, the same values say what a step
that was running when the process died still has to do.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from upgrader.core.planner.model import Step, StepKind
from upgrader.core.versions import Minor, Version
from upgrader.engine.ports import Expected


def initial(facts: Mapping[str, Any]) -> Expected:
    """The state the plan started from (its normalised facts)."""
    apiservers = {
        str(m["name"]): (Version.parse(m["apiserver"]), Minor.parse(m["emulated"])) for m in facts["control_plane"]
    }
    kubelets = {str(n["name"]): Version.parse(n["kubelet"]) for n in [*facts["control_plane"], *facts["nodes"]]}
    return Expected(apiservers=apiservers, kubelets=kubelets)


def after(state: Expected, step: Step) -> Expected:
    """The state once ``step`` has succeeded."""
    apiservers = dict(state.apiservers)
    kubelets = dict(state.kubelets)
    assert step.kind is StepKind.SNAPSHOT or step.version is not None
    if step.kind is StepKind.CONTROL_PLANE and step.version is not None:
        emulated = step.emulated or step.version.minor_version
        apiservers.update({node: (step.version, emulated) for node in step.nodes})
    elif step.kind is StepKind.EMULATION_COMMIT and step.version is not None:
        apiservers.update({node: (step.version, step.version.minor_version) for node in step.nodes})
    elif step.kind is StepKind.NODES and step.version is not None:
        kubelets.update({node: step.version for node in step.nodes})
    return Expected(apiservers=apiservers, kubelets=kubelets)


def each(facts: Mapping[str, Any], steps: Sequence[Step]) -> list[Expected]:
    """The expected state after every step, in order."""
    out: list[Expected] = []
    state = initial(facts)
    for step in steps:
        state = after(state, step)
        out.append(state)
    return out
