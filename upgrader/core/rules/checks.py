"""Checks for one upgrade: what stops it (blockers) and what deserves a look (warnings).

Each check is a pure function of the facts, the catalog and the upgrade's path; it returns
findings and decides nothing. The planner gathers them into the plan.
"""

from __future__ import annotations

import enum
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass

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


class EtcdMover(enum.StrEnum):
    """Who moves etcd at a control-plane hop."""

    KUBEADM = "kubeadm"  # to its version for the new minor, never down (staticpods.go)
    KEPT_BY_IMAGE_TAG = "kept by etcd.local.imageTag"  # kubeadm writes the override tag (images.GetEtcdImageTag)
    EXTERNAL = "external: not kubeadm's"  # kubeadm never touches external etcd (performEtcdStaticPodUpgrade)


@dataclass(frozen=True)
class EtcdRoute:
    """etcd's way through the control-plane hops: its version after each hop, who moves it (the same at
    every hop: it follows from how etcd runs), and the etcd steps upgrader must run first: ``before[i]``
    are the versions every member must reach, in order, before hop ``i`` (a minor's minimum patch for
    leaving it, one minor at a time)."""

    after: tuple[Version | None, ...]
    mover: EtcdMover
    before: Mapping[int, tuple[Version, ...]]
    findings: tuple[Finding, ...]


def _etcd_moves(
    current: Version, new: Version, catalog: catalog_mod.Catalog
) -> tuple[tuple[Version, ...], Version, Version | None]:
    """The etcd steps that take etcd from ``current`` to where kubeadm can move it to ``new``: etcd leaves
    a minor only from that minor's minimum patch, and one minor at a time. So, per minor below ``new``'s:
    up to its minimum patch, then (short of ``new``'s minor) into the next minor at that minor's own
    minimum patch. Returns the moves, where etcd is after them, and the version a minor would be skipped
    from when the catalog knows no release to land on (None when the route exists)."""
    moves: list[Version] = []
    while new.major == current.major and new.minor > current.minor:
        need = catalog.etcd_min_patch_before_next_minor.get(current.minor_version)
        if need is not None and current < need:
            moves.append(need)
            current = need
        if current.minor + 1 == new.minor:
            break
        landing = catalog.etcd_min_patch_before_next_minor.get(Minor(current.major, current.minor + 1))
        if landing is None:
            return tuple(moves), current, current
        moves.append(landing)
        current = landing
    return tuple(moves), current, None


def _skips_minor(hop: Minor, skipped: Version, said: str) -> Finding:
    """The blocker for a move from ``skipped`` that would skip an etcd minor (``said`` says which move)."""
    between = f"{skipped.major}.{skipped.minor + 1}"
    return Finding(
        Code.ETCD_SKIPS_MINOR,
        Severity.BLOCKER,
        f"{said}, and the catalog knows no {between} release to move it to first",
        f"upgrade etcd one minor at a time to {between}.x before that hop",
        extra=(("hop", str(hop)),),
    )


