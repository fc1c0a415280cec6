"""``upgrader apply`` on the lab: the same playbooks, Kubernetes client and etcd client a real cluster gets."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from tests.e2e.conftest import Labs, descendants, wait_for
from upgrader import cli
from upgrader.core.versions import Version
from upgrader.kube import cluster as kube
from upgrader.lab import mirror, topology
from upgrader.state import records, store

pytestmark = pytest.mark.slow
cli_runner = CliRunner()


def invoke(*args: str) -> Result:
    return cli_runner.invoke(cli.app, list(args))


def why(result: Result) -> str:
    """The output, and the traceback of an unexpected exception (a bug), for an assertion message."""
    import traceback

    trace = "".join(traceback.format_exception(*result.exc_info)) if result.exc_info else ""
    return result.output + ("" if isinstance(result.exception, SystemExit) else trace)


def kubelets(lab: topology.Lab) -> dict[str, str]:
    api = kube.Cluster.connect(lab.kubeconfig)
    try:
        return {n.name: n.kubelet for n in api.nodes()}
    finally:
        api.close()


def test_a_kubelet_reports_its_new_version_only_after_a_restart(shared_lab: topology.Lab) -> None:
    root = shared_lab.root("w-3")
    mirror.install(shared_lab.mirror_dir, Version.parse("1.30.14"), root, ("kubelet",))
    try:
        time.sleep(2.5)  # more than a heartbeat: the Node must still say what is running
        assert kubelets(shared_lab)["w-3"] == "v1.30.6"
        restart = subprocess.run([str(root / "usr" / "bin" / "systemctl"), "restart", "kubelet"], check=False)
        assert restart.returncode == 0
        wait_for(lambda: kubelets(shared_lab)["w-3"] == "v1.30.14", timeout=10, what="w-3 at v1.30.14")
    finally:
        mirror.install(shared_lab.mirror_dir, Version.parse("1.30.6"), root, ("kubelet",))
        subprocess.run([str(root / "usr" / "bin" / "systemctl"), "restart", "kubelet"], check=True)
    wait_for(lambda: kubelets(shared_lab)["w-3"] == "v1.30.6", timeout=10, what="w-3 back at v1.30.6")


def test_apply_upgrades_a_small_cluster_one_minor_with_a_two_step_hop(labs: Labs, tmp_path: Path) -> None:
    lab = labs.up("apply1", version="1.31.13", control_planes=1, workers=1)
    cluster_yaml = str(lab.dir / "cluster.yaml")
    db_url = f"sqlite:///{tmp_path / 'state.db'}"
    planned = invoke("plan", "-c", cluster_yaml, "--to", "1.32", "--save", "--db", db_url, "-o", "json")
    assert planned.exit_code == 0, planned.output
    plan = json.loads(planned.stdout)
    kinds = [s["kind"] for s in plan["steps"]]
    assert "emulation-commit" in kinds, kinds
    applied = invoke("apply", plan["id"], "-c", cluster_yaml, "--db", db_url, "--yes", "--log-format", "json")
    assert applied.exit_code == 0, why(applied)
    # automation reads one JSON object per line on stdout: the outline, every step and node, the end
    events = [json.loads(line) for line in applied.stdout.splitlines()]
    assert events[0]["event"] == "run-started" and len(events[0]["steps"]) == len(kinds)
    assert events[-1]["event"] == "run-succeeded"
    assert [e["step"] for e in events if e["event"] == "step-succeeded"] == list(range(len(kinds)))
    assert {e["event"] for e in events if e.get("node") == "w-1"} >= {"node-draining", "node-playbook", "node-done"}
    target = plan["target"]
    assert set(kubelets(lab).values()) == {f"v{target}"}
    with store.Store.open(db_url) as state:
        run = state.run(events[0]["run"])
        assert all(s.status is records.StepStatus.SUCCEEDED for s in run.steps)
        assert run.status is records.RunStatus.SUCCEEDED
        assert len([s for s in state.snapshots(lab.name) if s.known_good]) == kinds.count("snapshot")
        tasks = [e for e in state.events(cluster=lab.name, limit=1000) if e.kind == "ansible-task"]
    # every Ansible task of the run is in the journal, with its host and duration
    assert {(e.data["host"], e.data["task"]) for e in tasks} >= {
        ("cp-1", "upgrader: kubeadm upgrade apply"),
        ("w-1", "upgrader: restart the kubelet"),
    }
    assert all(e.run_id == run.id and e.data["seconds"] is not None for e in tasks)


def _in_terminal(args: list[str], env: dict[str, str], answer: str, timeout: float = 600) -> tuple[int, str]:
    """``upgrader ARGS`` with a pseudo-terminal for stdin, stdout and stderr, as an SRE runs it; the
    confirmation question is answered with ``answer``. Returns the exit code and everything drawn."""
    import pty
    import select
    import sys

    master, slave = pty.openpty()
    process = subprocess.Popen(
        [sys.executable, "-m", "upgrader", *args], stdin=slave, stdout=slave, stderr=slave, env=env, close_fds=True
    )
    os.close(slave)
    drawn, answered = b"", False
    deadline = time.monotonic() + timeout
    try:
        while True:
            ready, _, _ = select.select([master], [], [], 0.5)
            chunk = b""
            if ready:
                try:
                    chunk = os.read(master, 65536)
                except OSError:  # EIO: every writer has closed the terminal
                    chunk = b""
                drawn += chunk
            if not answered and b"[y/N]" in drawn:
                os.write(master, answer.encode() + b"\n")
                answered = True
            if not chunk and process.poll() is not None:
                break
            assert time.monotonic() < deadline, drawn.decode(errors="replace")[-2000:]
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(timeout=60)
        os.close(master)
    return process.returncode, drawn.decode(errors="replace")


def test_on_a_terminal_apply_asks_first_then_draws_live_progress(labs: Labs, tmp_path: Path) -> None:
    lab = labs.up("terminal", version="1.31.1", control_planes=1, workers=1)
    cluster_yaml = str(lab.dir / "cluster.yaml")
    db = ("--db", f"sqlite:///{tmp_path / 'state.db'}")
    planned = invoke("plan", "-c", cluster_yaml, "--to", "1.31.2", "--save", *db, "-o", "json")
    assert planned.exit_code == 0, planned.output
    plan_id = json.loads(planned.stdout)["id"]
    env = {**os.environ, "TERM": "xterm-256color", "COLUMNS": "120", "LINES": "40", "XDG_DATA_HOME": str(tmp_path)}
    code, drawn = _in_terminal(["apply", plan_id, "-c", cluster_yaml, *db], env, answer="n")
    assert code == 3 and "not confirmed; nothing was changed" in drawn, drawn
    assert json.loads(invoke("history", "-c", cluster_yaml, *db, "-o", "json").stdout) == {"runs": []}
    code, drawn = _in_terminal(["apply", plan_id, "-c", cluster_yaml, *db], env, answer="y")
    assert code == 0, drawn[-3000:]
    # the board was drawn and redrawn: steps with their marks and times, the nodes, elapsed and time left
    assert drawn.count("elapsed ") > 3 and "left" in drawn, drawn[-3000:]
    assert "✓" in drawn and "w-1" in drawn and "control-plane" in drawn
    assert "\x1b[" in drawn  # cursor movement: redrawn in place, not appended line by line
    assert set(kubelets(lab).values()) == {"v1.31.2"}


def _pdb_min_available(lab: topology.Lab, value: int) -> None:
    from kubernetes import client as k8s

    api = kube.Cluster.connect(lab.kubeconfig)
    try:
        k8s.PolicyV1Api(api.api).patch_namespaced_pod_disruption_budget(
            "web", "demo", {"spec": {"minAvailable": value}}, _content_type="application/merge-patch+json"
        )
    finally:
        api.close()


def _set_cordon(lab: topology.Lab, node: str, cordoned: bool) -> None:
    from upgrader.kube import writes

    api = kube.Cluster.connect(lab.kubeconfig)
    try:
        writes.Writer(api).set_unschedulable(node, cordoned)
    finally:
        api.close()


def _cordoned(lab: topology.Lab, *, strict: bool = True) -> set[str]:
    """The unschedulable nodes; with ``strict=False`` an apiserver restarting (a one-control-plane lab
    mid-hop) reads as none instead of raising."""
    api = kube.Cluster.connect(lab.kubeconfig)
    try:
        return {n.name for n in api.nodes() if n.unschedulable}
    except kube.KubeUnavailable:
        if strict:
            raise
        return set()
    finally:
        api.close()


def test_refusals_dry_run_window_pause_and_abandon(labs: Labs, tmp_path: Path) -> None:
    lab = labs.up("refusals", version="1.31.13", control_planes=1, workers=1)
    cluster_yaml = str(lab.dir / "cluster.yaml")
    db = ("--db", f"sqlite:///{tmp_path / 'state.db'}")
    plan_id = json.loads(invoke("plan", "-c", cluster_yaml, "--to", "1.32", "--save", *db, "-o", "json").stdout)["id"]

    # A plan with blockers is saved for review but never applied: w-1's kubelet four minors behind.
    facts = json.loads(invoke("facts", "-c", cluster_yaml, "-o", "json").stdout)
    next(n for n in facts["nodes"] if n["name"] == "w-1")["kubelet"] = "1.27.16"
    (tmp_path / "facts.json").write_text(json.dumps(facts))
    blocked = invoke("plan", "--facts", str(tmp_path / "facts.json"), "--to", "1.32", "--save", *db, "-o", "json")
    assert blocked.exit_code == 3, blocked.output
    refused = invoke("apply", json.loads(blocked.stdout)["id"], "-c", cluster_yaml, *db, "--yes")
    assert refused.exit_code == 3 and "has blockers (" in refused.stderr, refused.output

    # Another apply holds the cluster's lock: refused, naming the holder.
    with store.Store.open(db[1]) as state, state.lock(lab.name, "apply 0123456789ab"):
        locked = invoke("apply", plan_id, "-c", cluster_yaml, *db, "--yes")
    assert locked.exit_code == 3, locked.output
    assert f"cluster {lab.name} is locked by" in locked.stderr and "apply 0123456789ab" in locked.stderr

    dry = invoke("apply", plan_id, "-c", cluster_yaml, *db, "--dry-run", "-o", "json")
    assert dry.exit_code == 0, dry.output
    steps = json.loads(dry.stdout)["steps"]
    assert any("kubeadm upgrade apply v1.32" in a for s in steps for a in s["actions"])
    assert json.loads(invoke("history", "-c", cluster_yaml, *db, "-o", "json").stdout) == {"runs": []}  # none ran

    paused = invoke("apply", plan_id, "-c", cluster_yaml, *db, "--window", "5s", "--yes", "-o", "json")
    assert paused.exit_code == 6, paused.output
    body = json.loads(paused.stdout)
    assert body["status"] == "paused" and "the window has" in body["stopped_reason"]
    assert {s["status"] for s in body["steps"]} == {"pending"}  # it stopped before touching anything

    again = invoke("apply", plan_id, "-c", cluster_yaml, *db, "--yes")
    assert again.exit_code == 3 and f"unfinished run {body['run']}" in again.stderr
    assert f"apply --resume {body['run']}" in again.stderr
    status = json.loads(invoke("status", "-c", cluster_yaml, *db, "-o", "json").stdout)
    assert status["run"]["status"] == "paused" and status["next"].startswith(f"upgrader apply --resume {body['run']}")

    # A run stopped mid-drain (SIGTERM) left w-1 cordoned, its journal says by upgrader (as the driver
    # writes it before it cordons). Abandoning it names the node; the next apply takes it over.
    with store.Store.open(db[1]) as state:
        state.step_progress(body["run"], len(body["steps"]) - 1, {"cordoned:w-1": "by upgrader, to drain it"})
    _set_cordon(lab, "w-1", True)
    other = lab.dir / "other-cluster.yaml"  # beside it: its relative paths still resolve
    other.write_text(Path(cluster_yaml).read_text().replace(f"name: {lab.name}", "name: another-cluster", 1))
    foreign = invoke("apply", "--abandon", body["run"], "-c", str(other), *db, "--yes")
    assert foreign.exit_code == 3 and f"is of cluster {lab.name}, not another-cluster" in foreign.stderr
    with store.Store.open(db[1]) as state, state.lock(lab.name, "apply 0123456789ab"):
        held = invoke("apply", "--abandon", body["run"], "-c", cluster_yaml, *db, "--yes")
    assert held.exit_code == 3 and "is locked by" in held.stderr  # never under a running command
    abandoned = invoke("apply", "--abandon", body["run"], "-c", cluster_yaml, *db, "--yes", "-o", "json")
    assert abandoned.exit_code == 0, abandoned.output
    assert json.loads(abandoned.stdout)["left_cordoned"] == ["w-1"]
    dry_after = invoke("apply", plan_id, "-c", cluster_yaml, *db, "--dry-run")
    assert dry_after.exit_code == 0, why(dry_after)
    assert f"w-1 was left cordoned by run {body['run']}: this run uncordons it once upgraded" in dry_after.stderr
    _set_cordon(lab, "w-1", False)  # the operator uncordons it: the next run has nothing to take over
    assert "left cordoned" not in invoke("apply", plan_id, "-c", cluster_yaml, *db, "--dry-run").stderr

    # The cluster moves away from the plan: a stale plan is refused, naming what drifted.
    root = lab.root("w-1")
    mirror.install(lab.mirror_dir, Version.parse("1.30.14"), root, ("kubelet",))
    subprocess.run([str(root / "usr" / "bin" / "systemctl"), "restart", "kubelet"], check=True)
    wait_for(lambda: kubelets(lab)["w-1"] == "v1.30.14", timeout=10, what="w-1 at v1.30.14")
    stale = invoke("apply", plan_id, "-c", cluster_yaml, *db, "--yes")
    assert stale.exit_code == 3, stale.output
    assert "w-1 kubelet is 1.30.14, the plan expected 1.31.13" in stale.stderr


def test_a_pdb_that_blocks_a_drain_fails_the_step_and_resume_finishes_once_it_allows(
    labs: Labs, tmp_path: Path
) -> None:
    lab = labs.up("pdb", version="1.31.13", control_planes=1, workers=2)
    cluster_yaml = str(lab.dir / "cluster.yaml")
    db = ("--db", f"sqlite:///{tmp_path / 'state.db'}")
    plan = json.loads(invoke("plan", "-c", cluster_yaml, "--to", "1.32", "--save", *db, "-o", "json").stdout)
    _pdb_min_available(lab, 3)  # every web pod is needed: no eviction is allowed
    # SIGTERM while the drain waits on the budget: the step is interrupted, the node stays cordoned
    # (recorded as upgrader's), exit 5, resumable.
    env = {**os.environ, "XDG_DATA_HOME": str(tmp_path / "xdg")}
    waiting = Apply([plan["id"], "-c", cluster_yaml, *db, "--yes", "--drain-timeout", "10m"], env)
    try:
        wait_for(
            lambda: any(n.startswith("w-") for n in _cordoned(lab, strict=False)),
            timeout=240,
            what="a worker cordoned for its drain",
        )
        time.sleep(1)
        waiting.process.send_signal(signal.SIGTERM)
        _, stderr = waiting.process.communicate(timeout=60)
    finally:
        waiting.stop()
    assert waiting.process.returncode == 5, stderr
    assert "interrupted" in stderr and "cordoned by upgrader and still cordoned: w-" in stderr, stderr
    run_id = json.loads(invoke("history", "-c", cluster_yaml, *db, "-o", "json").stdout)["runs"][0]["id"]
    assert "interrupted" in _steps(tmp_path / "state.db")
    # Resumed with a short drain timeout while the budget still allows nothing: the step fails and says why.
    failed = invoke("apply", "--resume", run_id, "-c", cluster_yaml, *db, "--drain-timeout", "6s")
    assert failed.exit_code == 1, failed.output
    assert "draining w-" in failed.stderr and "disruption budget web" in failed.stderr
    assert "cordoned by upgrader and still cordoned: w-" in failed.stderr
    _pdb_min_available(lab, 2)
    resumed = invoke("apply", "--resume", run_id, "-c", cluster_yaml, *db, "-o", "json")
    assert resumed.exit_code == 0, why(resumed)
    assert set(kubelets(lab).values()) == {f"v{plan['target']}"}
    assert _cordoned(lab) == set()


class Apply:
    """``upgrader apply`` (or ``command``) as its own process, killed with SIGKILL at a chosen point."""

    def __init__(self, args: list[str], env: dict[str, str], command: str = "apply") -> None:
        import sys

        self.process = subprocess.Popen(
            [sys.executable, "-m", "upgrader", command, *args],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )

    def descendants(self) -> set[int]:
        return descendants(self.process.pid)

    def running(self, playbook: str) -> bool:
        for pid in self.descendants():
            try:
                if playbook.encode() in Path(f"/proc/{pid}/cmdline").read_bytes():
                    return True
            except OSError:
                continue
        return False

    def kill(self, *, wait_for_children: bool = True) -> str:
        """SIGKILL; then, unless told not to, wait until every process it started has ended (an orphaned
        playbook finishes on its own). Returns what it printed on stderr."""
        children = self.descendants()
        self.process.kill()
        _, stderr = self.process.communicate(timeout=60)
        for pid in children if wait_for_children else ():
            wait_for(lambda pid=pid: not Path(f"/proc/{pid}").exists(), timeout=120, what=f"pid {pid} to end")
        return str(stderr)

    def stop(self) -> None:
        """Killed if still running; either way its stderr pipe is read and closed (a pipe left open would
        surface as a ResourceWarning in whichever test the garbage collector happens to run in)."""
        if self.process.poll() is None:
            self.kill()
        else:
            self.process.communicate(timeout=60)


def _steps(db_path: Path) -> list[str]:
    import sqlite3

    with sqlite3.connect(db_path) as connection:
        return [row[0] for row in connection.execute("SELECT status FROM steps ORDER BY run_id, position")]


def test_apply_killed_with_sigkill_at_three_points_resumes_to_the_same_final_state(
    labs: Labs, tmp_path: Path, private_state_home: Path
) -> None:
    import os

    lab = labs.up("sigkill", version="1.31.13", control_planes=1, workers=2)
    cluster_yaml = str(lab.dir / "cluster.yaml")
    db_path = tmp_path / "state.db"
    db = ("--db", f"sqlite:///{db_path}")
    env = {**os.environ, "XDG_DATA_HOME": str(private_state_home.parent)}
    plan = json.loads(invoke("plan", "-c", cluster_yaml, "--to", "1.32", "--save", *db, "-o", "json").stdout)
    started: list[Apply] = []
    try:
        # 1. between steps: the first snapshot is recorded, the control-plane step has not started
        first = Apply([plan["id"], "-c", cluster_yaml, *db, "--yes"], env)
        started.append(first)
        wait_for(lambda: _steps(db_path)[:1] == ["succeeded"], timeout=180, what="the first snapshot step")
        first.kill()
        run_id = json.loads(invoke("history", "-c", cluster_yaml, *db, "-o", "json").stdout)["runs"][0]["id"]
        # 2. during the control-plane playbook (kubeadm upgrade apply on cp-1)
        second = Apply(["--resume", run_id, "-c", cluster_yaml, *db], env)
        started.append(second)
        wait_for(lambda: second.running("upgrade-control-plane.yml"), timeout=90, what="the control-plane playbook")
        second.kill()
        # 3. during a drain: a node is cordoned and its pods are being evicted
        third = Apply(["--resume", run_id, "-c", cluster_yaml, *db], env)
        started.append(third)
        wait_for(lambda: bool(_cordoned(lab, strict=False)), timeout=180, what="a node cordoned for its drain")
        third.kill()
        assert _cordoned(lab), "the killed run leaves its node cordoned"
        # 4. during a module task (get_url) of a kubelet playbook: the playbook runs in a process of its
        # own, so it goes on to its end without upgrader instead of hanging on a lost terminal.
        fourth = Apply(["--resume", run_id, "-c", cluster_yaml, *db], env)
        started.append(fourth)
        wait_for(
            lambda: _task_started(private_state_home / "ansible", fourth.process.pid, "binaries from the mirror"),
            timeout=240,
            what="a kubelet playbook's get_url task",
        )
        orphans = fourth.descendants()
        fourth.kill(wait_for_children=False)
        assert orphans, "the killed run leaves its playbook running"
        for pid in orphans:
            wait_for(lambda pid=pid: not Path(f"/proc/{pid}").exists(), timeout=180, what=f"orphan {pid} to finish")
        finished = _events(private_state_home / "ansible", fourth.process.pid)
        assert finished and finished[-1]["event"] == "playbook_on_stats", "the orphan ran its playbook to the end"
    finally:
        for process in started:
            process.stop()
    # An ansible-playbook a killed run left behind: the resume waits for it before it looks at the cluster.
    leftover = _leftover_playbook(private_state_home / "ansible", owner=fourth.process.pid, seconds=4)
    try:
        resumed = invoke("apply", "--resume", run_id, "-c", cluster_yaml, *db, "-o", "json")
    finally:
        leftover.kill()
        leftover.wait()
    assert resumed.exit_code == 0, why(resumed)
    body = json.loads(resumed.stdout)
    assert body["status"] == "succeeded" and body["cordoned_by_upgrader"] == []
    with store.Store.open(f"sqlite:///{db_path}") as state:
        events = [e for e in reversed(state.events(cluster=lab.name, limit=2000)) if e.run_id == run_id]
    last = max(i for i, e in enumerate(events) if e.kind == "run-started")
    waited = [i for i, e in enumerate(events) if e.kind == "waiting"]
    assert waited and last - 1 == waited[-1], [e.kind for e in events[-20:]]  # right before the run went on
    assert f"upgrade-node.yml (pid {leftover.pid}), left running by upgrader pid {fourth.process.pid}" in (
        events[waited[-1]].message
    )
    assert set(kubelets(lab).values()) == {f"v{plan['target']}"}
    assert _cordoned(lab) == set()
    with store.Store.open(f"sqlite:///{db_path}") as state:
        run = state.run(run_id)
    assert all(s.status is records.StepStatus.SUCCEEDED for s in run.steps)
    assert max(s.attempts for s in run.steps) >= 2  # the steps that were killed ran again


def _events(ansible_dir: Path, owner: int) -> list[dict[str, object]]:
    """The events a run of upgrader process ``owner`` received so far (from its private directory)."""
    out: list[dict[str, object]] = []
    for path in ansible_dir.glob(f"run-{owner}-*/events.jsonl"):
        for line in path.read_text(errors="replace").splitlines():
            with contextlib.suppress(ValueError):
                out.append(json.loads(line))
    return out


def _task_started(ansible_dir: Path, owner: int, task: str) -> bool:
    return any(
        e.get("event") == "runner_on_start" and task in str((e.get("event_data") or {}).get("task", ""))  # type: ignore[union-attr]
        for e in _events(ansible_dir, owner)
    )


def _leftover_playbook(ansible_dir: Path, *, owner: int, seconds: float) -> subprocess.Popen[bytes]:
    """A process marked as ``upgrader.executor.runner`` marks each ansible-playbook it starts, under the
    private directory of ``owner`` (a killed upgrader): what a SIGKILL leaves running."""
    import sys

    from upgrader.executor import runner

    private = ansible_dir / f"run-{owner}-leftover"
    private.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, runner.MARK: f"{private}:upgrade-node.yml"}
    return subprocess.Popen([sys.executable, "-c", f"import time; time.sleep({seconds})"], env=env)


class Watcher:
    """Watches the cluster from outside while a run goes on: every cordon of every node, the fewest ready
    pods of the budget-guarded ``web`` ReplicaSet and ``db`` StatefulSet ever seen, and every uid ``db``'s
    pods had (a StatefulSet's pod comes back under its name with a new one)."""

    def __init__(self, lab: topology.Lab) -> None:
        import threading

        self.lab = lab
        self.cordons: dict[str, int] = {}
        self.fewest_ready_web: int | None = None
        self.fewest_ready_db: int | None = None
        self.db_uids: set[str] = set()
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self) -> None:
        from kubernetes import client as k8s

        api = kube.Cluster.connect(self.lab.kubeconfig, timeout=3.0)
        was: set[str] = set()
        try:
            core = k8s.CoreV1Api(api.api)
            while not self._stop.wait(0.3):
                try:
                    now = {n.name for n in api.nodes() if n.unschedulable}
                    pods = core.list_namespaced_pod("demo", _request_timeout=3).items
                except Exception:
                    continue
                for node in now - was:
                    self.cordons[node] = self.cordons.get(node, 0) + 1
                was = now
                ready = {"web": 0, "db": 0}
                for p in pods:
                    app = (p.metadata.labels or {}).get("app", "")
                    if app == "db":
                        self.db_uids.add(p.metadata.uid)
                    if app in ready and any(
                        c.type == "Ready" and c.status == "True" for c in (p.status.conditions or [])
                    ):
                        ready[app] += 1
                fewest = (self.fewest_ready_web, self.fewest_ready_db)
                self.fewest_ready_web = ready["web"] if fewest[0] is None else min(fewest[0], ready["web"])
                self.fewest_ready_db = ready["db"] if fewest[1] is None else min(fewest[1], ready["db"])
                self.samples += 1
        finally:
            api.close()

    def __enter__(self) -> Watcher:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)


