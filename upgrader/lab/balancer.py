"""A TCP load balancer in front of the apiservers: the lab's controlPlaneEndpoint.

kubeadm HA clusters reach their apiservers through a load balancer; so does the lab. Connections go
round-robin to the apiservers whose ``/readyz`` answered 200 at the last health check (every
second), TLS passed through untouched, as HAProxy or kube-vip would do.
"""

from __future__ import annotations

import itertools
import logging
import select
import socket
import ssl
import threading
import urllib.request
from pathlib import Path

log = logging.getLogger(__name__)


class Balancer:
    def __init__(
        self, listen: tuple[str, int], backends: list[tuple[str, int]], ca_file: Path, stop: threading.Event
    ) -> None:
        self.listen = listen
        self.backends = backends
        self.healthy: list[tuple[str, int]] = []
        self.stop_event = stop
        self._cycle = itertools.count()
        self._context = ssl.create_default_context(cafile=str(ca_file))
        self.server = socket.create_server(listen, reuse_port=False)
        self.server.settimeout(0.5)

    def check(self) -> None:
        healthy = []
        for host, port in self.backends:
            try:
                with urllib.request.urlopen(
                    f"https://{host}:{port}/readyz",
                    context=self._context,
                    timeout=1.0,
                ) as reply:
                    if reply.status == 200:
                        healthy.append((host, port))
            except OSError:
                continue
        self.healthy = healthy

    def run_checks(self) -> None:
        while not self.stop_event.is_set():
            self.check()
            self.stop_event.wait(1.0)

    def _pick(self) -> tuple[str, int] | None:
        healthy = self.healthy
        return healthy[next(self._cycle) % len(healthy)] if healthy else None

    def _pipe(self, client: socket.socket) -> None:
        backend = self._pick()
        if backend is None:
            client.close()
            return
        try:
            upstream = socket.create_connection(backend, timeout=3.0)
        except OSError:
            client.close()
            return
        sockets = [client, upstream]
        try:
            while not self.stop_event.is_set():
                readable, _, broken = select.select(sockets, [], sockets, 1.0)
                if broken:
                    return
                for sock in readable:
                    data = sock.recv(65536)
                    if not data:
                        return
                    (upstream if sock is client else client).sendall(data)
        except OSError:
            return
        finally:
            client.close()
            upstream.close()

    def serve(self) -> None:
        checks = threading.Thread(target=self.run_checks, name="balancer-checks", daemon=True)
        checks.start()
        with self.server:
            while not self.stop_event.is_set():
                try:
                    client, _ = self.server.accept()
                except TimeoutError:
                    continue
                except OSError:
                    break
                client.settimeout(None)
                threading.Thread(target=self._pipe, args=(client,), daemon=True).start()
        checks.join(timeout=5)
