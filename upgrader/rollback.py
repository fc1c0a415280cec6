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

import base64
import enum
import functools
import io
import os
import re
import socket
import tarfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml

from upgrader import apply, errors, gates, live_facts, rendering, rollout, session, snapshots, verification
from upgrader.engine import driver, expectations
from upgrader.etcd import revisions
from upgrader.etcd import snapshot as etcd_snapshot
from upgrader.kube import writes
from upgrader.planner.model import MaxUnavailable
from upgrader.rules import catalog as catalog_mod
from upgrader.state import records, store
from upgrader.versions import Minor, Version

STOPPED = ("kube-apiserver", "kube-controller-manager", "kube-scheduler")  # held before etcd, started after it
BUMP_MARGIN = 1000  # --bump-revision adds this beyond the gap: cheap, and covers writes after the reading


class Route(enum.StrEnum):
    WINDOW = "window"
    FULL_RESTORE = "full-restore"


class Kind(enum.StrEnum):
    """The steps of a rollback run, in the order they may appear."""

    HOLD_CONTROL_PLANE = "hold-control-plane"
    HOLD_ETCD = "hold-etcd"
    RESTORE_ETCD = "restore-etcd"
    START_ETCD = "start-etcd"
    REVISION = "revision"
    KUBEADM_CONFIG = "kubeadm-config"
    CONTROL_PLANE = "restore-control-plane"
    KUBELETS = "kubelets"
    VERIFY = "verify"
    CLEAN_UP = "clean-up"


DESCRIPTIONS = {
    Kind.HOLD_CONTROL_PLANE: "stop the apiservers, controller managers and schedulers; record etcd's revision",
    Kind.HOLD_ETCD: "stop etcd on every member",
    Kind.RESTORE_ETCD: "restore every etcd member from the snapshot (old data directories kept aside)",
    Kind.START_ETCD: "start etcd from the snapshot's manifests",
    Kind.REVISION: "move the revision past the highest one served, compact older revisions",
    Kind.KUBEADM_CONFIG: "put back the snapshot's kubeadm ClusterConfiguration",
    Kind.CONTROL_PLANE: "kubeadm and the snapshot's control-plane manifests",
    Kind.KUBELETS: "put back kubelets newer than the restored control plane allows",
    Kind.VERIFY: "verify the cluster against the snapshot",
    Kind.CLEAN_UP: "remove what was kept aside",
}


class RollbackStopped(apply.RunStopped):
    """A rollback run stopped before it was verified; resumable like an apply run."""


@dataclass(frozen=True)
class Options:
    allow_revision_regression: bool = False
    force_drain: bool = False
    delete_emptydir_data: bool = False
    drain_timeout: float | None = None
    wait_timeout: float = 300.0
    insecure: tuple[str, ...] = ()

    def as_dict(self) -> dict[str, Any]:
        return {
            "allow_revision_regression": self.allow_revision_regression,
            "force_drain": self.force_drain,
            "delete_emptydir_data": self.delete_emptydir_data,
            "drain_timeout": self.drain_timeout,
            "insecure": list(self.insecure),
        }

    def for_apply(self) -> apply.Options:
        return apply.Options(
            force_drain=self.force_drain,
            delete_emptydir_data=self.delete_emptydir_data,
            drain_timeout=self.drain_timeout,
            wait_timeout=self.wait_timeout,
            insecure=self.insecure,
        )


@dataclass(frozen=True)
class Live:
    """What the cluster runs as the rollback is prepared (what answers)."""

    apiservers: Mapping[str, tuple[Version, Minor]]
    kubelets: Mapping[str, Version]
    revision: int | None
    etcd_version: Version | None

    @property
    def minor(self) -> Minor | None:
        return max((v.minor_version for v, _ in self.apiservers.values()), default=None)


@dataclass(frozen=True)
class Prepared:
    snapshot: records.SnapshotRecord
    route: Route
    why: str
    steps: tuple[dict[str, Any], ...]
    passed_over: tuple[str, ...]  # snapshots that failed verification, with why
    lost_seconds: float  # since the snapshot (full restore only loses it)
    lost_revisions: int | None
    live: Live
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


