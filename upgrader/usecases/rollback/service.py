"""``upgrader rollback``: the cluster back at a known-good snapshot by the least destructive path, then proved.

``prepare`` changes nothing. It chooses the snapshot: the one named, or the newest known-good one of the
cluster at an older minor than the cluster runs, verified again (trailer and archive); one that fails
is never used, and the next is tried. It chooses the route:

- **window**: every apiserver still emulates the snapshot's minor (the two-step hop's emulation was never
  committed), so nothing was written in a newer format. The snapshot's kubeadm ClusterConfiguration,
  kubeadm and static pod manifests go back node by node. etcd is not touched: nothing is lost.
- **full restore** otherwise. The apiservers are stopped (manifests held), the highest revision the
  cluster served is recorded, etcd is stopped, every member is restored from the same snapshot into a
  new data directory (the old one kept aside), etcd starts, the revision is moved past the recorded one
  and older revisions compacted (``etcdutl --bump-revision --mark-compacted`` where the node's tool has
  them, ``etcd.revisions.advance_past`` otherwise) before any apiserver starts, then the control plane.

Both routes then put back every kubelet newer than the restored control plane allows (drained as apply
drains), verify the cluster against the snapshot (the run is done only when that passes) and remove what
was kept aside. Each step is journaled before and after it acts and is safe to run again, so a killed
rollback resumes (``--resume``) from the step it was in.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from upgrader import errors
from upgrader.cluster import session
from upgrader.core.versions import Version
from upgrader.engine import driver, expectations, ports
from upgrader.etcd import revisions
from upgrader.snapshots import local, restore_tool
from upgrader.state import records, store
from upgrader.usecases import apply, runs
from upgrader.usecases.rollback import adapters
from upgrader.usecases.rollback.archive import control_plane_hosts, etcd_as_service, etcd_members
from upgrader.usecases.rollback.choice import choose, read_observed, route, usable
from upgrader.usecases.rollback.model import DESCRIPTIONS, Kind, Observed, Options, Route, snapshot_version
from upgrader.usecases.rollback.steps import Steps


@dataclass(frozen=True)
class Prepared:
    snapshot: records.SnapshotRecord
    route: Route
    why: str
    steps: tuple[dict[str, Any], ...]
    passed_over: tuple[str, ...]  # snapshots that failed verification, with why
    lost_seconds: float  # since the snapshot (full restore only loses it)
    lost_revisions: int | None
    observed: Observed
    ends: records.RunRecord | None  # the unfinished apply run this rollback ends

    @property
    def version(self) -> Version:
        return snapshot_version(self.snapshot)

    def summary(self) -> dict[str, Any]:
        lost = (
            {"seconds": round(self.lost_seconds), "revisions": self.lost_revisions}
            if self.route is Route.FULL_RESTORE
            else None
        )
        return {
            "snapshot": self.snapshot.id,
            "snapshot_taken": self.snapshot.created_at.isoformat(),
            "version": str(self.version),
            "route": self.route.value,
            "why": self.why,
            "lost": lost,
            "passed_over": list(self.passed_over),
            "ends_run": self.ends.id if self.ends else None,
        }


ETCD_KINDS = (Kind.HOLD_ETCD, Kind.RESTORE_ETCD, Kind.START_ETCD)


def _steps(
    route_: Route, hosts: list[str], version: Version, etcd_hosts: list[str] | None = None, *, service: bool = False
) -> list[dict[str, Any]]:
    """``etcd_hosts``: where a full restore rebuilds etcd (the control planes unless etcd has hosts of its
    own); ``service``: etcd runs as a systemd service there, not as kubeadm's static pod."""
    nodes = list(hosts)
    if route_ is Route.WINDOW:
        kinds = [Kind.KUBEADM_CONFIG, Kind.CONTROL_PLANE, Kind.KUBELETS, Kind.VERIFY, Kind.CLEAN_UP]
    else:
        kinds = [
            Kind.HOLD_CONTROL_PLANE,
            Kind.HOLD_ETCD,
            Kind.RESTORE_ETCD,
            Kind.START_ETCD,
            Kind.REVISION,
            Kind.CONTROL_PLANE,
            Kind.KUBELETS,
            Kind.VERIFY,
            Kind.CLEAN_UP,
        ]
    out = []
    for kind in kinds:
        step: dict[str, Any] = {"kind": kind.value, "reason": DESCRIPTIONS[kind]}
        if kind in (Kind.CONTROL_PLANE, Kind.KUBELETS):
            step["version"] = str(version)
        if kind not in (Kind.REVISION, Kind.KUBEADM_CONFIG, Kind.KUBELETS, Kind.VERIFY):
            step["nodes"] = nodes
        if kind in ETCD_KINDS and etcd_hosts is not None:
            step["nodes"] = list(etcd_hosts)
        if kind is Kind.CLEAN_UP and etcd_hosts is not None:
            step["nodes"] = sorted({*nodes, *etcd_hosts})
        if kind in (Kind.HOLD_ETCD, Kind.START_ETCD) and service:
            step["etcd"] = "service"
        out.append(step)
    return out