@pytest.mark.long
def test_apply_1_30_to_1_33_drains_each_node_once_and_never_breaks_the_budget(labs: Labs, tmp_path: Path) -> None:
    """Workers two at a time (issue 19): the batch's drains evict concurrently, through three apiservers,
    against budgets the lab now enforces atomically; the StatefulSet's pods come back under their names."""
    lab = labs.up("big", version="1.30.6", control_planes=3, workers=3)
    cluster_yaml = str(lab.dir / "cluster.yaml")
    db = ("--db", f"sqlite:///{tmp_path / 'state.db'}")
    planned = invoke("plan", "-c", cluster_yaml, "--to", "1.33", "--max-unavailable", "2", "--save", *db, "-o", "json")
    plan = json.loads(planned.stdout)
    hops = [s for s in plan["steps"] if s["kind"] == "control-plane"]
    assert [s["version"].rsplit(".", 1)[0] for s in hops] == ["1.31", "1.32", "1.33"]
    assert any(s.get("emulated") for s in hops)  # two-step where the binaries allow it
    with Watcher(lab) as watcher:
        applied = invoke("apply", plan["id"], "-c", cluster_yaml, *db, "--yes", "-o", "json")
    assert applied.exit_code == 0, why(applied)
    assert all(s["status"] == "succeeded" for s in json.loads(applied.stdout)["steps"])
    target = f"v{plan['target']}"
    assert set(kubelets(lab).values()) == {target}
    api = kube.Cluster.connect(lab.kubeconfig)
    try:
        versions = {a.node: api.version(a.endpoint) for a in api.apiservers()}
    finally:
        api.close()
    assert {v.git_version for v in versions.values()} == {target}
    assert {v.emulation for v in versions.values()} == {plan["target"].rsplit(".", 1)[0]}
    # From the cluster's side, not the plan's: each node was cordoned (drained) exactly once.
    assert watcher.samples > 20
    assert watcher.cordons == {n: 1 for n in ("cp-1", "cp-2", "cp-3", "w-1", "w-2", "w-3")}
    assert watcher.fewest_ready_web is not None and watcher.fewest_ready_web >= 2  # the PDB's minAvailable
    assert watcher.fewest_ready_db is not None and watcher.fewest_ready_db >= 1  # maxUnavailable 1 of 2
    assert len(watcher.db_uids) > 2  # db-N evicted and recreated under its name: drains waited by uid