def snapshot_version(record: records.SnapshotRecord) -> Version:
    """The control plane's version when the snapshot was taken (its newest apiserver)."""
    return max(v for v, _ in expectations.initial(record.facts).apiservers.values())


def read_live(cluster: session.ClusterSession) -> Live:
    probe = gates.Live(cluster, catalog_mod.load())
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
    return Live(apiservers=now.apiservers, kubelets=now.kubelets, revision=revision, etcd_version=etcd_version)


# -- choosing the snapshot and the route ---------------------------------------------------------------


def _verified(state: store.Store, record: records.SnapshotRecord) -> str | None:
    """None when the snapshot verifies again now; else what failed."""
    checked = snapshots.verify_snapshot(state, record.id)
    if checked.ok:
        return None
    return next(f"{name}: {why}" for name, why in checked.checks.items() if why != "ok")


def choose(
    state: store.Store, cluster: str, wanted: str | None, minor: Minor | None
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
        failed = _verified(state, record)
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
        failed = _verified(state, record)
        if failed is None:
            return record, tuple(passed)
        passed.append(f"{record.id}: {failed}")
    older = f" at a minor older than {minor}" if minor is not None else ""
    tried = f" ({len(passed)} failed verification: {passed[0]})" if passed else ""
    raise errors.Refused(f"no known-good snapshot of cluster {cluster}{older} to roll back to{tried}")


def _etcd_minor(manifest: bytes) -> str:
    image = str(yaml.safe_load(manifest)["spec"]["containers"][0]["image"])
    return ".".join(image.rsplit(":", 1)[-1].split(".")[:2])


def route(record: records.SnapshotRecord, live: Live, archived: Mapping[str, bytes]) -> tuple[Route, str]:
    """The window route when it is safe (see the module's doc), else a full restore; and why."""
    then = expectations.initial(record.facts).apiservers
    version = snapshot_version(record)
    if any(v != version or e != version.minor_version for v, e in then.values()):
        return Route.FULL_RESTORE, "the snapshot was taken while the control plane was changing"
    if set(live.apiservers) != set(then):
        silent = sorted(set(then) - set(live.apiservers))
        return Route.FULL_RESTORE, f"not every apiserver answers ({', '.join(silent) or 'different nodes'})"
    for node, (running, emulated) in sorted(live.apiservers.items()):
        if emulated != version.minor_version:
            return Route.FULL_RESTORE, f"the apiserver on {node} emulates {emulated}: the new minor was committed"
        if running.minor_version not in (version.minor_version, version.minor_version + 1):
            return Route.FULL_RESTORE, f"the apiserver on {node} runs v{running}, more than one minor ahead"
    etcd_then = {_etcd_minor(data) for name, data in archived.items() if name.endswith("/manifests/etcd.yaml")}
    if live.etcd_version is not None and etcd_then and etcd_then != {str(live.etcd_version.minor_version)}:
        return Route.FULL_RESTORE, f"etcd is at {live.etcd_version}, another minor than the snapshot's"
    return Route.WINDOW, f"every apiserver still emulates {version.minor_version}: the emulation was never committed"


# -- what the archive says about each control-plane node ------------------------------------------------

_MEMBER = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,252}$")
_URL = re.compile(r"^https?://[A-Za-z0-9.\-\[\]:]+$")
_PATH = re.compile(r"^/[A-Za-z0-9._/-]+$")


def control_plane_hosts(archived: Mapping[str, bytes]) -> list[str]:
    return sorted({name.split("/", 1)[0] for name in archived if name.endswith("/manifests/kube-apiserver.yaml")})


def _flags(manifest: bytes) -> dict[str, str]:
    command = yaml.safe_load(manifest)["spec"]["containers"][0].get("command") or []
    return {str(a).split("=", 1)[0]: str(a).split("=", 1)[1] for a in command if "=" in str(a)}