def refuse_unfinished_rollback(state: store.Store, cluster: str) -> records.RunRecord | None:
    """An unfinished rollback must be resumed; an unfinished apply is what a rollback ends (returned)."""
    found = state.unfinished_run(cluster)
    if found is not None and found.kind is records.RunKind.ROLLBACK:
        raise errors.Refused(
            f"cluster {cluster} has an unfinished rollback {found.id} ({found.status.value}): continue it with "
            f"`upgrader rollback --resume {found.id} -c CLUSTER.yaml`"
        )
    return found


def refuse_blind_restore(chosen: Route, observed: Observed, options: Options) -> None:
    """A full restore must move etcd's revision past the highest one the cluster served, which is read
    from etcd: when etcd does not answer, that is known before the outage begins, so the rollback is
    refused then (not after the apiservers are stopped), unless a regression is accepted."""
    if chosen is Route.FULL_RESTORE and observed.revision is None and not options.allow_revision_regression:
        raise errors.Refused(
            "etcd does not answer, so the highest revision the cluster served cannot be read, and a full "
            "restore could move it backwards under every client: fix etcd, or accept that with "
            "--allow-revision-regression; nothing was changed"
        )


def prepare(
    cluster: session.ClusterSession,
    state: store.Store,
    wanted: str | None,
    options: Options,
    *,
    place_tool: bool = True,
) -> Prepared:
    """Every check that may refuse (exit 2 or 3). Changes nothing in the cluster; for a full restore it
    makes sure every control-plane node has etcd's restore tool (placing it unless ``place_tool`` is
    False, as for a dry run), since without it the outage could not be ended."""
    ends = refuse_unfinished_rollback(state, cluster.name)
    observed = read_observed(cluster)
    record, passed = choose(state, cluster.name, wanted, observed.minor, usable(cluster, state))
    archived = local.archive_members(record)
    hosts = control_plane_hosts(archived)
    inventory = sorted(cluster.inventory.hosts("kube_control_plane"))
    if hosts != inventory:
        raise errors.Refused(
            f"the control-plane nodes are {', '.join(inventory)}; snapshot {record.id} has {', '.join(hosts)}: "
            "a rollback restores the members the snapshot knows"
        )
    chosen, why = route(record, observed, archived)
    refuse_blind_restore(chosen, observed, options)
    lost_revisions = None
    etcd_hosts: list[str] | None = None
    if chosen is Route.FULL_RESTORE:
        etcd_hosts = sorted(etcd_members(archived))  # refuses what it cannot restore from, before any change
        if etcd_as_service(archived):
            in_group = sorted(cluster.inventory.hosts("etcd"))
            if etcd_hosts != in_group:
                raise errors.Refused(
                    f"the inventory's etcd hosts are {', '.join(in_group)}; snapshot {record.id} has "
                    f"{', '.join(etcd_hosts)}: a rollback restores the members the snapshot knows"
                )
        restore_tool.ensure(cluster, place=place_tool)
        if observed.revision is not None and record.etcd_revision is not None:
            lost_revisions = max(0, observed.revision - record.etcd_revision)
            gap = lost_revisions + 1
            if gap > cluster.cfg.etcd.max_revision_gap and not options.allow_revision_regression:
                raise revisions.RevisionGap(
                    f"etcd is {gap} revisions past snapshot {record.id}, over the limit of "
                    f"{cluster.cfg.etcd.max_revision_gap} (etcd.max_revision_gap): raise it, or accept that "
                    "clients see the revision go backwards with --allow-revision-regression"
                )
    return Prepared(
        snapshot=record,
        route=chosen,
        why=why,
        steps=tuple(_steps(chosen, hosts, snapshot_version(record), etcd_hosts, service=etcd_as_service(archived))),
        passed_over=passed,
        lost_seconds=(datetime.now(UTC) - record.created_at).total_seconds(),
        lost_revisions=lost_revisions,
        observed=observed,
        ends=ends,
    )


