"""What the cluster looks like after each step of a plan, computed from the plan's facts and steps.

The gate after a step compares the live cluster with this; on resume, the same values say what a step
that was running when the process died still has to do.
"""

from __future__ import annotations

from collections.abc import Sequence

from upgrader.core.planner.model import Step, StepKind
from upgrader.core.rules.facts import Facts
from upgrader.core.versions import Minor, Version
from upgrader.engine.ports import Expected


def initial(facts: Facts) -> Expected:
    """The state the plan (or a snapshot) started from."""
    apiservers: dict[str, tuple[Version, Minor]] = {m.name: (m.apiserver, m.emulated) for m in facts.control_plane}
    return Expected(apiservers=apiservers, kubelets={n.name: n.kubelet for n in facts.nodes})


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


def each(facts: Facts, steps: Sequence[Step]) -> list[Expected]:
    """The expected state after every step, in order."""
    out: list[Expected] = []
    state = initial(facts)
    for step in steps:
        state = after(state, step)
        out.append(state)
    return out
