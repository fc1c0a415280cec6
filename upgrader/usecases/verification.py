"""``upgrader verify``: the apply gates on their own, and the proof that a cluster matches a snapshot.

Without a reference the gate runs on the cluster as it is: every apiserver answers ``/readyz``, every
node is Ready, etcd answers on every member with a leader, and the version-skew policy holds. With
``--expect VERSION`` every apiserver must serve VERSION (emulating its own minor) and every kubelet
run it. With ``--against SNAPSHOT`` the snapshot is verified first (a damaged one is no reference),
then the cluster is compared with it: every apiserver's version and emulated version and every
kubelet's version with the snapshot's facts (a kubelet newer than the snapshot's but not newer than
the snapshot's control plane is allowed, and named); each control-plane node's static pod manifests with the
archive, file by file (sha256); etcd's member count; etcd's revision, which may be higher than the
snapshot's (a restore bumps it) but never lower. The key count is reported beside the snapshot's: a
running cluster writes (leases, events), so it is information, not a check.

Each check is one line naming what differs; the verdict holds only when every check does. Nothing
is changed.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from upgrader import errors
from upgrader.cluster import gates, live_facts, session
from upgrader.core.rules import catalog as catalog_mod
from upgrader.core.versions import Version
from upgrader.engine import expectations
from upgrader.engine.ports import Expected
from upgrader.kube import cluster as kube
from upgrader.snapshots import local, tiers
from upgrader.state import records, store


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str


@dataclass(frozen=True)
class Verdict:
    reference: str  # "the live cluster", "v1.31.13", "snapshot ID"
    checks: tuple[Check, ...]

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.checks)

    @property
    def failures(self) -> list[Check]:
        return [c for c in self.checks if not c.ok]

    def as_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "reference": self.reference,
            "checks": [{"check": c.name, "ok": c.ok, "detail": c.detail} for c in self.checks],
        }


def _probe(cluster: session.ClusterSession) -> gates.ClusterGate:
    return gates.ClusterGate(cluster, catalog_mod.load())


def live_versions(probe: gates.ClusterGate) -> Expected:
    """What the cluster runs now (what answers), so the gate checks health and skew but no particular version."""
    api = probe.cluster.api
    apiservers = {}
    try:
        servers = {server.node: server for server in api.apiservers()}  # listed once, not per node
        for node in servers:
            live = probe.apiserver(node, servers)
            if live is not None:
                apiservers[node] = live
        kubelets = {n.name: v for n in api.nodes() if (v := gates.plain(n.kubelet)) is not None}
    except kube.KubeUnavailable:
        kubelets = {}
    return Expected(apiservers=apiservers, kubelets=kubelets)


def _gate(probe: gates.ClusterGate, expected: Expected) -> list[Check]:
    problems = probe.check(expected)
    checks = [Check("gate", False, problem) for problem in problems]
    if not problems:
        what = f"{len(expected.apiservers)} apiservers, {len(expected.kubelets)} kubelets, etcd, skew"
        checks.append(Check("gate", True, what))
    return checks


def current(cluster: session.ClusterSession) -> Verdict:
    probe = _probe(cluster)
    return Verdict("the live cluster", tuple(_gate(probe, live_versions(probe))))


def expect(cluster: session.ClusterSession, version: Version) -> Verdict:
    probe = _probe(cluster)
    now = live_versions(probe)
    wanted = Expected(
        apiservers={node: (version, version.minor_version) for node in now.apiservers},
        kubelets={node: version for node in now.kubelets},
    )
    return Verdict(f"v{version}", tuple(_gate(probe, wanted)))


def against(
    cluster: session.ClusterSession, state: store.Store, snapshot_id: str, *, reference_checked: bool = False
) -> Verdict:
    """``reference_checked``: the caller verified the snapshot itself already (a rollback does, before it
    restores from it), so its files are not read and hashed again."""
    try:
        record = state.snapshot(snapshot_id)
    except errors.NotFound as exc:  # a reference the operator named: bad input, not a failed check
        raise errors.InputError(f"{exc.message}; `upgrader snapshot list -c` shows this cluster's") from None
    if record.cluster != cluster.name:
        raise errors.Refused(f"snapshot {record.id} belongs to cluster {record.cluster}, not {cluster.name}")
    # The comparison needs the archive only: a database restored from the peer tier's copies may be
    # absent from this controller.
    bad = None if reference_checked else tiers.ready(cluster, state, record, need_database=False)
    if bad:
        raise errors.Refused(f"snapshot {record.id} fails its own verification ({bad}); it is no reference")
    checks, kubelets = _gate_against(cluster, record)
    checks += _installed(live_facts.installed_kubelets(cluster), kubelets)
    archived = local.archive_members(record)
    checks += _manifests(cluster, archived)
    checks += _etcd(cluster, record, local.registry_keys(archived))
    return Verdict(f"snapshot {record.id}", tuple(checks))


def _gate_against(
    cluster: session.ClusterSession, record: records.SnapshotRecord
) -> tuple[list[Check], dict[str, Version]]:
    probe = _probe(cluster)
    then = expectations.initial(local.facts_of(record))
    kubelets, notes = _kubelets(then, live_versions(probe).kubelets)
    return _gate(probe, Expected(apiservers=then.apiservers, kubelets=kubelets)) + notes, kubelets


def settled(cluster: session.ClusterSession, record: records.SnapshotRecord) -> bool:
    """Whether the gate part of ``against`` passes: what the API and etcd answer, without the playbooks
    that read each node's manifests and kubelet. Cheap enough to poll while nodes come back."""
    checks, _ = _gate_against(cluster, record)
    return all(c.ok for c in checks)