def etcd_members(archived: Mapping[str, bytes]) -> dict[str, dict[str, str]]:
    """Per control-plane host, from its archived etcd manifest: member name, peer URLs, data directory and
    client URLs, each checked before it reaches a command line."""
    out: dict[str, dict[str, str]] = {}
    for host in control_plane_hosts(archived):
        data = archived.get(f"{host}/manifests/etcd.yaml")
        if data is None:
            raise errors.Refused(f"the snapshot has no etcd manifest for {host}: a local etcd is needed to restore")
        flags = _flags(data)
        member = {
            "member": flags.get("--name", ""),
            "peer_urls": flags.get("--initial-advertise-peer-urls", ""),
            "data_dir": flags.get("--data-dir", ""),
            "client_urls": flags.get("--advertise-client-urls", ""),
        }
        urls = [u for key in ("peer_urls", "client_urls") for u in member[key].split(",")]
        if (
            not _MEMBER.match(member["member"])
            or not all(_URL.match(u) for u in urls)
            or not _PATH.match(member["data_dir"])
            or "/../" in member["data_dir"] + "/"
        ):
            raise errors.Refused(f"the snapshot's etcd manifest for {host} has a name, URL or path upgrader refuses")
        out[host] = member
    return out


def _manifest_tar(archived: Mapping[str, bytes], host: str, names: tuple[str, ...] | None) -> str:
    """A host's archived manifests (all, or ``names`` only) as base64 of a gzipped tar of plain names."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, data in sorted(archived.items()):
            prefix = f"{host}/manifests/"
            file = name.removeprefix(prefix)
            if not name.startswith(prefix) or (names is not None and file.removesuffix(".yaml") not in names):
                continue
            info = tarfile.TarInfo(file)
            info.size, info.mode, info.mtime = len(data), 0o600, 0
            tar.addfile(info, io.BytesIO(data))
    return base64.b64encode(buffer.getvalue()).decode()


def _apiserver_endpoint(manifest: bytes) -> tuple[str, int]:
    flags = _flags(manifest)
    return flags.get("--advertise-address", "127.0.0.1"), int(flags.get("--secure-port", "6443"))


def _answers(host: str, port: int) -> bool:
    """Whether something listens at host:port (a stopped component's port refuses)."""
    try:
        with socket.create_connection((host, port), timeout=1.0):
            return True
    except OSError:
        return False


def _address(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    return parts.hostname or "", parts.port or 2379


# -- preparing ------------------------------------------------------------------------------------------


def _steps(route_: Route, hosts: list[str], version: Version) -> list[dict[str, Any]]:
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


def prepare(cluster: session.ClusterSession, state: store.Store, wanted: str | None, options: Options) -> Prepared:
    """Every check that may refuse (exit 2 or 3); changes nothing."""
    ends = refuse_unfinished_rollback(state, cluster.name)
    live = read_live(cluster)
    record, passed = choose(state, cluster.name, wanted, live.minor)
    archived = snapshots.archive_members(record)
    hosts = control_plane_hosts(archived)
    inventory = sorted(cluster.inventory.hosts("kube_control_plane"))
    if hosts != inventory:
        raise errors.Refused(
            f"the control-plane nodes are {', '.join(inventory)}; snapshot {record.id} has {', '.join(hosts)}: "
            "a rollback restores the members the snapshot knows"
        )
    chosen, why = route(record, live, archived)
    lost_revisions = None
    if chosen is Route.FULL_RESTORE:
        etcd_members(archived)  # refuses a manifest it cannot restore from, before anything changes
        if live.revision is not None and record.etcd_revision is not None:
            lost_revisions = max(0, live.revision - record.etcd_revision)
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
        steps=tuple(_steps(chosen, hosts, snapshot_version(record))),
        passed_over=passed,
        lost_seconds=(datetime.now(UTC) - record.created_at).total_seconds(),
        lost_revisions=lost_revisions,
        live=live,
        ends=ends,
    )


_ACTIONS = {
    Kind.HOLD_CONTROL_PLANE: (
        "{nodes}: move the kube-apiserver, kube-controller-manager and kube-scheduler manifests out; wait until "
        "the apiservers stop",
        "read etcd's revision: the highest the cluster served",
    ),
    Kind.HOLD_ETCD: ("{nodes}: move etcd.yaml out; wait until every member stops",),
    Kind.RESTORE_ETCD: (
        "{nodes}: push {snapshot}.db (sha256 checked on the node), restore it into DATA.upgrader-RUN",
        "keep the old data directory as DATA.before-RUN until the rollback is verified",
    ),
    Kind.START_ETCD: ("{nodes}: put the snapshot's etcd.yaml back; wait for every member and one leader",),
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
    then = expectations.initial(prepared.snapshot.facts).kubelets
    out = []
    for position, step in enumerate(prepared.steps):
        kind = Kind(step["kind"])
        values = {
            "nodes": ", ".join(step.get("nodes", ())),
            "snapshot": prepared.snapshot.id,
            "version": version,
            "how": "one node at a time" if prepared.route is Route.WINDOW else "all at once",
        }
        actions = [text.format(**values) for text in _ACTIONS.get(kind, ())]
        if kind is Kind.KUBELETS:
            newer = sorted(n for n, v in prepared.live.kubelets.items() if v > version and n in then)
            actions += [f"{n}: drain, kubelet v{prepared.live.kubelets[n]} -> v{then[n]}, uncordon" for n in newer]
            actions += [] if newer else ["none is newer than the restored control plane allows"]
        out.append({"step": position + 1, **step, "actions": actions})
    return out


# -- running --------------------------------------------------------------------------------------------


def execute(
    cluster: session.ClusterSession,
    state: store.Store,
    prepared: Prepared,
    options: Options,
    *,
    lease: driver.Lease,
    observe: Callable[[driver.Event], None],
) -> records.RunRecord:
    run = state.create_run(
        run_id=apply.new_run_id(cluster.name),
        cluster=cluster.name,
        plan_id=None,
        kind=records.RunKind.ROLLBACK,
        steps=list(prepared.steps),
        host=socket.gethostname(),
        pid=os.getpid(),
        options={
            **options.as_dict(),
            "snapshot": prepared.snapshot.id,
            "route": prepared.route.value,
            "revision_at_start": prepared.live.revision,
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
    lease: driver.Lease,
    observe: Callable[[driver.Event], None],
) -> records.RunRecord:
    run = state.run(run_id)
    if run.kind is not records.RunKind.ROLLBACK:
        raise errors.Refused(f"run {run.id} is an {run.kind.value} run: resume it with `upgrader apply --resume`")
    if run.cluster != cluster.name:
        raise errors.Refused(f"run {run.id} belongs to cluster {run.cluster}, not {cluster.name}")
    if run.status.finished:
        raise errors.Refused(f"run {run.id} is {run.status.value}: there is nothing to resume")
    state.set_run(run.id, records.RunStatus.RUNNING, host=socket.gethostname(), pid=os.getpid())
    return _drive(cluster, state, state.run(run.id), options, lease=lease, observe=observe)


def _drive(
    cluster: session.ClusterSession,
    state: store.Store,
    run: records.RunRecord,
    options: Options,
    *,
    lease: driver.Lease,
    observe: Callable[[driver.Event], None],
) -> records.RunRecord:
    snapshot = state.snapshot(str(run.options["snapshot"]))
    journaling = apply.Journaling(state, cluster.name, run.id, observe)
    engine = driver.Driver(
        state,
        apply.ports(cluster, state, options.for_apply(), run.id),
        lease=lease,
        settings=driver.Settings(wait_timeout=options.wait_timeout),
        estimate=apply.estimator(state, cluster.name),
        observe=journaling,
        cancel=cluster.cancel,
        facts=snapshot.facts,
    )
    hint = f"`upgrader rollback --resume {run.id} -c CLUSTER.yaml`"
    try:
        apply.wait_for_leftovers(cluster, journaling)
        failed = _verified(state, snapshot)  # the files are read again: never restore from a damaged copy
        if failed:
            raise errors.Refused(f"snapshot {snapshot.id} fails verification now ({failed}); the run cannot go on")
        Steps(cluster, state, run=run, snapshot=snapshot, options=options, engine=engine).run()
    except KeyboardInterrupt:
        raise RollbackStopped(
            f"rollback {run.id} interrupted; continue with {hint}", state.run(run.id), errors.ExitCode.NEEDS_HUMAN
        ) from None
    except errors.UpgraderError as exc:
        code = errors.ExitCode.NEEDS_HUMAN if isinstance(exc, errors.LockLost) else errors.ExitCode.FAILURE
        if state.run(run.id).status is records.RunStatus.RUNNING:  # failed before any step started
            state.set_run(run.id, records.RunStatus.FAILED, error=exc.message, at=datetime.now(UTC))
        raise RollbackStopped(
            f"rollback {run.id} stopped: {exc.message}; after fixing it, {hint}", state.run(run.id), code
        ) from exc
    ended = run.options.get("ends_run")
    if ended:
        state.set_run(
            str(ended),
            records.RunStatus.ROLLED_BACK,
            stopped_reason=f"rolled back to snapshot {snapshot.id} by run {run.id}",
            at=datetime.now(UTC),
        )
    return state.run(run.id)


class Steps:
    """The rollback's steps on one cluster; each is safe to run again after a kill."""

    def __init__(
        self,
        cluster: session.ClusterSession,
        state: store.Store,
        *,
        run: records.RunRecord,
        snapshot: records.SnapshotRecord,
        options: Options,
        engine: driver.Driver,
    ) -> None:
        self.cluster = cluster
        self.state = state
        self.run_record = run
        self.snapshot = snapshot
        self.options = options
        self.engine = engine
        self.archived = snapshots.archive_members(snapshot)
        self.hosts = control_plane_hosts(self.archived)
        self.version = snapshot_version(snapshot)
        self.route = Route(str(run.options["route"]))
        recorder = apply.task_recorder(state, cluster.name, run.id)
        self.rollout = rollout.Rollout(cluster, writes.Writer(cluster.api), recorder)
        self.probe = gates.Live(cluster, catalog_mod.load())

    @property
    def run_id(self) -> records.RunId:
        return self.run_record.id

    def run(self) -> None:
        engine = self.engine
        engine.start(self.run_record, [self.describe(s.spec) for s in self.run_record.steps])
        for record in self.run_record.steps:
            if record.status in (records.StepStatus.SUCCEEDED, records.StepStatus.SKIPPED):
                continue
            engine.lease.check()
            act = functools.partial(self._handler(Kind(record.kind)), record)
            engine.journaled(self.run_id, record.position, self.describe(record.spec), act)
        engine.succeed(self.run_id)

    def describe(self, spec: Mapping[str, Any]) -> str:
        kind = Kind(str(spec["kind"]))
        text = DESCRIPTIONS[kind]
        if kind is Kind.CONTROL_PLANE:
            text = f"kubeadm v{spec['version']} and the snapshot's control-plane manifests"
        return f"{kind.value}: {text}"

    def _handler(self, kind: Kind) -> Callable[[records.StepRecord], None]:
        return {
            Kind.HOLD_CONTROL_PLANE: self.hold_control_plane,
            Kind.HOLD_ETCD: self.hold_etcd,
            Kind.RESTORE_ETCD: self.restore_etcd,
            Kind.START_ETCD: self.start_etcd,
            Kind.REVISION: self.advance_revision,
            Kind.KUBEADM_CONFIG: self.kubeadm_config,
            Kind.CONTROL_PLANE: self.control_plane,
            Kind.KUBELETS: self.kubelets,
            Kind.VERIFY: self.verify,
            Kind.CLEAN_UP: self.clean_up,
        }[kind]

    # -- helpers --------------------------------------------------------------------------------------

    def _event(self, kind: str, message: str, position: int, node: str | None = None, **data: Any) -> None:
        self.engine.observe(driver.Event(kind, message, position=position, node=node, data=data))

    def _playbook(self, position: int, playbook: str, variables: dict[str, Any], nodes: list[str]) -> Any:
        for node in nodes:
            self._event("node-playbook", f"{node}: {playbook}", position, node)
        return self.rollout.run(playbook, tuple(nodes), {"run": self.run_id, **variables})

    def _detail(self, position: int) -> dict[str, Any]:
        return self.state.step(self.run_id, position).detail

    def _hold(self, position: int, components: tuple[str, ...]) -> None:
        self._playbook(position, "rollback-hold.yml", {"components": list(components)}, self.hosts)

    # -- full restore ---------------------------------------------------------------------------------

    def hold_control_plane(self, record: records.StepRecord) -> None:
        position = record.position
        self._hold(position, STOPPED)
        for host in self.hosts:
            address = _apiserver_endpoint(self.archived[f"{host}/manifests/kube-apiserver.yaml"])
            self._event("node-waiting", f"{host}: waiting for its apiserver to stop", position, host)
            self.engine.wait(lambda a=address: not _answers(*a), f"the apiserver on {host} to stop")  # type: ignore[misc]
            self.engine.node_done(self.run_id, position, host, "apiserver stopped")
        earlier = self._detail(position).get("highest_revision")
        try:
            served: int | None = self.cluster.etcd.revision()
        except errors.UpgraderError as exc:
            # etcd stopped answering after the rollback was prepared: what it served then, with a margin
            start = self.run_record.options.get("revision_at_start")
            served = int(start) + BUMP_MARGIN if start is not None else None
            if served is None and earlier is None and not self.options.allow_revision_regression:
                raise driver.StepFailed(
                    f"etcd does not answer ({exc.message}), so the highest revision served cannot be read; "
                    "fix etcd, or go on with --allow-revision-regression"
                ) from exc
        values = [int(v) for v in (served, earlier) if v is not None]
        highest = max(values) if values else None
        self.state.step_progress(self.run_id, position, {"highest_revision": highest})

    def hold_etcd(self, record: records.StepRecord) -> None:
        position = record.position
        self._hold(position, ("etcd",))
        for host, member in etcd_members(self.archived).items():
            for url in member["client_urls"].split(","):
                self._event("node-waiting", f"{host}: waiting for etcd to stop", position, host)
                self.engine.wait(lambda u=url: not _answers(*_address(u)), f"etcd on {host} to stop")  # type: ignore[misc]
            self.engine.node_done(self.run_id, position, host, "etcd stopped")

    def _highest(self) -> int | None:
        for step in self.state.run(self.run_id).steps:
            if step.kind == Kind.HOLD_CONTROL_PLANE.value and step.detail.get("highest_revision") is not None:
                return int(step.detail["highest_revision"])
        return None

    def restore_etcd(self, record: records.StepRecord) -> None:
        position = record.position
        members = etcd_members(self.archived)
        highest = self._highest()
        gap = (highest - (self.snapshot.etcd_revision or 0)) if highest is not None else 0
        result = self._playbook(
            position,
            "rollback-etcd.yml",
            {
                "snapshot_file": self.snapshot.etcd_path,
                "snapshot_name": f"{self.snapshot.id}.db",
                "snapshot_sha256": etcd_snapshot.file_sha256(Path(self.snapshot.etcd_path)),  # the file, trailer too
                "members": {h: {k: m[k] for k in ("member", "peer_urls", "data_dir")} for h, m in members.items()},
                "initial_cluster": ",".join(
                    f"{m['member']}={url}" for m in members.values() for url in m["peer_urls"].split(",")
                ),
                "cluster_token": f"upgrader-{self.run_id[-6:]}",
                "bump": max(gap, 0) + BUMP_MARGIN,
            },
            self.hosts,
        )
        printed = result.by_host("upgrader: restore etcd")
        bumped = all("bumps=yes" in str(printed.get(h, {}).get("stdout", "")) for h in self.hosts)
        self.state.step_progress(self.run_id, position, {"bumped_by_restore": bumped})
        for host in self.hosts:
            self.engine.node_done(self.run_id, position, host, "restored (old data kept aside)")

    def start_etcd(self, record: records.StepRecord) -> None:
        position = record.position
        self._place(position, self.hosts, ("etcd",), install_kubeadm=False)
        members = etcd_members(self.archived)
        urls = [url for m in members.values() for url in m["client_urls"].split(",")]

        def healthy() -> bool:
            leaders = set()
            for url in urls:
                try:
                    leaders.add(self.cluster.etcd.status_of(url)[1])
                except errors.UpgraderError:
                    return False
            return len(leaders) == 1 and None not in leaders

        self._event("node-waiting", "waiting for every etcd member and a leader", position)
        self.engine.wait(healthy, "every etcd member to answer with one leader")
        count = len(self.cluster.etcd.members())
        if count != len(members):
            raise driver.StepFailed(f"the restored etcd has {count} members, the snapshot's {len(members)}")
        for host in self.hosts:
            self.engine.node_done(self.run_id, position, host, "etcd started")

    def advance_revision(self, record: records.StepRecord) -> None:
        position = record.position
        restore = next(s for s in self.state.run(self.run_id).steps if s.kind == Kind.RESTORE_ETCD.value)
        highest = self._highest()
        if restore.detail.get("bumped_by_restore"):
            now = self.cluster.etcd.revision()
            self.state.step_progress(self.run_id, position, {"how": "etcdutl --bump-revision", "revision": now})
            return
        limit = self.cluster.cfg.etcd.max_revision_gap
        if highest is None or (
            self.options.allow_revision_regression and highest + 1 - self.cluster.etcd.revision() > limit
        ):
            self.state.step_progress(self.run_id, position, {"how": "not moved (--allow-revision-regression)"})
            self.state.record_event(
                kind="revision-regression",
                cluster=self.cluster.name,
                run_id=self.run_id,
                level=records.EventLevel.WARNING,
                message="the revision was not moved past the highest served: clients may see it go backwards; "
                "every control-plane component and kubelet is restarted so their caches list again",
                data={"highest_served": highest},
            )
            return

        def progress(done: int, total: int) -> None:
            self._event("revision-progress", f"{done} of {total} revisions written", position, done=done, total=total)

        moved = revisions.advance_past(self.cluster.etcd, highest, max_gap=limit, progress=progress)
        self.state.step_progress(
            self.run_id,
            position,
            {"how": "no-op writes", "from": moved.start, "revision": moved.reached, "seconds": round(moved.seconds, 1)},
        )

    # -- both routes ----------------------------------------------------------------------------------

    def _place(self, position: int, hosts: list[str], names: tuple[str, ...] | None, *, install_kubeadm: bool) -> None:
        variables = {
            **rendering.package_vars(self.cluster.cfg.packages, self.version),
            "install_kubeadm": install_kubeadm,
            "manifests": {h: _manifest_tar(self.archived, h, names) for h in hosts},
        }
        self._playbook(position, "rollback-control-plane.yml", variables, hosts)

    def kubeadm_config(self, record: records.StepRecord) -> None:
        text = self.archived.get("cluster-configuration.yaml", b"").decode()
        if not text.strip():
            raise driver.StepFailed(f"snapshot {self.snapshot.id} has no kubeadm ClusterConfiguration to put back")
        changed = writes.Writer(self.cluster.api).edit_cluster_configuration(lambda _: text)
        self.state.step_progress(self.run_id, record.position, {"changed": changed})

    def control_plane(self, record: records.StepRecord) -> None:
        position = record.position
        wanted = (self.version, self.version.minor_version)
        if self.route is Route.WINDOW:
            batches = [[host] for host in self.hosts]  # one at a time: the others keep serving
            names: tuple[str, ...] | None = None  # every manifest (etcd's only changes within its minor)
        else:
            batches = [self.hosts]  # nothing serves yet: all at once
            names = STOPPED
        for batch in batches:
            self.engine.lease.check()
            self._place(position, batch, names, install_kubeadm=True)
            for host in batch:
                self._event("node-waiting", f"{host}: waiting for its apiserver at v{self.version}", position, host)
                self.engine.wait(
                    lambda h=host: self.probe.apiserver(h) == wanted,  # type: ignore[misc]
                    f"the apiserver on {host} to serve v{self.version}",
                )
                self.engine.node_done(self.run_id, position, host, f"v{self.version}")

    def kubelets(self, record: records.StepRecord) -> None:
        """Every kubelet newer than the restored control plane goes back to the snapshot's version for its
        node, drained as apply drains: control-plane nodes one at a time, then workers by max_unavailable.
        A node this step cordoned in an earlier attempt is taken up again so it is uncordoned."""
        position = record.position
        then = expectations.initial(self.snapshot.facts).kubelets
        ours = {k.removeprefix(driver.CORDONED) for k in record.detail if k.startswith(driver.CORDONED)}
        if self.route is Route.FULL_RESTORE:
            # The restored Node objects say what the snapshot said: ask the nodes, then wait until each one
            # to change has posted its real status (a write after the restore), so drains and waits read it.
            running = {n: v for n, v in live_facts.installed_kubelets(self.cluster).items() if v is not None}
            todo = sorted(n for n, v in running.items() if v > self.version and n in then) + sorted(ours)
            self._wait_for_status(position, todo)
        else:
            running = dict(verification.live_versions(self.probe).kubelets)
            todo = sorted(n for n, v in running.items() if v > self.version and n in then) + sorted(ours)
        if self.options.allow_revision_regression and any(
            s.detail.get("how", "").startswith("not moved") for s in self.state.run(self.run_id).steps
        ):
            self._playbook(position, "rollback-restart-kubelets.yml", {}, sorted(running))
        if not todo:
            self.state.step_progress(self.run_id, position, {"nodes": "none newer than allowed"})
            return
        control_plane = set(self.hosts)
        size = MaxUnavailable.parse(self.cluster.cfg.upgrade.max_unavailable).batch_size(
            len([n for n in then if n not in control_plane])
        )
        by_version: dict[Version, list[str]] = {}
        for node in dict.fromkeys(todo):
            by_version.setdefault(then[node], []).append(node)
        for version, nodes in sorted(by_version.items()):
            batches = [[n] for n in nodes if n in control_plane]
            workers = [n for n in nodes if n not in control_plane]
            batches += [workers[i : i + size] for i in range(0, len(workers), size)]
            for batch in batches:
                self.engine.batch(self.run_id, position, tuple(batch), version)

    def _wait_for_status(self, position: int, nodes: list[str]) -> None:
        since = max(
            [int(s.detail.get("revision", 0)) for s in self.state.run(self.run_id).steps if s.kind == Kind.REVISION]
            + [self.snapshot.etcd_revision or 0]
        )

        def posted(node: str) -> bool:
            try:
                found = {n.name: n for n in self.cluster.api.nodes()}.get(node)
            except errors.UpgraderError:
                return False
            return found is not None and found.revision > since

        for node in nodes:
            self._event("node-waiting", f"{node}: waiting for its kubelet to post its status", position, node)
            self.engine.wait(lambda n=node: posted(n), f"{node}'s kubelet to post its status after the restore")  # type: ignore[misc]

    def verify(self, record: records.StepRecord) -> None:
        """``verify --against`` the snapshot, again until it passes or the wait runs out (nodes report Ready
        a heartbeat after their kubelet restarts)."""
        position = record.position
        deadline = time.monotonic() + self.options.wait_timeout
        while True:
            verdict = verification.against(self.cluster, self.state, self.snapshot.id)
            if verdict.ok or time.monotonic() > deadline:
                break
            if self.cluster.cancel.is_set():
                raise KeyboardInterrupt("canceled")
            time.sleep(3.0)
        self.state.step_progress(self.run_id, position, {"verified": verdict.ok, "verdict": verdict.as_dict()})
        self.state.record_event(
            kind="rollback-verified" if verdict.ok else "rollback-verify-failed",
            cluster=self.cluster.name,
            run_id=self.run_id,
            level=records.EventLevel.INFO if verdict.ok else records.EventLevel.ERROR,
            message=f"the cluster {'matches' if verdict.ok else 'does not match'} snapshot {self.snapshot.id}",
            data=verdict.as_dict(),
        )
        if not verdict.ok:
            first = verdict.failures[0]
            raise driver.StepFailed(f"the cluster does not match snapshot {self.snapshot.id}: {first.detail}")

    def clean_up(self, record: records.StepRecord) -> None:
        full = self.route is Route.FULL_RESTORE
        data_dirs = {h: m["data_dir"] for h, m in etcd_members(self.archived).items()} if full else {}
        self._playbook(
            record.position,
            "rollback-clean-up.yml",
            {"data_dirs": data_dirs, "snapshot_name": f"{self.snapshot.id}.db"},
            self.hosts,
        )
        for host in self.hosts:
            self.engine.node_done(self.run_id, record.position, host, "cleaned up")
