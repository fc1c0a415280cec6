"""The version-skew policy, checked on one state of a cluster.

Conservative by design: kubelet skew is counted from the apiserver *binary* versions, not from the
wider range emulation allows, and a kubelet must be no newer than the oldest apiserver binary nor
than the oldest emulated version. The planner checks every state it passes through with this.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from upgrader.core.rules import catalog as catalog_mod
from upgrader.core.rules import findings
from upgrader.core.rules.findings import Code, Finding, Severity
from upgrader.core.versions import Minor, Version


@dataclass(frozen=True)
class ClusterState:
    """Versions only: each apiserver's binary and emulated minor, each node's kubelet."""

    apiservers: Mapping[str, Version]
    emulated: Mapping[str, Minor]
    kubelets: Mapping[str, Version]

    @property
    def newest_apiserver(self) -> Version:
        return max(self.apiservers.values())

    @property
    def oldest_apiserver(self) -> Version:
        return min(self.apiservers.values())

    @property
    def oldest_emulated(self) -> Minor:
        return min(self.emulated.values())

    def kubelet_ceiling(self) -> Minor:
        """The newest kubelet minor allowed now: no newer than any apiserver binary or emulated version."""
        return min(self.oldest_apiserver.minor_version, self.oldest_emulated)


def kubelet_floor(newest_apiserver: Minor, catalog: catalog_mod.Catalog) -> Minor:
    """The oldest kubelet minor allowed with ``newest_apiserver``: the skew policy's (N-3 from 1.28, N-2
    before) or, when stricter, what that minor's ``kubeadm upgrade apply`` accepts (N-1 through 1.28:
    kubeadm refuses older kubelets unless forced, and upgrader never forces it)."""
    entry = catalog.entry(newest_apiserver)
    return newest_apiserver - min(entry.kubelet_max_older, entry.kubeadm_kubelet_max_older)


def _floor_reason(newest: Minor, catalog: catalog_mod.Catalog) -> str:
    entry = catalog.entry(newest)
    if entry.kubeadm_kubelet_max_older < entry.kubelet_max_older:
        return f"kubeadm {newest} refuses older kubelets (its limit is {entry.kubeadm_kubelet_max_older} minor)"
    return f"the oldest allowed with a {newest} apiserver"


def violations(state: ClusterState, catalog: catalog_mod.Catalog) -> list[Finding]:
    out: list[Finding] = []
    newest, oldest = state.newest_apiserver.minor_version, state.oldest_apiserver.minor_version
    spread = oldest.distance(newest)
    if spread > 1:
        behind = tuple(n for n, v in state.apiservers.items() if v.minor_version < newest - 1)
        out.append(
            Finding(
                Code.SKEW_APISERVERS,
                Severity.BLOCKER,
                f"kube-apiservers are {spread} minors apart ({oldest} to {newest}); at most 1 is allowed: "
                f"{findings.names_list(behind)}",
                "bring every control-plane node to within one minor of the newest by hand (kubeadm upgrade node)",
                nodes=behind,
            )
        )
    out_of_range = tuple(
        name
        for name, emulated in state.emulated.items()
        if emulated != state.apiservers[name].minor_version
        and not catalog.entry(state.apiservers[name].minor_version).can_emulate(emulated)
    )
    if out_of_range:
        out.append(
            Finding(
                Code.EMULATION_OUT_OF_RANGE,
                Severity.BLOCKER,
                f"--emulated-version outside what the binary supports on {findings.names_list(out_of_range)}",
                "set --emulated-version within the binary's range (binary minus 3, never below 1.31)",
                nodes=out_of_range,
            )
        )
    kubelets = {name: version.minor_version for name, version in state.kubelets.items()}
    floor = kubelet_floor(newest, catalog)
    too_old = tuple(n for n, minor in kubelets.items() if minor < floor)
    if too_old:
        out.append(
            Finding(
                Code.SKEW_KUBELET_TOO_OLD,
                Severity.BLOCKER,
                f"kubelets older than {floor} ({_floor_reason(newest, catalog)}): {findings.names_list(too_old)}",
                f"upgrade those kubelets to {oldest} first (e.g. a plan with --to {state.oldest_apiserver})",
                nodes=too_old,
            )
        )
    newer = tuple(n for n, minor in kubelets.items() if minor > oldest)
    if newer:
        out.append(
            Finding(
                Code.KUBELET_NEWER_THAN_APISERVER,
                Severity.BLOCKER,
                f"kubelets newer than the oldest kube-apiserver ({oldest}): {findings.names_list(newer)}",
                "upgrade the control plane by hand to at least the kubelets' minor, or downgrade those kubelets",
                nodes=newer,
            )
        )
    emulated_floor = state.oldest_emulated
    newer_than_emulated = tuple(n for n, minor in kubelets.items() if emulated_floor < minor <= oldest)
    if newer_than_emulated:
        out.append(
            Finding(
                Code.KUBELET_NEWER_THAN_EMULATED,
                Severity.BLOCKER,
                f"kubelets newer than the emulated version {emulated_floor}: "
                f"{findings.names_list(newer_than_emulated)}",
                "commit the emulated version (or downgrade those kubelets) before anything else",
                nodes=newer_than_emulated,
            )
        )
    return out