def test_a_drain_waits_for_this_pod_not_its_name_and_only_a_controller_owner_counts(
    shared_lab: topology.Lab,
) -> None:
    """Issue 19: a StatefulSet recreates db-0 under the same name within seconds, so waiting for the name to
    go made every drain time out (kubectl's waitForDelete counts a new uid as gone); and a pod whose only
    owner is not its controller has nothing to bring it back (kubectl's GetControllerOf)."""
    from kubernetes import client as k8s

    from upgrader.kube import writes

    api = kube.Cluster.connect(shared_lab.kubeconfig)
    core = k8s.CoreV1Api(api.api)

    def pod(name: str, controller: bool) -> k8s.V1Pod:
        owner = k8s.V1OwnerReference(
            api_version="apps/v1", kind="StatefulSet", name="cache", uid="0", controller=controller
        )
        return k8s.V1Pod(
            metadata=k8s.V1ObjectMeta(name=name, namespace="demo", owner_references=[owner]),
            spec=k8s.V1PodSpec(node_name="w-2", containers=[k8s.V1Container(name="cache", image="cache:1")]),
        )

    try:
        core.create_namespaced_pod("demo", pod("cache-0", controller=True))
        core.create_namespaced_pod("demo", pod("adopted-0", controller=False))
        writer = writes.Writer(api)
        found = {p.name: p for p in writer.pods_on("w-2")}
        first = found["cache-0"]
        assert first.owner_kind == "StatefulSet" and first.uid
        assert found["adopted-0"].owner_kind is None  # owned, but not by a controller: a bare pod
        assert writer.pod_exists(first)
        core.delete_namespaced_pod("cache-0", "demo")
        core.create_namespaced_pod("demo", pod("cache-0", controller=True))  # as the StatefulSet controller does
        again = next(p for p in writer.pods_on("w-2") if p.name == "cache-0")
        assert again.uid != first.uid
        assert not writer.pod_exists(first) and writer.pod_exists(again)
        # kubectl's daemonSetFilter asks whether the DaemonSet still exists: the lab's kube-proxy does
        assert writer.daemonset_exists("kube-system", "kube-proxy")
        assert not writer.daemonset_exists("kube-system", "gone")
    finally:
        for name in ("cache-0", "adopted-0"):
            with contextlib.suppress(k8s.ApiException):
                core.delete_namespaced_pod(name, "demo")
        api.close()
