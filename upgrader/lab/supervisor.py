"""The lab supervisor: one background process that runs a whole lab until it is told to stop.

It runs a kubelet per node (threads), the TCP balancer in front of the apiservers, the HTTP binary
mirror and the lab's controllers. Every process its kubelets start is written to ``run/pids.json``
with its start time; ``run/state.json`` says what runs where. On SIGTERM it stops every process it
started and waits for them before it exits.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from upgrader import errors
from upgrader.etcd import kv
from upgrader.lab import balancer, controller, etcdservice, kubelet, processes, ssh, topology

log = logging.getLogger("upgrader.lab.supervisor")


class _MirrorHandler(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        return


def _mirror_server(lab: topology.Lab) -> ThreadingHTTPServer:
    handler = functools.partial(_MirrorHandler, directory=str(lab.mirror_dir))
    server = ThreadingHTTPServer((lab.endpoint_ip, topology.MIRROR_PORT), handler)
    server.daemon_threads = True
    return server


def _write_json(path: Path, data: Any) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=2))
    tmp.replace(path)


def _stop_etcd_leader_first(lab: topology.Lab, members: Sequence[kubelet.Kubelet | etcdservice.EtcdService]) -> None:
    """Stops etcd members one by one, the current leader first, so each hands leadership to a peer
    that is still there (stopping them all at once makes each wait seconds for a transfer that cannot
    happen)."""
    remaining = list(members)
    while remaining:
        leader = None
        store = kv.KV(
            kv.Target(
                endpoints=tuple(f"https://{k.node.ip}:{topology.ETCD_CLIENT_PORT}" for k in remaining),
                ca=lab.pki_dir / "etcd" / "ca.crt",
                cert=lab.pki_dir / "apiserver-etcd-client.crt",
                key=lab.pki_dir / "apiserver-etcd-client.key",
                timeout=1.0,
            )
        )
        try:
            leader = store.leader()
        except errors.UpgraderError:
            leader = None
        finally:
            store.close()
        first = next((k for k in remaining if lab.etcd_member(k.node) == leader), remaining[0])
        if isinstance(first, etcdservice.EtcdService):
            first.stop_now()
        else:
            first.stop_component("etcd")
        remaining.remove(first)


def run(directory: Path) -> int:
    lab = topology.load(directory)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    registry = processes.Registry(lab.run_dir / "pids.json")
    kubelets = [kubelet.Kubelet(lab, node, stop=stop) for node in lab.kube_nodes]
    services = [etcdservice.EtcdService(lab, node, stop=stop) for node in lab.etcd_nodes]
    threads = [threading.Thread(target=k.run, name=f"kubelet-{k.node.name}") for k in kubelets]
    threads += [threading.Thread(target=e.run, name=f"etcd-{e.node.name}") for e in services]
    mirror = _mirror_server(lab)
    lb = balancer.Balancer(
        (lab.endpoint_ip, topology.APISERVER_PORT),
        [(n.ip, topology.APISERVER_PORT) for n in lab.control_plane],
        lab.pki_dir / "ca.crt",
        stop,
    )
    controllers = controller.Controller(lab, stop)
    servers: list[subprocess.Popen[bytes]] = []
    if lab.ssh:  # a real sshd per node, on the node's address, stopped by pid below
        ssh.publish_keys(lab)
        servers = [ssh.start(lab, node, lab.run_dir / "logs" / f"sshd-{node.name}.log") for node in lab.nodes]
    helpers = [
        threading.Thread(target=mirror.serve_forever, kwargs={"poll_interval": 0.2}, daemon=True),
        threading.Thread(target=lb.serve, name="balancer"),
        threading.Thread(target=controllers.run, name="controller", daemon=True),
    ]
    for thread in (*threads, *helpers):
        thread.start()
    log.info("lab %s supervisor running (pid %d)", lab.name, os.getpid())
    while not stop.wait(0.3):
        runners: list[kubelet.Kubelet | etcdservice.EtcdService] = [*kubelets, *services]
        children = [processes.ProcessId.of(pid) for k in runners for pid in k.children()]
        children += [processes.ProcessId.of(s.pid) for s in servers if s.poll() is None]
        registry.write([c for c in children if c is not None])
        _write_json(
            lab.run_dir / "state.json",
            {
                "supervisor": os.getpid(),
                "updated": time.time(),
                "nodes": {k.node.name: k.status() for k in runners},
                "balancer": [f"{h}:{p}" for h, p in lb.healthy],
            },
        )
    log.info("stopping")
    for thread in threads:
        thread.join(timeout=60)
    _stop_etcd_leader_first(lab, services or [k for k in kubelets if k.node.control_plane])
    log.info("control plane stopped")
    mirror.shutdown()
    mirror.server_close()
    for server in servers:
        ssh.stop(server)
    if lab.ssh:
        ssh.withdraw_keys(lab)
    registry.stop_all()
    (lab.run_dir / "state.json").unlink(missing_ok=True)
    for thread in helpers:
        thread.join(timeout=10)
    log.info("stopped")
    return 0


def daemonize(directory: Path) -> int:
    """Forks the supervisor off as a daemon (new session, stdio to run/supervisor.log) and prints its pid."""
    lab = topology.load(directory)
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid > 0:  # the launcher: report the daemon's pid once it is on its own
        os.close(write_end)
        with os.fdopen(read_end) as reader:
            print(reader.read().strip())  # noqa: T201 - the launcher's only output, read by `lab up`
        os.waitpid(pid, 0)
        return 0
    os.close(read_end)
    os.setsid()
    if os.fork() > 0:  # the session leader exits; the grandchild can never reacquire a terminal
        os._exit(0)
    log = os.open(lab.run_dir / "supervisor.log", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.dup2(log, 1)
    os.dup2(log, 2)
    os.close(null)
    os.close(log)
    with os.fdopen(write_end, "w") as writer:
        writer.write(str(os.getpid()))
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s", force=True)
    try:
        code = run(directory)
    finally:
        logging.shutdown()
    os._exit(code)


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    args = sys.argv[1:]
    if len(args) == 2 and args[0] == "--daemonize":
        return daemonize(Path(args[1]))
    if len(args) != 1:
        print("usage: python -m upgrader.lab.supervisor [--daemonize] LAB_DIR", file=sys.stderr)  # noqa: T201
        return 2
    return run(Path(args[0]))


if __name__ == "__main__":
    sys.exit(main())
