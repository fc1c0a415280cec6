"""The steps of a rollback run on one cluster; each is safe to run again after a kill."""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

from upgrader import errors
from upgrader.core import config
from upgrader.core.planner.model import MaxUnavailable
from upgrader.core.tier import Tier
from upgrader.core.versions import Version
from upgrader.engine import driver, expectations, ports
from upgrader.engine.batches import NodeBatches
from upgrader.engine.ports import Expected
from upgrader.executor import rendering
from upgrader.snapshots import local
from upgrader.state import records
from upgrader.usecases.rollback.archive import (
    apiserver_endpoint,
    control_plane_hosts,
    etcd_as_service,
    etcd_members,
    manifest_tar,
)
from upgrader.usecases.rollback.model import BUMP_MARGIN, DESCRIPTIONS, STOPPED, Kind, Options, Route, snapshot_version
from upgrader.usecases.rollback.ports import Ports


def _address(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    return parts.hostname or "", parts.port or 2379


@dataclass(frozen=True)
class _Handler:
    """A rollback step kind on the engine: described and acted by ``Steps``; no gate (the last step
    verifies the whole cluster against the snapshot)."""

    describe_spec: Callable[[Mapping[str, Any]], str]
    act_on: Callable[[records.StepRecord], None]

    def describe(self, record: records.StepRecord) -> str:
        return self.describe_spec(record.spec)

    def act(self, record: records.StepRecord) -> None:
        self.act_on(record)

    def expected(self, record: records.StepRecord) -> Expected | None:
        return None


class Steps:
    """The rollback's steps on one cluster; each is safe to run again after a kill."""

    def __init__(
        self,
        cfg: config.ClusterConfig,
        ports: Ports,
        *,
        run: records.RunRecord,
        snapshot: records.SnapshotRecord,
        options: Options,
        engine: driver.Driver,
    ) -> None:
        self.cfg = cfg
        self.ports = ports
        self.then = expectations.initial(local.facts_of(snapshot))  # parsed once, for every step
        self.run_record = run
        self.snapshot = snapshot
        self.options = options
        self.engine = engine
        self.archived = local.archive_members(snapshot)
        self.hosts = control_plane_hosts(self.archived)
        self.version = snapshot_version(snapshot)
        self.route = Route(str(run.options["route"]))
        self.batches = NodeBatches(engine, ports.drainer, ports.probe, ports.kubelets)

    @property
    def run_id(self) -> records.RunId:
        return self.run_record.id

    def run(self) -> driver.Outcome:
        return self.engine.run(self.run_record, self.handlers(), before_success=self._end_apply_run)

    def _end_apply_run(self) -> None:
        """The apply run this rollback ends is marked rolled back before this run succeeds: a kill in
        between leaves this run to resume, which marks it again."""
        ended = self.run_record.options.get("ends_run")
        if ended:
            self.engine.journal.set_run(
                str(ended),
                records.RunStatus.ROLLED_BACK,
                stopped_reason=f"rolled back to snapshot {self.snapshot.id} by run {self.run_id}",
                at=datetime.now(UTC),
            )

    def handlers(self) -> driver.Handlers:
        acts: dict[Kind, Callable[[records.StepRecord], None]] = {
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
        }
        return {kind.value: _Handler(self.describe, act) for kind, act in acts.items()}

    def describe(self, spec: Mapping[str, Any]) -> str:
        kind = Kind(str(spec["kind"]))
        text = DESCRIPTIONS[kind]
        if kind is Kind.CONTROL_PLANE:
            text = f"kubeadm v{spec['version']} and the snapshot's control-plane manifests"
        return f"{kind.value}: {text}"

    # -- helpers --------------------------------------------------------------------------------------

    def _event(self, kind: str, message: str, position: int, node: str | None = None, **data: Any) -> None:
        self.engine.event(kind, message, position, node, **data)

    def _progress(self, position: int, detail: Mapping[str, Any]) -> None:
        self.engine.progress(self.run_id, position, detail)

    def _playbook(self, position: int, playbook: str, nodes: list[str]) -> None:
        for node in nodes:
            self._event("node-playbook", f"{node}: {playbook}", position, node)

    def _detail(self, position: int) -> dict[str, Any]:
        return self.engine.journal.step(self.run_id, position).detail

    def _found(self, kind: Kind) -> Mapping[str, Any]:
        """What this run's step of ``kind`` recorded: the journal is where a step leaves its results for
        the later ones, so a resumed run (another process) finds them too."""
        step = next((s for s in self.engine.journal.run(self.run_id).steps if s.kind == kind.value), None)
        return step.detail if step is not None else {}

    def _hold(self, position: int, components: tuple[str, ...]) -> None:
        self._playbook(position, "rollback-hold.yml", self.hosts)
        self.ports.nodes.hold(self.hosts, components)

    # -- full restore ---------------------------------------------------------------------------------

    def hold_control_plane(self, record: records.StepRecord) -> None:
        position = record.position
        self._hold(position, STOPPED)
        for host in self.hosts:
            address = apiserver_endpoint(self.archived[f"{host}/manifests/kube-apiserver.yaml"])
            self._event("node-waiting", f"{host}: waiting for its apiserver to stop", position, host)
            self.engine.wait(lambda a=address: not self.ports.cluster.answers(*a), f"the apiserver on {host} to stop")  # type: ignore[misc]
            self.engine.node_done(self.run_id, position, host, "apiserver stopped")
        earlier = self._detail(position).get("highest_revision")
        try:
            served: int | None = self.ports.etcd.revision()
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
        self._progress(position, {"highest_revision": highest})

    @functools.cached_property
    def members(self) -> dict[str, dict[str, str]]:
        """Each etcd host's member, read (and checked) from the archive once: only a full restore asks."""
        return etcd_members(self.archived)

    @property
    def etcd_hosts(self) -> list[str]:
        """The hosts a full restore rebuilds etcd on: the control planes (kubeadm's static pods), or the
        hosts in the snapshot's /etc/etcd.env files (etcd as a service)."""
        return sorted(self.members)

    def hold_etcd(self, record: records.StepRecord) -> None:
        position = record.position
        if etcd_as_service(self.archived):
            self._playbook(position, "rollback-etcd-service.yml", self.etcd_hosts)
            self.ports.nodes.etcd_service(self.etcd_hosts, "stop")
        else:
            self._hold(position, ("etcd",))
        for host, member in self.members.items():
            # A stopping member closes its client port first and its peer port last, once its data is
            # closed (after a leadership transfer that can take seconds): both must refuse.
            self._event("node-waiting", f"{host}: waiting for etcd to stop", position, host)
            for url in [*member["client_urls"].split(","), *member["peer_urls"].split(",")]:
                self.engine.wait(
                    lambda u=url: not self.ports.cluster.answers(*_address(u)),  # type: ignore[misc]
                    f"etcd on {host} to stop ({url})",
                )
            self.engine.node_done(self.run_id, position, host, "etcd stopped")

    def _highest(self) -> int | None:
        highest = self._found(Kind.HOLD_CONTROL_PLANE).get("highest_revision")
        return int(highest) if highest is not None else None

    def restore_etcd(self, record: records.StepRecord) -> None:
        position = record.position
        members = self.members
        highest = self._highest()
        gap = (highest - (self.snapshot.etcd_revision or 0)) if highest is not None else 0
        self._playbook(position, "rollback-etcd.yml", self.etcd_hosts)
        bumps = self.ports.nodes.restore_etcd(
            self.etcd_hosts,
            {
                "snapshot_file": self.snapshot.etcd_path,
                "snapshot_name": f"{self.snapshot.id}.db",
                "snapshot_sha256": self.snapshot.etcd_file_sha256,  # the whole file, trailer too
                "members": {h: {k: m[k] for k in ("member", "peer_urls", "data_dir")} for h, m in members.items()},
                "initial_cluster": ",".join(
                    f"{m['member']}={url}" for m in members.values() for url in m["peer_urls"].split(",")
                ),
                "cluster_token": f"upgrader-{self.run_id[-6:]}",
                "bump": max(gap, 0) + BUMP_MARGIN,
            },
        )
        bumped = all(bumps.get(h, False) for h in self.etcd_hosts)
        self._progress(position, {"bumped_by_restore": bumped})
        for host in self.etcd_hosts:
            self.engine.node_done(self.run_id, position, host, "restored (old data kept aside)")

    def start_etcd(self, record: records.StepRecord) -> None:
        position = record.position
        if etcd_as_service(self.archived):
            self._playbook(position, "rollback-etcd-service.yml", self.etcd_hosts)
            self.ports.nodes.etcd_service(self.etcd_hosts, "start")
        else:
            self._place(position, self.hosts, ("etcd",), install_kubeadm=False)
        members = self.members
        urls = [url for m in members.values() for url in m["client_urls"].split(",")]

        def healthy() -> bool:
            leaders = set()
            for url in urls:
                try:
                    leaders.add(self.ports.etcd.leader_seen_by(url))
                except errors.UpgraderError:
                    return False
            return len(leaders) == 1 and None not in leaders

        self._event("node-waiting", "waiting for every etcd member and a leader", position)
        self.engine.wait(healthy, "every etcd member to answer with one leader")
        count = self.ports.etcd.member_count()
        if count != len(members):
            raise driver.StepFailed(f"the restored etcd has {count} members, the snapshot's {len(members)}")
        for host in self.etcd_hosts:
            self.engine.node_done(self.run_id, position, host, "etcd started")

    def advance_revision(self, record: records.StepRecord) -> None:
        position = record.position
        highest = self._highest()
        if self._found(Kind.RESTORE_ETCD).get("bumped_by_restore"):
            now = self.ports.etcd.revision()
            if highest is not None and now <= highest:
                raise driver.StepFailed(f"the restore bumped etcd to revision {now}, not above {highest} served")
            self._progress(position, {"how": "etcdutl --bump-revision", "revision": now})
            return
        limit = self.cfg.etcd.max_revision_gap
        if highest is None or (
            self.options.allow_revision_regression and highest + 1 - self.ports.etcd.revision() > limit
        ):
            self._progress(position, {"how": "not moved (--allow-revision-regression)"})
            self.engine.observe(
                ports.Event(
                    "revision-regression",
                    "the revision was not moved past the highest served: clients may see it go backwards; "
                    "every control-plane component and kubelet is restarted so their caches list again",
                    position=position,
                    data={"highest_served": highest},
                    level=records.EventLevel.WARNING,
                )
            )
            return

        def progress(done: int, total: int) -> None:
            self._event("revision-progress", f"{done} of {total} revisions written", position, done=done, total=total)

        moved = self.ports.etcd.advance_past(highest, max_gap=limit, progress=progress)
        self._progress(
            position,
            {"how": "no-op writes", "from": moved.start, "revision": moved.reached, "seconds": round(moved.seconds, 1)},
        )

    # -- both routes ----------------------------------------------------------------------------------

    def _place(self, position: int, hosts: list[str], names: tuple[str, ...] | None, *, install_kubeadm: bool) -> None:
        variables = {
            **rendering.package_vars(self.cfg.packages, self.version),
            "install_kubeadm": install_kubeadm,
            "manifests": {h: manifest_tar(self.archived, h, names) for h in hosts},
        }
        self._playbook(position, "rollback-control-plane.yml", hosts)
        self.ports.nodes.place(hosts, variables)

    def kubeadm_config(self, record: records.StepRecord) -> None:
        text = self.archived.get("cluster-configuration.yaml", b"").decode()
        if not text.strip():
            raise driver.StepFailed(f"snapshot {self.snapshot.id} has no kubeadm ClusterConfiguration to put back")
        changed = self.ports.cluster.put_cluster_configuration(text)
        self._progress(record.position, {"changed": changed})

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
                    lambda h=host: self.ports.probe.apiserver(h) == wanted,  # type: ignore[misc]
                    f"the apiserver on {host} to serve v{self.version}",
                )
                self.engine.node_done(self.run_id, position, host, f"v{self.version}")

    def kubelets(self, record: records.StepRecord) -> None:
        """Every kubelet newer than the restored control plane goes back to the snapshot's version for its
        node, drained as apply drains: control-plane nodes (together after a full restore, else one at a
        time), then workers by max_unavailable.
        A node this step cordoned in an earlier attempt is taken up again so it is uncordoned."""
        position = record.position
        then = self.then.kubelets
        ours = {k.removeprefix(ports.CORDONED) for k in record.detail if k.startswith(ports.CORDONED)}
        if self.route is Route.FULL_RESTORE:
            # The restored Node objects say what the snapshot said: ask the nodes, then wait until each one
            # to change has posted its real status (a write after the restore), so drains and waits read it.
            running = {n: v for n, v in self.ports.cluster.installed_kubelets().items() if v is not None}
            todo = sorted(n for n, v in running.items() if v > self.version and n in then) + sorted(ours)
            self._wait_for_status(position, todo)
        else:
            running = dict(self.ports.cluster.running_kubelets())
            todo = sorted(n for n, v in running.items() if v > self.version and n in then) + sorted(ours)
        if self.options.allow_revision_regression and str(self._found(Kind.REVISION).get("how", "")).startswith(
            "not moved"
        ):
            self._playbook(position, "rollback-restart-kubelets.yml", sorted(running))
            self.ports.nodes.restart_kubelets(sorted(running))
        if not todo:
            self._progress(position, {"nodes": "none newer than allowed"})
            return
        control_plane = set(self.hosts)
        size = MaxUnavailable.parse(self.cfg.upgrade.max_unavailable).batch_size(
            len([n for n in then if n not in control_plane])
        )
        by_version: dict[Version, list[str]] = {}
        for node in dict.fromkeys(todo):
            by_version.setdefault(then[node], []).append(node)
        for version, nodes in sorted(by_version.items()):
            masters = [n for n in nodes if n in control_plane]
            # After a full restore the control plane has just come back on every node: its kubelets go
            # back together. In the window the control plane serves: one node at a time, as apply does.
            batches = [masters] if masters and self.route is Route.FULL_RESTORE else [[n] for n in masters]
            workers = [n for n in nodes if n not in control_plane]
            batches += [workers[i : i + size] for i in range(0, len(workers), size)]
            for batch in batches:
                self.batches.run(self.run_id, position, tuple(batch), version)

    def _wait_for_status(self, position: int, nodes: list[str]) -> None:
        since = max(int(self._found(Kind.REVISION).get("revision", 0)), self.snapshot.etcd_revision or 0)

        def posted(node: str) -> bool:
            revision = self.ports.cluster.node_revision(node)
            return revision is not None and revision > since

        for node in nodes:
            self._event("node-waiting", f"{node}: waiting for its kubelet to post its status", position, node)
            self.engine.wait(lambda n=node: posted(n), f"{node}'s kubelet to post its status after the restore")  # type: ignore[misc]

    def verify(self, record: records.StepRecord) -> None:
        """``verify --against`` the snapshot, once what the API shows has settled (nodes report Ready a
        heartbeat after their kubelet restarts), and again until it passes or the wait runs out. The
        snapshot is not hashed again: the run checked it before it restored from it."""
        position = record.position
        deadline = time.monotonic() + self.engine.settings.wait_timeout
        while True:
            if not self.ports.cluster.settled(self.snapshot.id) and time.monotonic() < deadline:
                self._pause(min(1.0, deadline - time.monotonic()))
                continue
            verdict = self.ports.cluster.verify(self.snapshot.id)
            if verdict.ok or time.monotonic() >= deadline:
                break
            self._pause(min(3.0, deadline - time.monotonic()))
        self._progress(position, {"verified": verdict.ok, "verdict": dict(verdict.detail)})
        self.engine.observe(
            ports.Event(
                "rollback-verified" if verdict.ok else "rollback-verify-failed",
                f"the cluster {'matches' if verdict.ok else 'does not match'} snapshot {self.snapshot.id}",
                position=position,
                data=verdict.detail,
            )
        )
        if not verdict.ok:
            raise driver.StepFailed(f"the cluster does not match snapshot {self.snapshot.id}: {verdict.first_failure}")

    def _pause(self, seconds: float) -> None:
        if self.engine.cancel.wait(max(seconds, 0.0)):
            raise KeyboardInterrupt("canceled")

    def clean_up(self, record: records.StepRecord) -> None:
        full = self.route is Route.FULL_RESTORE
        data_dirs = {h: m["data_dir"] for h, m in self.members.items()} if full else {}
        # With the peer tier configured, the copy each control plane restored from stays: that tier's copy.
        peer_tier = Tier.PEER in self.cfg.snapshots.tiers
        hosts = sorted({*self.hosts, *data_dirs})  # the control planes, and etcd's own hosts after a restore
        self._playbook(record.position, "rollback-clean-up.yml", hosts)
        self.ports.nodes.clean_up(
            hosts,
            {
                "data_dirs": data_dirs,
                "snapshot_name": f"{self.snapshot.id}.db",
                # the peer tier's copies live on the control planes only: an etcd host's pushed copy goes
                "keep_snapshot_on": list(self.hosts) if peer_tier else [],
            },
        )
        for host in hosts:
            self.engine.node_done(self.run_id, record.position, host, "cleaned up")
