"""Starting, stopping and inspecting a lab: what ``upgrader lab up | down | status | destroy | fault`` do.

``up`` starts the supervisor in the background and returns once the cluster is healthy (every
apiserver ready, every node Ready), or stops everything it started and says what did not come up.
``down`` stops the supervisor by pid and waits for it, then stops by pid anything it left behind.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from upgrader import errors
from upgrader.lab import faults, http, processes, topology

SUPERVISOR_PID = "supervisor.pid"


@dataclass(frozen=True)
class Health:
    apiservers: dict[str, bool] = field(default_factory=dict)
    nodes: dict[str, dict[str, str]] = field(default_factory=dict)  # name -> {"ready", "kubelet"}
    control_plane_pods: dict[str, str] = field(default_factory=dict)  # mirror pod -> phase
    expected_pods: int = 0
    workloads_seeded: bool = False

    @property
    def healthy(self) -> bool:
        return (
            bool(self.apiservers)
            and all(self.apiservers.values())
            and bool(self.nodes)
            and all(n["ready"] == "True" for n in self.nodes.values())
            and len(self.control_plane_pods) >= self.expected_pods
            and all(phase == "Running" for phase in self.control_plane_pods.values())
            and self.workloads_seeded
        )


def _pid_file(lab: topology.Lab) -> Path:
    return lab.run_dir / SUPERVISOR_PID


def supervisor(lab: topology.Lab) -> processes.ProcessId | None:
    try:
        pid, started = (int(x) for x in _pid_file(lab).read_text().split())
    except (OSError, ValueError):
        return None
    process = processes.ProcessId(pid, started)
    return process if process.alive() else None


def _get(api: http.Client, path: str) -> http.Response | None:
    """A GET that treats a refused, reset or timed-out connection as no answer (a lab may be half up)."""
    try:
        return api.get(path)
    except OSError:
        return None


def health(lab: topology.Lab, timeout: float = 2.0) -> Health:
    """Healthy: every apiserver ready, every node Ready, every static pod's mirror pod Running, workloads seeded."""
    static_pods = 3 if lab.external_etcd else 4  # external etcd runs as a service, not a static pod
    result = Health(
        expected_pods=static_pods * len(lab.control_plane), workloads_seeded=(lab.run_dir / "seeded").exists()
    )
    api = http.Client(lab.kubeconfig, timeout=timeout)
    for node in lab.control_plane:
        ready = _get(api.at(f"https://{node.ip}:{topology.APISERVER_PORT}"), "/readyz")
        result.apiservers[node.name] = ready is not None and ready.status == 200
    reply = _get(api, "/api/v1/nodes")
    if reply is not None and reply.status == 200:
        for item in reply.json()["items"]:
            conditions = {c["type"]: c["status"] for c in item.get("status", {}).get("conditions", [])}
            result.nodes[item["metadata"]["name"]] = {
                "ready": conditions.get("Ready", "Unknown"),
                "kubelet": item.get("status", {}).get("nodeInfo", {}).get("kubeletVersion", ""),
                "unschedulable": str(bool(item.get("spec", {}).get("unschedulable"))).lower(),
            }
    pods = _get(api, "/api/v1/namespaces/kube-system/pods?labelSelector=tier%3Dcontrol-plane")
    if pods is not None and pods.status == 200:
        for item in pods.json()["items"]:
            result.control_plane_pods[item["metadata"]["name"]] = item.get("status", {}).get("phase", "")
    missing = {n.name for n in lab.kube_nodes} - set(result.nodes)
    for name in missing:
        result.nodes[name] = {"ready": "Missing", "kubelet": "", "unschedulable": "false"}
    return result


