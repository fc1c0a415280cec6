"""An external etcd host's ``etcd.service``, as Kubespray installs it (``etcd_deployment_type: host``):
the unit runs ``{{ bin_dir }}/etcd`` with ``EnvironmentFile=/etc/etcd.env`` (kubespray
roles/etcd/templates/etcd-host.service.j2 and etcd.env.j2), ``Restart=always``.

The supervisor runs one per etcd node. What systemd does, this does below the node's root: the binary
the unit's effective ``ExecStart=`` names, the node's own copy (so a new binary installed there runs
at the next restart, as on a real host), with the variables of its environment file. As the container
runtime does for a static pod, an absolute path in a ``*_FILE`` or ``*_DIR`` variable is mapped below
the node's root and 127.0.0.1 to the node's address (every node shares one filesystem and one
loopback here). ``systemctl start|stop|restart|is-active etcd`` (the node's stand-in) reaches it
through request and acknowledgement files; a member that exits is started again after a pause, as
``Restart=always`` does (RestartSec=10s on a real host; 1 s here).
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import threading
import time
from typing import Any

from upgrader.lab import processes, systemctl, topology
from upgrader.support import units

RESTART_SECONDS = 1.0
ENV_FILE = "/etc/etcd.env"


class EtcdService:
    def __init__(self, lab: topology.Lab, node: topology.LabNode, *, stop: threading.Event) -> None:
        self.lab = lab
        self.node = node
        self.root = lab.root(node)
        self.stop_event = stop
        self.log = lab.run_dir / "logs" / f"{node.name}-etcd.log"
        self.popen: subprocess.Popen[bytes] | None = None
        self.wanted = True  # enabled: started with the host
        self.restarts = 0
        self.not_before = 0.0
        self.error: str | None = None
        self._state: str | None = None  # the ActiveState last written
        self.lock = threading.Lock()

    # -- what systemd would run -----------------------------------------------------------------

    def command(self) -> tuple[list[str], dict[str, str]]:
        binary = units.exec_start(systemctl.cat(self.root, "etcd"))
        if binary is None:
            raise FileNotFoundError("etcd.service has no ExecStart")
        env = units.environment_file((self.root / ENV_FILE.lstrip("/")).read_text())
        mapped: dict[str, str] = {}
        for key, value in env.items():
            path = key.endswith(("_FILE", "_DIR")) and value.startswith("/")
            mapped[key] = str(self.root / value.lstrip("/")) if path else value.replace("127.0.0.1", self.node.ip)
        return [str(self.root / binary.lstrip("/"))], mapped

    def _start(self) -> None:
        try:
            argv, env = self.command()
        except (OSError, ValueError) as exc:
            self.error = f"cannot start etcd.service: {exc}"
            self.not_before = time.monotonic() + RESTART_SECONDS
            return
        self.error = None
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with self.log.open("ab") as out:
            self.popen = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), **env},
                start_new_session=True,
                cwd=self.root,
            )

    def _stop(self) -> None:
        if self.popen is not None:
            processes.stop_popen(self.popen)
            self.popen = None

    def running(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    # -- the loop -------------------------------------------------------------------------------

    def run(self) -> None:
        while not self.stop_event.wait(0.2):
            with self.lock:
                self._requests()
                if not self.wanted:
                    self._stop()
                elif not self.running() and time.monotonic() >= self.not_before:
                    if self.popen is not None:  # it exited: Restart=always, after a pause
                        self.popen = None
                        self.restarts += 1
                        self.not_before = time.monotonic() + RESTART_SECONDS
                        continue
                    self._start()
                self._write_state()

    def _requests(self) -> None:
        request = systemctl.request_path(self.root, "etcd")
        try:
            token, verb = request.read_text().split()
        except (OSError, ValueError):
            return
        with contextlib.suppress(OSError):
            request.unlink()
        if verb in ("stop", "restart"):
            self._stop()
        self.wanted = verb in ("start", "restart")
        if self.wanted and not self.running():
            self.not_before = 0.0
            self._start()
        self._write_state()
        systemctl.ack_path(self.root, "etcd").write_text(token)

    def _write_state(self) -> None:
        """The ActiveState for ``systemctl is-active``, written when it changes (not read back each loop)."""
        active = "active" if self.wanted and self.running() else ("activating" if self.wanted else "inactive")
        if active != self._state:
            state = systemctl.state_path(self.root, "etcd")
            state.parent.mkdir(parents=True, exist_ok=True)
            state.write_text(active)
            self._state = active

    def stop_now(self) -> None:
        with self.lock:
            self._stop()

    def children(self) -> list[int]:
        with self.lock:
            return [self.popen.pid] if self.running() and self.popen is not None else []

    def status(self) -> dict[str, Any]:
        with self.lock:
            return {
                "etcd.service": {
                    "state": "active" if self.running() else ("failed" if self.error else "inactive"),
                    "pid": self.popen.pid if self.running() and self.popen is not None else None,
                    "restarts": self.restarts,
                    "error": self.error,
                }
            }