_ACTIONS = {
    Kind.HOLD_CONTROL_PLANE: (
        "{nodes}: move the kube-apiserver, kube-controller-manager and kube-scheduler manifests out; wait until "
        "the apiservers stop",
        "read etcd's revision: the highest the cluster served",
    ),
    Kind.HOLD_ETCD: ("{nodes}: {hold_etcd}; wait until every member stops",),
    Kind.RESTORE_ETCD: (
        "{nodes}: push {snapshot}.db (sha256 checked on the node), restore it into DATA.upgrader-RUN",
        "keep the old data directory as DATA.before-RUN until the rollback is verified",
    ),
    Kind.START_ETCD: ("{nodes}: {start_etcd}; wait for every member and one leader",),
    Kind.REVISION: (
        "etcdutl --bump-revision --mark-compacted where the nodes' tool has them; else no-op writes on "
        "/upgrader/revision-bump past the recorded revision, then a compaction",
    ),
    Kind.KUBEADM_CONFIG: ("the kubeadm-config ConfigMap's ClusterConfiguration from the snapshot's archive",),
    Kind.CONTROL_PLANE: ("{nodes} ({how}): kubeadm v{version}, the snapshot's manifests; wait for v{version}",),
    Kind.VERIFY: ("upgrader verify --against {snapshot}: the run is done only when it passes",),
    Kind.CLEAN_UP: ("{nodes}: remove DATA.before-RUN, the held manifests and the pushed snapshot",),
}


def dry_run(prepared: Prepared) -> list[dict[str, Any]]:
    """Every step with what it would do, where. Changes nothing."""
    version = prepared.version
    then = expectations.initial(local.facts_of(prepared.snapshot)).kubelets
    out = []
    for position, step in enumerate(prepared.steps):
        kind = Kind(step["kind"])
        values = {
            "nodes": ", ".join(step.get("nodes", ())),
            "snapshot": prepared.snapshot.id,
            "version": version,
            "how": "one node at a time" if prepared.route is Route.WINDOW else "all at once",
            "hold_etcd": "systemctl stop etcd" if step.get("etcd") == "service" else "move etcd.yaml out",
            "start_etcd": "systemctl start etcd"
            if step.get("etcd") == "service"
            else "put the snapshot's etcd.yaml back",
        }
        actions = [text.format(**values) for text in _ACTIONS.get(kind, ())]
        if kind is Kind.KUBELETS:
            newer = sorted(n for n, v in prepared.observed.kubelets.items() if v > version and n in then)
            actions += [f"{n}: drain, kubelet v{prepared.observed.kubelets[n]} -> v{then[n]}, uncordon" for n in newer]
            actions += [] if newer else ["none is newer than the restored control plane allows"]
        out.append({"step": position + 1, **step, "actions": actions})
    return out


def execute(
    cluster: session.ClusterSession,
    state: store.Store,
    prepared: Prepared,
    options: Options,
    *,
    lease: ports.Lease,
    observe: Callable[[ports.Event], None],
) -> records.RunRecord:
    run = runs.create(
        state,
        cluster.name,
        records.RunKind.ROLLBACK,
        list(prepared.steps),
        options={
            **options.as_dict(),
            "snapshot": prepared.snapshot.id,
            "route": prepared.route.value,
            "revision_at_start": prepared.observed.revision,
            "ends_run": prepared.ends.id if prepared.ends else None,
        },
    )
    state.record_event(
        kind="rollback-started",
        cluster=cluster.name,
        run_id=run.id,
        level=records.EventLevel.WARNING,
        message=f"rollback {run.id} to snapshot {prepared.snapshot.id} by {prepared.route.value}: {prepared.why}",
        data=prepared.summary(),
    )
    return _drive(cluster, state, run, options, lease=lease, observe=observe)


def resume(
    cluster: session.ClusterSession,
    state: store.Store,
    run_id: str,
    options: Options,
    *,
    lease: ports.Lease,
    observe: Callable[[ports.Event], None],
) -> records.RunRecord:
    run = runs.reopen(state, run_id, cluster.name, records.RunKind.ROLLBACK)
    return _drive(cluster, state, run, options, lease=lease, observe=observe)


def _drive(
    cluster: session.ClusterSession,
    state: store.Store,
    run: records.RunRecord,
    options: Options,
    *,
    lease: ports.Lease,
    observe: Callable[[ports.Event], None],
) -> records.RunRecord:
    snapshot = state.snapshot(str(run.options["snapshot"]))
    ports = apply.ports(cluster, state, options.for_apply(), run.id)

    def go(engine: driver.Driver) -> driver.Outcome:
        failed = usable(cluster, state, run.id)(snapshot)  # read again: never restore from a damaged copy
        if failed:
            raise errors.Refused(f"snapshot {snapshot.id} fails verification now ({failed}); the run cannot go on")
        checked = state.snapshot(snapshot.id)
        real = adapters.real(cluster, state, run.id, ports.drainer, snapshot_version(checked))
        return Steps(cluster.cfg, real, run=run, snapshot=checked, options=options, engine=engine).run()

    return runs.drive(
        cluster,
        state,
        run,
        gate=ports.gate,
        lease=lease,
        observe=observe,
        wait_timeout=options.wait_timeout,
        insecure=options.insecure,
        go=go,
    )