def _kubelets(then: Expected, now: Mapping[str, Version]) -> tuple[dict[str, Version], list[Check]]:
    """The kubelet versions to expect: the snapshot's, except a kubelet newer than the snapshot's but not
    newer than the snapshot's control plane, which the skew policy allows and a rollback leaves as is
    (rolling it back would drain the node for nothing); each such node is named."""
    ceiling = max(v for v, _ in then.apiservers.values())
    wanted = dict(then.kubelets)
    notes = []
    for node, snapshot_kubelet in sorted(then.kubelets.items()):
        running = now.get(node)
        if running is not None and snapshot_kubelet < running <= ceiling:
            wanted[node] = running
            notes.append(
                Check(
                    "kubelet",
                    True,
                    f"{node} runs kubelet v{running}, the snapshot's v{snapshot_kubelet}: not newer than the "
                    f"snapshot's control plane (v{ceiling}), so allowed",
                )
            )
    return wanted, notes


def _installed(installed: Mapping[str, Version | None], wanted: Mapping[str, Version]) -> list[Check]:
    """Each node's own ``kubelet --version`` (the Node objects of a restored etcd say what the snapshot
    said until every kubelet posts its status again)."""
    checks = []
    for node, version in sorted(wanted.items()):
        found = installed.get(node)
        if found is None:
            checks.append(Check("installed kubelet", False, f"{node}: `kubelet --version` gave no answer"))
        elif found != version:
            checks.append(Check("installed kubelet", False, f"{node} has kubelet v{found} installed, not v{version}"))
    return checks or [Check("installed kubelet", True, f"{len(wanted)} nodes, as expected")]


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _manifests(cluster: session.ClusterSession, archived: Mapping[str, bytes]) -> list[Check]:
    """Each control-plane node's manifests now against the archive, file by file."""
    then = {name: _digest(data) for name, data in archived.items() if "/manifests/" in name}
    now = {name: _digest(data) for name, data in local.fetch_control_plane(cluster).items() if "/manifests/" in name}
    checks = []
    for name in sorted(then.keys() | now.keys()):
        if name not in now:
            checks.append(Check("manifest", False, f"{name} is in the snapshot but not on the node"))
        elif name not in then:
            checks.append(Check("manifest", False, f"{name} is on the node but not in the snapshot"))
        elif now[name] != then[name]:
            checks.append(Check("manifest", False, f"{name} differs from the snapshot's (sha256 {now[name][:12]})"))
    if not checks:
        checks.append(Check("manifest", True, f"{len(then)} manifests match the snapshot's"))
    return checks


# Keys the cluster rewrites on its own, so their absence says nothing of a restore: leases and events
# expire, endpoints follow the pods, and pods are their controllers' to replace (a drain after the
# restore gives a ReplicaSet's pods new names).
REWRITTEN = (
    "/registry/leases/",
    "/registry/masterleases/",
    "/registry/events/",
    "/registry/pods/",
    "/registry/endpointslices/",
    "/registry/services/endpoints/",
)
SHOWN = 5  # missing keys named in the check's line


def _etcd(cluster: session.ClusterSession, record: records.SnapshotRecord, recorded: list[str] | None) -> list[Check]:
    try:
        members = len(cluster.etcd.members())
        keys, revision = cluster.etcd.key_count()
        live = set(cluster.etcd.keys_at(local.REGISTRY)) if recorded is not None else set()
    except errors.UpgraderError as exc:
        return [Check("etcd", False, f"etcd does not answer: {exc}")]
    wanted_members = len(record.members)
    snapshot_revision = record.etcd_revision or 0
    return [
        Check(
            "etcd members",
            members == wanted_members,
            f"{members} members" + ("" if members == wanted_members else f", the snapshot had {wanted_members}"),
        ),
        Check(
            "etcd revision",
            revision >= snapshot_revision,
            f"revision {revision}, the snapshot's {snapshot_revision}"
            + ("" if revision >= snapshot_revision else ": lower, so clients would see time go backwards"),
        ),
        _keys(recorded, live, keys),
    ]


def _keys(recorded: list[str] | None, live: set[str], count: int) -> Check:
    """Every key the snapshot had, less those the cluster rewrites on its own, must be there now."""
    if recorded is None:
        return Check("etcd keys", True, f"{count} keys; the snapshot predates its key list, so none compared")
    wanted = [k for k in recorded if not k.startswith(REWRITTEN)]
    missing = [k for k in wanted if k not in live]
    if not missing:
        return Check("etcd keys", True, f"all {len(wanted)} of the snapshot's keys are there (pods, leases aside)")
    named = ", ".join(missing[:SHOWN]) + (f" and {len(missing) - SHOWN} more" if len(missing) > SHOWN else "")
    return Check("etcd keys", False, f"{len(missing)} of the snapshot's {len(wanted)} keys are missing: {named}")
