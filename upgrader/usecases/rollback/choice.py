"""Which snapshot a rollback goes to, and by which route.

The snapshot is the one named, or the newest known-good one of the cluster at an older minor than the
cluster runs, verified again now (trailer and archive, and the copies in the other tiers when the
local one is not good); one that fails is never used and the next is tried. The route is the window
when every apiserver still emulates the snapshot's minor (the two-step hop was never committed, so
nothing was written in a newer format), else a full restore."""

from __future__ import annotations

from collections.abc import Callable, Mapping

from upgrader import errors
from upgrader.cluster import gates, session
from upgrader.core.rules import catalog as catalog_mod
from upgrader.core.versions import Minor
from upgrader.engine import expectations
from upgrader.snapshots import local, tiers
from upgrader.state import records, store
from upgrader.usecases import verification
from upgrader.usecases.rollback.archive import etcd_minor
from upgrader.usecases.rollback.model import Observed, Route, newest, snapshot_version


def read_observed(cluster: session.ClusterSession) -> Observed:
    probe = gates.ClusterGate(cluster, catalog_mod.load())
    now = verification.live_versions(probe)
    try:
        revision: int | None = cluster.etcd.revision()
    except errors.UpgraderError:
        revision = None
    etcd_version = None
    for endpoint in cluster.cfg.etcd.endpoints:
        try:
            etcd_version = gates.plain(cluster.etcd.status_of(endpoint)[0])
            break
        except errors.UpgraderError:
            continue
    return Observed(apiservers=now.apiservers, kubelets=now.kubelets, revision=revision, etcd_version=etcd_version)


Usable = Callable[[records.SnapshotRecord], "str | None"]


def usable(cluster: session.ClusterSession, state: store.Store, run_id: records.RunId | None = None) -> Usable:
    """None when a rollback can use the snapshot now, its copies checked (and pulled back from
    another tier where the local one is not good); else what failed. Each move is an event."""

    def report(message: str) -> None:
        state.record_event(kind="snapshot-copy", message=message, cluster=cluster.name, run_id=run_id)

    return lambda record: tiers.ready(cluster, state, record, report=report)


def verified_locally(state: store.Store) -> Usable:
    """The local copy alone, verified again: for a controller that has no other tier."""

    def check(record: records.SnapshotRecord) -> str | None:
        checked = tiers.verify(state, record.id)
        if checked.ok:
            return None
        return next(f"{name}: {why}" for name, why in checked.checks.items() if why != "ok")

    return check


def choose(
    state: store.Store, cluster: str, wanted: str | None, minor: Minor | None, verified: Usable
) -> tuple[records.SnapshotRecord, tuple[str, ...]]:
    """The snapshot to roll back to, verified again, and the ones passed over with why."""
    if wanted is not None:
        try:
            record = state.snapshot(wanted)
        except errors.NotFound as exc:
            raise errors.InputError(f"{exc.message}; `upgrader snapshot list -c` shows this cluster's") from None
        if record.cluster != cluster:
            raise errors.Refused(f"snapshot {record.id} belongs to cluster {record.cluster}, not {cluster}")
        if not record.known_good:
            raise errors.Refused(f"snapshot {record.id} is not known-good: a rollback never uses it")
        if minor is not None and snapshot_version(record).minor_version > minor:
            raise errors.Refused(
                f"snapshot {record.id} is at v{snapshot_version(record)}, newer than the cluster ({minor}): "
                "that is an upgrade, not a rollback"
            )
        failed = verified(record)
        if failed:
            raise errors.Refused(f"snapshot {record.id} fails verification ({failed}): it is never used")
        return record, ()
    candidates = sorted(
        (
            s
            for s in state.snapshots(cluster)
            if s.known_good and (minor is None or snapshot_version(s).minor_version < minor)
        ),
        key=lambda s: s.created_at,
        reverse=True,
    )
    passed: list[str] = []
    for record in candidates:
        failed = verified(record)
        if failed is None:
            return record, tuple(passed)
        passed.append(f"{record.id}: {failed}")
    older = f" at a minor older than {minor}" if minor is not None else ""
    tried = f" ({len(passed)} failed verification: {passed[0]})" if passed else ""
    hint = "; to undo a step within this minor (an etcd step), name its snapshot with --to (upgrader snapshot list)"
    raise errors.Refused(
        f"no known-good snapshot of cluster {cluster}{older} to roll back to{tried}" + (hint if minor else "")
    )


def route(record: records.SnapshotRecord, observed: Observed, archived: Mapping[str, bytes]) -> tuple[Route, str]:
    """The window route when it is safe (see the module's doc), else a full restore; and why."""
    start = expectations.initial(local.facts_of(record))
    then, version = start.apiservers, newest(start)
    if any(v != version or e != version.minor_version for v, e in then.values()):
        return Route.FULL_RESTORE, "the snapshot was taken while the control plane was changing"
    if set(observed.apiservers) != set(then):
        silent = sorted(set(then) - set(observed.apiservers))
        return Route.FULL_RESTORE, f"not every apiserver answers ({', '.join(silent) or 'different nodes'})"
    for node, (running, emulated) in sorted(observed.apiservers.items()):
        if emulated != version.minor_version:
            return Route.FULL_RESTORE, f"the apiserver on {node} emulates {emulated}: the new minor was committed"
        if running.minor_version not in (version.minor_version, version.minor_version + 1):
            return Route.FULL_RESTORE, f"the apiserver on {node} runs v{running}, more than one minor ahead"
    etcd_then = {etcd_minor(data) for name, data in archived.items() if name.endswith("/manifests/etcd.yaml")}
    if observed.etcd_version is not None and etcd_then and etcd_then != {str(observed.etcd_version.minor_version)}:
        return Route.FULL_RESTORE, f"etcd is at {observed.etcd_version}, another minor than the snapshot's"
    return Route.WINDOW, f"every apiserver still emulates {version.minor_version}: the emulation was never committed"