def up(directory: Path, *, timeout: float = 60.0) -> tuple[topology.Lab, float]:
    """Starts the lab and waits until it is healthy; returns the lab and the seconds it took."""
    lab = topology.load(directory)
    running = supervisor(lab)
    if running is not None:
        raise errors.Refused(f"lab {lab.name} is already up (supervisor pid {running.pid})")
    processes.Registry(lab.run_dir / "pids.json").stop_all()  # leftovers of a supervisor that was killed
    taken = topology.ports_taken(lab.block, [(n.name, n.role, n.ip) for n in lab.nodes], ssh=lab.ssh)
    if taken:
        raise errors.Refused(
            f"lab {lab.name} cannot start: already in use: {', '.join(taken)} "
            "(is another lab or an etcd running on these addresses?)"
        )
    start = time.monotonic()
    launched = subprocess.run(
        [lab.python, "-m", "upgrader.lab.supervisor", "--daemonize", str(lab.dir)],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    try:
        identity = processes.ProcessId.of(int(launched.stdout.strip()))
    except ValueError:
        identity = None
    if identity is None:
        raise errors.OperationFailed(
            f"the lab supervisor did not start: {launched.stderr.strip()[-300:] or 'see run/supervisor.log'}"
        )
    _pid_file(lab).write_text(f"{identity.pid} {identity.started}\n")
    deadline = start + timeout
    last = Health()
    while time.monotonic() < deadline:
        if not identity.alive():
            break
        last = health(lab, timeout=1.0)
        if last.healthy:
            return lab, time.monotonic() - start
        time.sleep(0.2)
    down(directory)
    waiting = [f"apiserver on {n}" for n, ok in last.apiservers.items() if not ok]
    waiting += [f"node {n} ({s['ready']})" for n, s in last.nodes.items() if s["ready"] != "True"]
    waiting += [f"pod {p} ({phase})" for p, phase in last.control_plane_pods.items() if phase != "Running"]
    if len(last.control_plane_pods) < last.expected_pods:
        waiting.append(f"{last.expected_pods - len(last.control_plane_pods)} control-plane mirror pods")
    raise errors.OperationFailed(
        f"lab {lab.name} did not become healthy within {timeout:.0f}s (not ready: {', '.join(waiting) or 'API'}); "
        f"it was stopped again; logs in {lab.run_dir}"
    )


def down(directory: Path) -> int:
    """Stops the supervisor and everything the lab started; returns how many leftovers had to be killed."""
    lab = topology.load(directory)
    process = supervisor(lab)
    if process is not None:
        process.stop(timeout=60.0)
    _pid_file(lab).unlink(missing_ok=True)
    return processes.Registry(lab.run_dir / "pids.json").stop_all()


def status(directory: Path) -> dict[str, Any]:
    lab = topology.load(directory)
    process = supervisor(lab)
    out: dict[str, Any] = {
        "name": lab.name,
        "dir": str(lab.dir),
        "up": process is not None,
        "supervisor": process.pid if process else None,
        "faults": {n: sorted(f.value for f in fs) for n, fs in faults.read(lab.run_dir).items()},
    }
    if process is None:
        return out
    try:
        out["components"] = json.loads((lab.run_dir / "state.json").read_text()).get("nodes", {})
    except (OSError, json.JSONDecodeError):
        out["components"] = {}
    checked = health(lab)
    out.update(healthy=checked.healthy, apiservers=checked.apiservers, nodes=checked.nodes)
    return out


def destroy(directory: Path) -> None:
    lab = topology.load(directory)
    down(directory)
    shutil.rmtree(lab.dir)


def fault(directory: Path, *, node: str, kind: faults.Fault | None, clear: bool) -> dict[str, list[str]]:
    lab = topology.load(directory)
    lab.node(node)
    current = faults.read(lab.run_dir)
    active = current.setdefault(node, set())
    if clear:
        if kind is None:
            active.clear()
        else:
            active.discard(kind)
    elif kind is not None:
        active.add(kind)
    faults.write(lab.run_dir, current)
    return {n: sorted(f.value for f in fs) for n, fs in current.items() if fs}