def etcd_route(
    start: Version | None, hops: list[Minor], catalog: catalog_mod.Catalog, setup: facts_mod.EtcdSetup
) -> EtcdRoute:
    """Where etcd goes across ``hops``, who moves it, and which etcd steps and findings that needs.

    kubeadm moves stacked etcd to its own version for each new minor and never down. etcd must be at
    the catalog's minimum patch of its minor before it leaves that minor (etcd's upgrade guides), and
    kubeadm does not check it: upgrader plans an etcd step to that patch before the hop instead. An
    ``etcd.local.imageTag`` override makes kubeadm keep the override's tag at every hop: then etcd stays
    where it is and no hop needs an etcd step. kubeadm never moves external etcd either: there upgrader
    moves it itself, on its hosts, where the catalog says the hop needs a newer one (``_external_route``)."""
    if not hops:
        return EtcdRoute((), EtcdMover.KUBEADM, {}, ())
    if setup.external:
        return _external_route(start, hops, catalog, setup)
    if setup.image_tag is not None:
        mover = EtcdMover.KEPT_BY_IMAGE_TAG
        kept: list[Finding] = []
        if mover is EtcdMover.KEPT_BY_IMAGE_TAG:
            kept.append(
                Finding(
                    Code.ETCD_IMAGE_TAG_OVERRIDE,
                    Severity.WARNING,
                    f"kubeadm-config sets etcd.local.imageTag {setup.image_tag}: kubeadm writes that tag at every hop, "
                    "so etcd stays where it is for this whole plan",
                    "to let kubeadm move etcd at each hop, remove etcd.local.imageTag from the kubeadm-config "
                    "ConfigMap (kube-system) and plan again",
                )
            )
        return EtcdRoute(tuple(start for _ in hops), mover, {}, tuple(kept))
    if start is None:
        return EtcdRoute(
            tuple(None for _ in hops),
            EtcdMover.KUBEADM,
            {},
            (
                Finding(
                    Code.ETCD_VERSION_UNKNOWN,
                    Severity.BLOCKER,
                    "the facts do not say which etcd version runs, so the etcd upgrade path cannot be checked",
                    "add etcd.version to the facts (etcdctl version, or the etcd image tag in etcd.yaml)",
                ),
            ),
        )
    out: list[Finding] = []
    after: list[Version | None] = []
    before: dict[int, tuple[Version, ...]] = {}
    current = start
    for index, minor in enumerate(hops):
        new = max(current, catalog.entry(minor).kubeadm_etcd)
        was = current
        moves, current, skipped = _etcd_moves(current, new, catalog)
        if skipped is not None:
            said = f"the control-plane hop to {minor} would move etcd from {skipped} to {new}, skipping a minor"
            out.append(_skips_minor(minor, skipped, said))
        if moves:
            before[index] = moves
        if setup.v2_enabled and new.major == 3 and new.minor >= 6 > was.minor:
            out.append(
                Finding(
                    Code.ETCD_V2_ENABLED,
                    Severity.BLOCKER,
                    f"the hop to {minor} moves etcd to {new}, which refuses --enable-v2, set on "
                    f"{findings.names_list(setup.v2_enabled)}",
                    "check each member's v2 data with `etcdutl check v2store` (etcd 3.5.20+), then remove "
                    "--enable-v2 from etcd.yaml (etcd's 3.6 upgrade guide)",
                    nodes=setup.v2_enabled,
                    extra=(("hop", str(minor)),),
                )
            )
        after.append(new)
        current = new
    return EtcdRoute(tuple(after), EtcdMover.KUBEADM, before, tuple(out))


def _external_route(
    start: Version | None, hops: list[Minor], catalog: catalog_mod.Catalog, setup: facts_mod.EtcdSetup
) -> EtcdRoute:
    """External etcd, which kubeadm never moves (`kubeadm upgrade plan` only says it "should be upgraded
    manually before" the hop): before a hop to a minor for which the catalog names the etcd its reference
    installer runs there (Kubespray's ``etcd_supported_versions``), an etcd below that version is moved
    to it on the etcd hosts, one minor at a time and leaving each minor from its minimum patch, as for
    stacked etcd. Never down; where the catalog names none, etcd stays where it is. Where the facts
    cannot say what to move (no version) or where (no hosts), etcd stays too, with a warning: kubeadm
    runs the hop either way, so nothing is blocked that kubeadm would run."""
    out: list[Finding] = []
    after: list[Version | None] = []
    before: dict[int, tuple[Version, ...]] = {}
    current = start
    for index, minor in enumerate(hops):
        want = catalog.external_etcd.get(minor)
        if want is not None and current is None:
            out.append(
                Finding(
                    Code.ETCD_VERSION_UNKNOWN,
                    Severity.WARNING,
                    f"the facts do not say which version the external etcd runs; the hop to {minor} should find it "
                    f"at {want} or newer (what Kubespray runs with {minor}), and this plan does not move it",
                    "add etcd.version to the facts (etcdctl version on an etcd host) and plan again",
                    extra=(("hop", str(minor)),),
                )
            )
        elif want is not None and current is not None and current < want:
            moves, reached, skipped = _etcd_moves(current, want, catalog)
            if skipped is not None:
                said = (
                    f"the hop to {minor} needs the external etcd at {want}, but moving it from {skipped} would skip "
                    "a minor"
                )
                out.append(_skips_minor(minor, skipped, said))
            elif not setup.hosts:
                out.append(
                    Finding(
                        Code.ETCD_HOSTS_UNKNOWN,
                        Severity.WARNING,
                        f"the external etcd ({current}) should be at {want} before the hop to {minor} (what Kubespray "
                        "runs with it; kubeadm upgrade plan asks for its own etcd there), but the facts name no etcd "
                        "host to move it on, so this plan leaves it where it is",
                        "list the etcd hosts in the inventory's etcd group (Kubespray's) and collect the facts again, "
                        f"or move etcd to {want} yourself before that hop",
                        extra=(("hop", str(minor)),),
                    )
                )
            else:
                before[index] = (*moves, want) if reached < want else moves
                current = want
        after.append(current)
    return EtcdRoute(tuple(after), EtcdMover.EXTERNAL, before, tuple(out))
