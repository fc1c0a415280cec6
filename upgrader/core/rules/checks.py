"""Checks for one upgrade: what stops it (blockers) and what deserves a look (warnings).

Each check is a pure function of the facts, the catalog and the upgrade's path; it returns
findings and decides nothing. The planner gathers them into the plan.
"""

from __future__ import annotations

from collections import defaultdict

from upgrader.core.rules import catalog as catalog_mod
from upgrader.core.rules import facts as facts_mod
from upgrader.core.rules import findings
from upgrader.core.rules.findings import Code, Finding, Severity
from upgrader.core.versions import Minor, Version


def removed_apis(facts: facts_mod.Facts, *, after: Minor, target: Minor, catalog: catalog_mod.Catalog) -> list[Finding]:
    """APIs in use that a release in (after, target] stops serving."""
    in_use: dict[tuple[str, str], list[str]] = defaultdict(list)
    for api in facts.apis_in_use:
        in_use[(api.group, api.version)].append(api.resource)
    out: list[Finding] = []
    for removed in catalog.removals_crossed(after, target):
        resources = in_use.get((removed.group, removed.version))
        if not resources:
            continue
        listed = tuple(f"{removed.group_version} {r}" for r in sorted(set(resources)))
        out.append(
            Finding(
                Code.API_REMOVED,
                Severity.BLOCKER,
                f"{findings.names_list(listed)} in use; {removed.removed_in} stops serving {removed.group_version}",
                f"migrate clients and stored manifests to {removed.use_instead} before upgrading past "
                f"{removed.removed_in - 1}",
                resources=listed,
                extra=(("removed_in", str(removed.removed_in)),),
            )
        )
    return out


def cgroup_v1(facts: facts_mod.Facts, *, target: Minor, catalog: catalog_mod.Catalog) -> list[Finding]:
    if not catalog.entry(target).refuses_cgroup_v1:
        return []
    out: list[Finding] = []
    v1 = tuple(n.name for n in facts.nodes if n.cgroup is facts_mod.Cgroup.V1)
    if v1:
        out.append(
            Finding(
                Code.CGROUP_V1,
                Severity.BLOCKER,
                f"nodes on cgroup v1, which the {target} kubelet refuses by default: {findings.names_list(v1)}",
                "move those nodes to cgroup v2, or set failCgroupV1: false in ConfigMap kube-system/kubelet-config "
                "before upgrading (kubeadm's SystemVerification preflight then needs to be told to ignore it)",
                nodes=v1,
            )
        )
    unknown = tuple(n.name for n in facts.nodes if n.cgroup is None)
    if unknown:
        out.append(
            Finding(
                Code.CGROUP_V1,
                Severity.WARNING,
                f"cgroup version unknown for {findings.names_list(unknown)}; the {target} kubelet refuses cgroup v1",
                "check `stat -fc %T /sys/fs/cgroup` on those nodes (cgroup2fs means v2)",
                nodes=unknown,
            )
        )
    return out


def _below(version: Version, floors: tuple[Version, ...]) -> Version | None:
    """The floor ``version`` is under, if any: same series compares patches; older series fail."""
    series = {f.minor_version: f for f in floors}
    same = series.get(version.minor_version)
    if same is not None:
        return same if version < same else None
    oldest = min(floors)
    return oldest if version.minor_version < oldest.minor_version else None


def container_runtime(facts: facts_mod.Facts, *, target: Minor, catalog: catalog_mod.Catalog) -> list[Finding]:
    policy = catalog.entry(target).containerd
    below_min: dict[str, list[str]] = defaultdict(list)
    below_rec: dict[Version, list[str]] = defaultdict(list)
    unknown: list[str] = []
    for node in facts.nodes:
        runtime = node.runtime
        if runtime is None or runtime.name != "containerd" or runtime.version is None:
            unknown.append(node.name)
            continue
        if policy.minimum is not None and (floor := _below(runtime.version, policy.minimum)) is not None:
            below_min[f"{runtime.version} (needs {floor.major}.{floor.minor}.{floor.patch}+)"].append(node.name)
        elif policy.recommended and (floor := _below(runtime.version, policy.recommended)) is not None:
            below_rec[runtime.version].append(node.name)
    out: list[Finding] = []
    for detail, nodes in sorted(below_min.items()):
        out.append(
            Finding(
                Code.RUNTIME_BELOW_MINIMUM,
                Severity.BLOCKER,
                f"containerd {detail} is below what Kubernetes {target} requires on {findings.names_list(nodes)}",
                f"upgrade containerd on those nodes first; {target} supports containerd "
                + ", ".join(f"{v}+" for v in policy.minimum or ()),
                nodes=tuple(nodes),
            )
        )
    for version, nodes in sorted(below_rec.items()):
        out.append(
            Finding(
                Code.RUNTIME_BELOW_RECOMMENDED,
                Severity.WARNING,
                f"containerd {version} is older than what Kubernetes {target} is tested with on "
                f"{findings.names_list(nodes)}",
                "consider containerd "
                + ", ".join(f"{v}+" for v in policy.recommended)
                + (f" ({policy.note})" if policy.note and version.major < 2 else ""),
                nodes=tuple(nodes),
            )
        )
    if unknown:
        out.append(
            Finding(
                Code.RUNTIME_UNKNOWN,
                Severity.WARNING,
                f"container runtime not known to the catalog (it covers containerd) on {findings.names_list(unknown)}",
                f"check that runtime's support for Kubernetes {target} yourself",
                nodes=tuple(unknown),
            )
        )
    return out


def etcd_path(
    start: Version | None, hops: list[Minor], catalog: catalog_mod.Catalog
) -> tuple[list[Version | None], list[Finding]]:
    """etcd's version after each control-plane hop (kubeadm never downgrades it) and what is wrong."""
    if not hops:
        return [], []
    if start is None:
        return [None] * len(hops), [
            Finding(
                Code.ETCD_VERSION_UNKNOWN,
                Severity.BLOCKER,
                "the facts do not say which etcd version runs, so the etcd upgrade path cannot be checked",
                "add etcd.version to the facts (etcdctl version, or the etcd image tag in etcd.yaml)",
            )
        ]
    out: list[Finding] = []
    after: list[Version | None] = []
    current = start
    for minor in hops:
        new = max(current, catalog.entry(minor).kubeadm_etcd)
        if new.major == current.major and new.minor - current.minor > 1:
            out.append(
                Finding(
                    Code.ETCD_SKIPS_MINOR,
                    Severity.BLOCKER,
                    f"the control-plane hop to {minor} would move etcd from {current} to {new}, skipping a minor",
                    f"upgrade etcd one minor at a time to {current.major}.{current.minor + 1}.x before that hop",
                    extra=(("hop", str(minor)),),
                )
            )
        elif new.minor == current.minor + 1:
            need = catalog.etcd_min_patch_before_next_minor.get(current.minor_version)
            if need is not None and current < need:
                out.append(
                    Finding(
                        Code.ETCD_BELOW_MIN_PATCH,
                        Severity.BLOCKER,
                        f"the control-plane hop to {minor} moves etcd from {current} to {new}, but etcd must be at "
                        f"{need} or newer before leaving {current.major}.{current.minor}",
                        f"upgrade etcd to {need}+ on every member before the hop to {minor} "
                        "(etcd's upgrade guide; kubeadm does not check this)",
                        extra=(("hop", str(minor)),),
                    )
                )
        after.append(new)
        current = new
    return after, out
